"""The OpenAPI schema: one tag per area of the product (AreaAutoSchema), and the error answers of every operation
(error_responses, a drf-spectacular postprocessing hook).

Errors come from one exception handler (core.errors) in one shape, so they are documented in one place: each
operation lists the statuses it can answer besides its success, with the shared error body."""

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


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in a sentence."},
        "field": {"type": "string", "description": "The input at fault, when there is one."},
        "fields": {"type": "object", "description": "Every invalid field with its messages (validation errors)."},
    },
    "required": ["error"],
}

_READ_ERRORS = {
    "400": "Invalid input (a query parameter, a malformed path); `field` names it.",
    "401": "No valid credentials (a token: `Authorization: Token <key>`).",
    "403": "The authenticated user may not do this; the message says which role or permission.",
    "404": "No such object, or no endpoint at this path.",
    "429": "Too many requests from this client; `Retry-After` says when to try again.",
    "503": "A service this operation needs (the database, the broker) is unavailable; try again.",
}
_WRITE_ERRORS = {
    **_READ_ERRORS,
    "409": "The object is in the wrong state for this action (already decided, archived, changed meanwhile).",
    "413": "The body is over the size limit.",
    "415": "The body's Content-Type is not one this operation reads.",
    "422": "Well-formed input the rules refuse (e.g. a run below the registration gate).",
}
# Reads that refuse a state too (no servable model, a version not ready).
_READ_CONFLICTS = {"409": _WRITE_ERRORS["409"], "422": _WRITE_ERRORS["422"]}


def error_responses(result, generator, request, public):
    """Add the shared error body as a component and the error statuses to each operation that lacks them."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if method not in ("get", "post", "put", "patch", "delete", "head", "options"):
                continue
            errors = (
                _WRITE_ERRORS if method in ("post", "put", "patch", "delete") else {**_READ_ERRORS, **_READ_CONFLICTS}
            )
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": reference}}}
                )
    return result
