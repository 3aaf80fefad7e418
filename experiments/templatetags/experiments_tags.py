from django import template

register = template.Library()


@register.filter
def metric(value):
    """A metric value as a person reads it: counts and sizes whole, scores to four places."""
    if value is None:
        return "–"
    if float(value).is_integer() and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.4f}"
