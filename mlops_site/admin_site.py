"""The admin as the product's front page: its name, its apps in the order of a model's path, and a home page
that says what is in production and how it is doing, what waits for me, what ran and what changed; its
sign-in limited per client as the API's authentication is."""

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.exceptions import Throttled

from core.auth import auth_failure_count, auth_failures_check
from experiments import selectors as experiment_selectors
from governance import selectors as governance_selectors
from registry import selectors as registry_selectors
from serving import selectors as serving_selectors

# A model's path through the product, then the plumbing (users, tokens, Celery's tables).
APP_ORDER = ("experiments", "registry", "serving", "monitoring", "governance")


class LimitedAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's sign-in with the API's failure limit (AUTH_FAILURE_LIMIT a client in AUTH_FAILURE_WINDOW
    seconds, counted in the same place): each wrong password costs the hasher's deliberate fraction of a
    second, so past the limit the client is refused before any password is checked."""

    throttled = None

    def clean(self):
        try:
            auth_failures_check(self.request)
        except Throttled as exc:
            self.throttled = exc
            raise ValidationError(
                "Too many failed sign-ins from this address. Try again in %(wait)s seconds.",
                code="throttled",
                params={"wait": exc.wait},
            ) from None
        try:
            return super().clean()
        except ValidationError as error:
            if error.code == "invalid_login":  # a wrong password, or a user who may not use the admin
                auth_failure_count(self.request)
            raise


class MLOpsAdminSite(admin.AdminSite):
    site_header = "MLOps Site"
    site_title = "MLOps Site"
    index_title = "Overview"
    index_template = "admin/overview.html"
    login_form = LimitedAdminAuthenticationForm

    def login(self, request, extra_context=None):
        response = super().login(request, extra_context)
        form = (getattr(response, "context_data", None) or {}).get("form")
        throttled = getattr(form, "throttled", None)
        if throttled is not None:  # the sign-in page with its error, as a 429 with Retry-After
            response.status_code = 429
            response["Retry-After"] = str(throttled.wait)
        return response

    def get_app_list(self, request, app_label=None):
        rank = {label: position for position, label in enumerate(APP_ORDER)}
        apps = super().get_app_list(request, app_label)
        return sorted(apps, key=lambda app: (rank.get(app["app_label"], len(rank)), app["name"]))

    def index(self, request, extra_context=None):
        user = request.user
        since = timezone.now() - timedelta(hours=24)
        overview = {
            "production": serving_selectors.production_overview(since=since)
            if user.has_perm("serving.view_deployment")
            else None,
            "awaiting": registry_selectors.promotion_requests_awaiting(user=user),
            "recent_runs": list(experiment_selectors.run_list(parents_only=True)[:8])
            if user.has_perm("experiments.view_run")
            else None,
            "recent_audit": list(governance_selectors.audit_entry_list()[:10])
            if user.has_perm("governance.view_auditentry")
            else None,
        }
        return super().index(request, {**overview, **(extra_context or {})})
