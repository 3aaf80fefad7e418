"""Serve the test suite's model (iris-clf: the `register` fixture's 5-tree forest) with serve.py, for capture.py.

.venv/bin/python tests/serving/kserve/serve_test_model.py PORT
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = Path(__file__).resolve().parents[3]
SETUP = """
from django.contrib.auth import get_user_model
from experiments.services import run_launch
from registry import services
users = get_user_model()
a = users.objects.create_superuser("capture-a", password="x")
b = users.objects.create_superuser("capture-b", password="x")
run = run_launch(experiment="registry-tests", dataset="iris", algorithm="random_forest",
                 params={"n_estimators": 5}, inline=True, by=a)
version = services.model_version_register(run_id=run.pk, model_name="iris-clf", by=a)
request = services.promotion_request_create(version=version, to_stage="production", reason="capture", by=a)
services.promotion_request_approve(request_id=request.pk, by=b)
"""

if __name__ == "__main__":
    var = Path(tempfile.mkdtemp(prefix="kserve-capture-"))
    env = {
        **os.environ,
        "MLOPS_VAR_DIR": str(var),
        "DATABASE_URL": f"sqlite:///{var}/db.sqlite3",
        "MLFLOW_TRACKING_URI": f"sqlite:///{var}/mlflow.db",
        "SECRET_KEY": "capture-only",
        "SERVING_REQUIRE_AUTH": "0",
        "PORT": sys.argv[1],
        "WEB_HOST": "127.0.0.1",
        "WEB_WORKERS": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE, env=env, check=True)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP], cwd=BASE, env=env, check=True)
    print("ready", flush=True)
    os.chdir(BASE)
    os.execve(sys.executable, [sys.executable, str(BASE / "serve.py")], env)
