"""What the apps' admins share: read-only service-written rows, badges, metric columns, action pages and
the link to an object's audit trail."""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

GREY = "#6b7280"


class ServiceWrittenAdmin:
    """For rows that only the services write (an audit trail, a log, a record a workflow moves on):
    the admin lists and shows them but never adds, edits or deletes one. Mix in before ModelAdmin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def badge(text, color=GREY):
    """A small coloured label (a status, a stage, a verdict)."""
    return format_html(
        '<span style="color:#fff;background:{};padding:1px 7px;border-radius:8px;font-size:11px;white-space:nowrap">'
        "{}</span>",
        color,
        text,
    )


def metric_column(key, label=None, *, source="latest_metrics"):
    """A changelist column showing one metric of an object's metrics dict to four places."""

    @admin.display(description=label or key)
    def column(self, obj):
        value = getattr(obj, source).get(key)
        return "–" if value is None else f"{value:.4f}"

    return column


def admin_page(model_admin, request, title, template, **context):
    """A page of one of the admin's own views (a form, a comparison), with the admin's chrome."""
    return TemplateResponse(
        request,
        template,
        {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, "title": title, **context},
    )


def audit_trail_url(obj):
    """The audit log filtered to one object."""
    return (
        reverse("admin:governance_auditentry_changelist")
        + "?"
        + urlencode({"object_type": f"{obj._meta.app_label}.{obj._meta.model_name}", "object_id": obj.pk})
    )


def audit_trail_link(obj, label):
    return format_html('<a href="{}">audit trail of this {}</a>', audit_trail_url(obj), label)


def short_time(moment):
    """A timestamp in a list's column: "Nov 23 20:36:05" (local time), not "Nov. 23, 2026, 8:36:05 p.m."."""
    from django.utils import timezone

    return "–" if moment is None else timezone.localtime(moment).strftime("%b %d %H:%M:%S")
