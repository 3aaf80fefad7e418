import pytest
from django.core.management import CommandError, call_command

from registry.models import ModelVersion, PromotionRequest

pytestmark = pytest.mark.django_db


def _call(*args):
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_train_register_request_approve_rollback_from_the_cli(scientist, approver, second_approver):
    out = _call(
        "train",
        "--experiment",
        "cli",
        "--dataset",
        "iris",
        "--algorithm",
        "random_forest",
        "--param",
        "n_estimators=5",
        "--register",
        "iris-cli",
        "--user",
        "dana",
    )
    assert "Registered run" in out
    assert "as iris-cli v1" in out
    out = _call("request_promotion", "iris-cli", "1", "--to", "production", "--reason", "first", "--user", "dana")
    request_id = int(out.strip().splitlines()[-1])
    assert "Compliance: compliant" in out
    with pytest.raises(CommandError, match="dana may not approve promotions: it needs the approve_promotion"):
        _call("approve_promotion", str(request_id), "--user", "dana")
    assert "is now in Production" in _call("approve_promotion", str(request_id), "--user", "alex")
    run_id = ModelVersion.objects.get(version=1).run_id
    with pytest.raises(CommandError, match="already iris-cli v1"):
        _call("register", str(run_id), "iris-cli", "--user", "dana")


def test_register_reject_and_rollback_commands(train, scientist, approver, second_approver):
    first, second = train(), train()
    assert _call("register", str(first.pk), "m", "--user", "dana").strip().endswith("1")
    _call("register", str(second.pk), "m", "--description", "second", "--user", "dana")
    for version in ("1", "2"):
        out = _call("request_promotion", "m", version, "--to", "production", "--reason", "r", "--user", "dana")
        _call("approve_promotion", out.strip().splitlines()[-1], "--user", "alex")
    out = _call("rollback", "m", "--reason", "v2 broke checkout", "--user", "alex")
    request_id = out.strip().splitlines()[-1]
    assert PromotionRequest.objects.get(pk=request_id).kind == "rollback"
    with pytest.raises(CommandError, match="comment"):
        _call("reject_promotion", request_id, "--comment", " ", "--user", "blair")
    assert "stays in Archived" in _call("reject_promotion", request_id, "--comment", "not now", "--user", "blair")
    assert "v1 is in Production again" in _call("rollback", "m", "--reason", "x", "--emergency", "--user", "alex")


def test_cli_refuses_without_a_user_or_with_an_unknown_one(register):
    register()
    with pytest.raises(CommandError, match="--user"):
        _call("request_promotion", "iris-clf", "1", "--to", "staging", "--reason", "r")
    with pytest.raises(CommandError, match="no active user 'ghost'"):
        _call("approve_promotion", "1", "--user", "ghost")
    with pytest.raises(CommandError, match="has no version 7"):
        _call("request_promotion", "iris-clf", "7", "--to", "staging", "--reason", "r", "--user", "dana")
