"""Shared fixtures: each test gets its own artifact store; MLflow is one SQLite store per session;
users in each role, and a trained / registered / promoted model for the registry, serving and e2e tests."""

import pytest
from django.contrib.auth.models import Group, Permission

from experiments import services as experiment_services
from governance.roles import roles_sync
from registry import services


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return {"uri": f"sqlite:///{root / 'mlflow.db'}", "artifacts": (root / "artifacts").as_uri()}


@pytest.fixture(autouse=True)
def isolated_stores(settings, tmp_path, mlflow_store):
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.MLFLOW_TRACKING_URI = mlflow_store["uri"]
    settings.MLFLOW_ARTIFACT_LOCATION = mlflow_store["artifacts"]
    return settings


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("scientist", password="pw-scientist-1")


@pytest.fixture
def api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


SMALL_RUN = {"experiment": "registry-tests", "dataset": "iris", "algorithm": "random_forest"}


def _member(django_user_model, username, *roles, is_staff=True):
    # A transactional test flushes every table, the roles a migration made included: bring them back.
    roles_sync()
    user = django_user_model.objects.create_user(username, password=f"pw-{username}-1", is_staff=is_staff)
    user.groups.add(*Group.objects.filter(name__in=roles))
    return user


@pytest.fixture
def scientist(django_user_model):
    return _member(django_user_model, "dana", "Data scientist")


@pytest.fixture
def approver(django_user_model):
    return _member(django_user_model, "alex", "Approver")


@pytest.fixture
def second_approver(django_user_model):
    return _member(django_user_model, "blair", "Approver")


@pytest.fixture
def auditor(django_user_model):
    return _member(django_user_model, "audrey", "Auditor")


@pytest.fixture
def engineer(django_user_model):
    return _member(django_user_model, "eli", "ML engineer")


@pytest.fixture
def overrider(django_user_model):
    user = _member(django_user_model, "olive", "Approver")
    user.user_permissions.add(Permission.objects.get(codename="override_compliance"))
    return user


@pytest.fixture
def train():
    """A finished run trained in this process (tiny forest on iris)."""

    def _train(n_estimators=5, **kwargs):
        return experiment_services.run_launch(
            **{**SMALL_RUN, "params": {"n_estimators": n_estimators}, "inline": True, **kwargs}
        )

    return _train


@pytest.fixture
def register(train, scientist):
    def _register(name="iris-clf", run=None, **kwargs):
        run = run or train()
        return services.model_version_register(run_id=run.pk, model_name=name, by=scientist, **kwargs)

    return _register


@pytest.fixture
def promote(scientist, approver):
    """Request and approve a move of `version` to `to_stage` (two different people)."""

    def _promote(version, to_stage="production", reason="ship it", **approve_kwargs):
        request = services.promotion_request_create(version=version, to_stage=to_stage, reason=reason, by=scientist)
        services.promotion_request_approve(request_id=request.pk, by=approver, **approve_kwargs)
        version.refresh_from_db()
        return request

    return _promote
