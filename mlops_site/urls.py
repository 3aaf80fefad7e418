from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from mlops_site import views
from monitoring.metrics import metrics_view
from serving.api import root_urlpatterns as serving_root_urlpatterns
from serving.crm.api import root_urlpatterns as crm_root_urlpatterns
from serving.v2 import ServerMetadataApi

urlpatterns = [
    path("", views.home, name="home"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    # Prediction routes first: they take most of the traffic, and URL resolution tries patterns in order.
    path("api/v1/", include("serving.api")),
    path("api/v1/", include("experiments.api")),
    path("api/v1/", include("registry.api")),
    path("api/v1/", include("governance.api")),
    path("api/v1/crm/", include("serving.crm.api")),
    path("api/v1/", include("monitoring.api")),
    path("api/v1/", include("monitoring.reports_api")),
    path("v2", ServerMetadataApi.as_view(), name="v2-server-metadata"),  # the protocol's URL has no slash
    path("v2/", include("serving.v2")),
    # The seed's short forms: POST /predict (SERVING_DEFAULT_MODEL) and GET /health.
    *serving_root_urlpatterns,
    # The specification's CRM form: POST /crm_segment_update?customer_id=CUST_TEST_007.
    *crm_root_urlpatterns,
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # django_prometheus's metrics and the monitoring jobs' gauges read from the database.
    path("metrics", metrics_view, name="prometheus-django-metrics"),
]

handler400 = "core.errors.bad_request"
handler404 = "core.errors.not_found"
handler500 = "core.errors.server_error"
