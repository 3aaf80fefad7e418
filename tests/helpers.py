"""Small helpers the test modules share."""


def run_dispatches(callbacks):
    """The on-commit callbacks that hand a launched run to the Celery workers (the audit log adds its own)."""
    return [callback for callback in callbacks if "run_launch" in getattr(callback, "__qualname__", "")]


def dispatches(callbacks):
    """The on-commit callbacks that queue work, without the audit log's (it logs each committed head)."""
    return [callback for callback in callbacks if not getattr(callback, "__qualname__", "").startswith("audit_record")]
