"""Request bodies the database can store: DRF's JSON parser without its 500s and with a size limit."""

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class BodyTooLarge(APIException):
    status_code = 413
    default_detail = "the body is over the limit"
    default_code = "body_too_large"


def nul_free(value, path="body"):
    """`value` if no string in it (key or value) holds a NUL character, which PostgreSQL's text and jsonb
    refuse (a 500 when it reached the database); else ParseError naming where."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ParseError(f"{path}: NUL characters are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            nul_free(key, path)
            nul_free(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            nul_free(item, f"{path}[{index}]")
    return value


class SafeJSONParser(JSONParser):
    """JSON over DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 before it is read (DRF reads the stream itself, so
    Django's limit never applies); nested too deeply for the parser (a RecursionError) or holding NUL
    characters, a 400."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if request is not None and limit is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                raise BodyTooLarge(f"the body has {declared} bytes; the limit is {limit}")
        try:
            return nul_free(super().parse(stream, media_type, parser_context))
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply")
