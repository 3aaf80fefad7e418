"""The site's own pages: the front door at /."""

from django.shortcuts import redirect, render


def home(request):
    """Staff go straight to the admin's overview; anyone else sees where things are and signs in from here."""
    if request.user.is_authenticated and request.user.is_staff:
        return redirect("admin:index")
    return render(request, "home.html")
