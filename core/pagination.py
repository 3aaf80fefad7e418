"""Pagination that refuses what it cannot honour instead of guessing.

DRF's LimitOffsetPagination ignores a non-integer offset (the first page comes back as if asked for) and
passes a limit past 64 bits to the database (a 500 on PostgreSQL). Here both are a 400 naming the field.
"""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

# PostgreSQL's LIMIT and OFFSET are 64-bit; nobody pages this far, and anything larger is an error.
_MAX_OFFSET = 2**62


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """?limit= (1 to max_limit, default PAGE_SIZE) and ?offset= (0 or more); anything else is a 400."""

    max_limit = 1000

    def _integer(self, request, name, *, minimum, maximum):
        raw = request.query_params.get(name)
        if raw is None:
            return None
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValidationError({name: f"must be a whole number, not {raw[:40]!r}"})
        if not minimum <= value <= maximum:
            raise ValidationError({name: f"must be between {minimum} and {maximum}"})
        return value

    def get_limit(self, request):
        limit = self._integer(request, self.limit_query_param, minimum=1, maximum=self.max_limit)
        return self.default_limit if limit is None else limit

    def get_offset(self, request):
        offset = self._integer(request, self.offset_query_param, minimum=0, maximum=_MAX_OFFSET)
        return offset or 0

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, _MAX_OFFSET)}
        for parameter in parameters:
            low, high = bounds[parameter["name"]]
            parameter["schema"] = {**parameter["schema"], "minimum": low, "maximum": high}
        return parameters
