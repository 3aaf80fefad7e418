"""What the CRM tests share: the demo model trained small, customers, users holding the CRM permissions,
and the metric read back."""

from django.contrib.auth.models import Permission
from prometheus_client import REGISTRY

from experiments import services as experiment_services
from registry import services as registry_services
from serving.crm.models import Customer

# The features of customer_churn (and of the demo model `churn`).
ROW = {
    "tenure_months": 5,
    "monthly_charges": 70.5,
    "total_charges": 352.5,
    "support_calls": 3,
    "num_products": 1,
    "age": 41,
    "paperless_billing": 1,
    "contract_type": "month_to_month",
    "internet_service": "fiber",
    "payment_method": "electronic_check",
}
LOYAL_ROW = {**ROW, "tenure_months": 70, "support_calls": 0, "contract_type": "two_year", "num_products": 5,
             "payment_method": "credit_card", "paperless_billing": 0, "total_charges": 4900.0}  # fmt: skip
CRM_PERMS = ("update_segment", "refresh_segments", "change_crmsettings", "view_crmsettings", "view_customer",
             "view_crmrefresh", "view_segmentchange", "view_predictionlog")  # fmt: skip


def churn_version_register(*, by, n_estimators=10, seed=None):
    """A small random forest on customer_churn, registered as the next version of `churn`."""
    run = experiment_services.run_launch(
        experiment="crm-tests",
        dataset="customer_churn",
        n_samples=600,
        seed=seed,
        algorithm="random_forest",
        params={"n_estimators": n_estimators, "max_depth": 5},
        inline=True,
        by=by,
    )
    return registry_services.model_version_register(run_id=run.pk, model_name="churn", by=by)


def churn_promote(version, *, scientist, approver):
    request = registry_services.promotion_request_create(
        version=version, to_stage="production", reason="crm tests", by=scientist
    )
    registry_services.promotion_request_approve(request_id=request.pk, by=approver)
    version.refresh_from_db()
    return version


def customers_make(n, *, prefix="CUST_", start=1, row=ROW):
    """n customers with valid features (tenure and charges varied so predictions differ)."""
    customers = [
        Customer(
            customer_id=f"{prefix}{i:05d}",
            features={**row, "tenure_months": (i * 7) % 72, "monthly_charges": 20.0 + (i * 13) % 90},
        )
        for i in range(start, start + n)
    ]
    return Customer.objects.bulk_create(customers)


def crm_user(django_user_model, username, *perms):
    user = django_user_model.objects.create_user(username, password=f"pw-{username}-1", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="serving", codename__in=perms))
    return django_user_model.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


def updates_counted(status, *, segment, version="1", model="churn"):
    labels = {"model": model, "model_version": version, "segment": segment, "status": status}
    return REGISTRY.get_sample_value("crm_segment_updates_total", labels) or 0.0
