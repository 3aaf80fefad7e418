"""The site's own pages: the front door at / and the icon browsers ask for by themselves."""

from django.shortcuts import redirect, render
from django.templatetags.static import static


def home(request):
    """Staff go straight to the admin's overview; anyone else sees where things are and signs in from here."""
    if request.user.is_authenticated and request.user.is_staff:
        return redirect("admin:index")
    return render(request, "home.html")


def favicon(request):
    """/favicon.ico, which a browser requests on its own for a page that names no icon (an error page, JSON)."""
    return redirect(static("mlops/favicon.svg"), permanent=True)
