"""Small helpers the test modules share."""


def run_dispatches(callbacks):
    """The on-commit callbacks that hand a launched run to the Celery workers (the audit log adds its own)."""
    return [callback for callback in callbacks if "run_launch" in getattr(callback, "__qualname__", "")]
