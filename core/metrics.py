"""Which way a metric is better, for gates, policies and sweeps alike."""


def lower_is_better(metric: str) -> bool:
    """Losses, times and sizes are better small; every other metric is better large."""
    return metric.endswith(("loss", "_seconds", "_ms", "_bytes"))


def metric_threshold_check(metric: str, value: float | None, threshold: float) -> tuple[bool, str]:
    """(passed, detail) for a metric against a threshold: a minimum, or a maximum for losses, times and sizes."""
    if value is None:
        return False, f"no {metric} metric"
    if lower_is_better(metric):
        return value <= threshold, f"{metric} {value:.4g} (at most {threshold:g})"
    return value >= threshold, f"{metric} {value:.4g} (at least {threshold:g})"
