"""The one way the apps talk to MLflow: a client on our store, and a lock for MLflow's process-wide state."""

import threading

from django.conf import settings

# mlflow.sklearn.log_model and friends use the process-wide tracking URI and active run: one at a time.
fluent_lock = threading.Lock()


def mlflow_client(tracking_uri=None):
    """A client of our MLflow store; its model registry lives in the same store (MLflow's own default may not)."""
    from mlflow import MlflowClient

    uri = tracking_uri or settings.MLFLOW_TRACKING_URI
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
