"""django.contrib.admin with the product's own site (mlops_site.admin_site), named in INSTALLED_APPS."""

from django.contrib.admin.apps import AdminConfig


class MLOpsAdminConfig(AdminConfig):
    default_site = "mlops_site.admin_site.MLOpsAdminSite"
