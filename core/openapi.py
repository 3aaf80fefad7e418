"""The OpenAPI schema's tags: one per area of the product, taken from the app a view lives in."""

from drf_spectacular.openapi import AutoSchema

# The areas, in the order of a model's path; SPECTACULAR_SETTINGS["TAGS"] describes each.
AREAS = ("experiments", "registry", "serving", "crm", "monitoring", "governance")


class AreaAutoSchema(AutoSchema):
    """Tags an operation with its area (the view's app; the CRM integration apart from serving)."""

    def get_tags(self):
        module = type(self.view).__module__
        if module.startswith("serving.crm"):
            return ["crm"]
        area = module.split(".", 1)[0]
        return [area] if area in AREAS else super().get_tags()
