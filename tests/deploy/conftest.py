"""Shared by the deployment tests: the repository's deploy/ folder and its YAML."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_yaml(path):
    return yaml.safe_load(Path(path).read_text())


def load_all_yaml(path):
    return [document for document in yaml.safe_load_all(Path(path).read_text()) if document]


def procfile_queues():
    """The queues `make run`'s worker consumes (the Procfile): every deployment must consume them all."""
    worker = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("worker:"))
    words = worker.split()
    return set(words[words.index("--queues") + 1].split(","))
