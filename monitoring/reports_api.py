"""REST API of the reports: `GET /api/v1/reports/experiments|deployments?since=7d[&format=csv]`."""

import csv
import io

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from monitoring import reports


class CsvRenderer(BaseRenderer):
    """A report's rows as CSV (its csv_rows, one header line); errors stay JSON (ReportApi sees to it)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        report = renderer_context["view"].report
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=report.csv_columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(report.csv_rows())
        return out.getvalue().encode("utf-8")


class ReportApi(APIView):
    """The experiment or deployment report since `since` (24h, 7d, 2w or an ISO date; default 30 days), as
    JSON or, with ?format=csv (or Accept: text/csv), as CSV. Who may read which report is checked in
    monitoring.reports with the caller."""

    renderer_classes = [JSONRenderer, CsvRenderer]
    report = None

    @extend_schema(
        parameters=[
            OpenApiParameter("since", str, description="24h, 7d, 2w or an ISO 8601 date; default 30 days ago"),
            OpenApiParameter("format", str, enum=["json", "csv"]),
        ],
        responses={200: dict},
    )
    def get(self, request, kind):
        since = reports.since_parse(request.query_params.get("since"))
        self.report = reports.report_build(kind=kind, by=request.user, since=since)
        response = Response(self.report.as_dict())
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = f'attachment; filename="{kind}-report.csv"'
        return response

    def finalize_response(self, request, response, *args, **kwargs):
        if response.status_code >= 400:  # an error is a JSON body naming the field, whatever was asked
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)


urlpatterns = [
    path("reports/<str:kind>", ReportApi.as_view(), name="report"),
]
