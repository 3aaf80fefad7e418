"""Writes of the experiments app. Callers import from here, not from the modules."""

from experiments.services.datasets import (
    UploadOutcome,
    dataset_frame_load,
    dataset_resolve,
    dataset_upload_profile,
    dataset_version_builtin,
    dataset_version_upload,
    dataset_version_upload_file,
)
from experiments.services.execution import run_execute, run_fail
from experiments.services.experiments import experiment_save
from experiments.services.launch import run_kill, run_launch, sweep_grid_parse
from experiments.services.mlflow_sync import mlflow_import, run_mirror_to_mlflow, runs_mirror_now, runs_mirror_pending
from experiments.services.sweeps import runs_reap_lost, sweep_finalize

__all__ = [
    "UploadOutcome",
    "dataset_frame_load",
    "dataset_resolve",
    "dataset_upload_profile",
    "dataset_version_builtin",
    "dataset_version_upload",
    "dataset_version_upload_file",
    "experiment_save",
    "mlflow_import",
    "run_execute",
    "run_fail",
    "run_kill",
    "run_launch",
    "run_mirror_to_mlflow",
    "runs_mirror_now",
    "runs_mirror_pending",
    "runs_reap_lost",
    "sweep_finalize",
    "sweep_grid_parse",
]
