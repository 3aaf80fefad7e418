"""The admin as the product's front page: its name, its apps in the order of a model's path, and a home page
that says what is in production and how it is doing, what waits for me, what ran and what changed."""

from datetime import timedelta

from django.contrib import admin
from django.utils import timezone

from experiments import selectors as experiment_selectors
from governance import selectors as governance_selectors
from registry import selectors as registry_selectors
from serving import selectors as serving_selectors

# A model's path through the product, then the plumbing (users, tokens, Celery's tables).
APP_ORDER = ("experiments", "registry", "serving", "monitoring", "governance")


class MLOpsAdminSite(admin.AdminSite):
    site_header = "MLOps Site"
    site_title = "MLOps Site"
    index_title = "Overview"
    index_template = "admin/overview.html"

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
