"""The promises of registration pinned to what a user reads: the gate's and the signature's sentences, the
refusals' fields, the registered version's record and trail, the model's editable documentation."""

import pytest

from core.errors import Conflict, InvalidInput, NotFound, NotPermitted, Unprocessable
from experiments.models import Run
from governance.models import AuditEntry
from registry import services
from registry.models import ModelVersion, RegisteredModel
from registry.services.registration import gate_failures, signature_differences
from tests.helpers import refused

pytestmark = pytest.mark.django_db


def test_the_gate_says_each_threshold_missed_in_order_minimums_and_maximums_at_their_edges():
    thresholds = {"log_loss": 0.3, "accuracy": 0.9, "f1_macro": 0.8, "inference_time_ms": 5}
    assert (
        gate_failures(
            thresholds=thresholds, metrics={"accuracy": 0.9, "log_loss": 0.3, "f1_macro": 0.8, "inference_time_ms": 5}
        )
        == []
    )
    assert gate_failures(
        thresholds=thresholds, metrics={"accuracy": 0.89991, "log_loss": 0.30001, "inference_time_ms": 5.5}
    ) == [
        "accuracy 0.8999 is below the minimum 0.9",
        "the run has no f1_macro metric (the gate needs f1_macro)",
        "inference_time_ms 5.5 is above the maximum 5",
        "log_loss 0.3 is above the maximum 0.3",
    ]
    assert gate_failures(thresholds={}, metrics={"accuracy": 0.1}) == []


def _signature(features, target="species", classes=("a", "b")):
    return {"features": [{"name": n, "dtype": d} for n, d in features], "target": target, "classes": list(classes)}


def test_signature_differences_name_every_change_in_words():
    current = _signature([("x", "numeric"), ("y", "numeric"), ("z", "categorical")])
    assert signature_differences(current=current, candidate=current) == []
    assert signature_differences(
        current=current,
        candidate=_signature(
            [("x", "categorical"), ("w", "numeric"), ("v", "numeric"), ("z", "categorical")],
            target="kind",
            classes=("a", "c"),
        ),
    ) == [
        "classes are a, c; were a, b",
        "feature x is categorical, was numeric",
        "features added: w, v",
        "features removed: y",
        "target is kind, was species",
    ]
    reordered = _signature([("y", "numeric"), ("x", "numeric"), ("z", "categorical")])
    assert signature_differences(current=current, candidate=reordered) == ["the features are in another order"]
    # Renamed (one added, one removed) is not also reported as a reordering.
    renamed = _signature([("x", "numeric"), ("y2", "numeric"), ("z", "categorical")])
    assert signature_differences(current=current, candidate=renamed) == ["features added: y2", "features removed: y"]


def test_registration_refusals_name_the_field(train, scientist, django_user_model):
    run = train()

    def register(run_id=run.pk, name="iris-clf", by=scientist):
        return lambda: services.model_version_register(run_id=run_id, model_name=name, by=by)

    for unknown in (999999, "abc", None):
        refused(NotFound, register(run_id=unknown), f"^run {unknown} does not exist$", "run_id")
    refused(InvalidInput, register(name="  "), ".", "name")
    refused(InvalidInput, register(name=None), ".", "name")
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    refused(NotPermitted, register(by=nobody), "^nobody may not register model versions: it needs the", None)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.RUNNING)
    refused(Conflict, register(), rf"^run {run.pk} is RUNNING; only a FINISHED run can be registered$", "run_id")
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FINISHED, model_path="")
    refused(Conflict, register(), rf"^run {run.pk} is FINISHED; only a FINISHED run can be registered$", "run_id")
    sweep = train(params={}, sweep={"n_estimators": [3, 4]})
    Run.objects.filter(pk=sweep.pk).update(best_child=None)
    refused(InvalidInput, register(run_id=sweep.pk), rf"^run {sweep.pk} is a sweep, not a model$", "run_id")
    assert not RegisteredModel.objects.exists()


def test_the_gate_refusal_lists_the_failures_and_the_gate(register, train, scientist):
    version = register()
    services.registered_model_update(
        model=version.model, by=scientist, changes={"metric_thresholds": {"accuracy": 1.5, "log_loss": 1e-9}}
    )
    run = train()
    gate = refused(
        Unprocessable,
        lambda: services.model_version_register(run_id=run.pk, model_name=" iris-clf ", by=scientist),
        rf"^run {run.pk} misses the registration gate of iris-clf: accuracy \S+ is below the minimum 1.5; "
        r"log_loss \S+ is above the maximum 1e-09$",
        "run_id",
    )
    assert gate.extra["gate"] == {"accuracy": 1.5, "log_loss": 1e-9}
    assert len(gate.extra["failures"]) == 2


def test_a_registered_version_records_its_run_and_its_trail(train, scientist):
    run = train()
    version = services.model_version_register(
        run_id=str(run.pk), model_name=" iris-clf ", by=scientist, description="first forest"
    )
    version.refresh_from_db()
    model = version.model
    assert (model.name, model.owner, model.created_by) == ("iris-clf", scientist, scientist)
    assert (version.version, version.run_id, version.dataset_id, version.description) == (
        1,
        run.pk,
        run.dataset_id,
        "first forest",
    )
    assert (version.artifact_path, version.artifact_sha256) == (run.model_path, run.model_sha256)
    assert version.metrics == run.latest_metrics
    assert (version.created_by, version.breaking_change, version.signature_changes) == (scientist, False, [])
    assert version.serving_form == ModelVersion.ServingForm.ONNX
    assert version.onnx_path == f"onnx/{version.onnx_sha256}.onnx"
    assert version.reference_stats["n_rows"] == 150
    assert set(version.reference_stats["features"]) == {f["name"] for f in version.signature["features"]}
    created = AuditEntry.objects.get(action="model.created")
    assert (created.actor_name, created.after) == ("dana", {"name": "iris-clf"})
    entry = AuditEntry.objects.get(action="version.registered")
    assert entry.actor_name == "dana"
    assert entry.after == {
        "run_id": run.pk,
        "dataset": str(run.dataset),
        "artifact_sha256": run.model_sha256,
        "metrics": run.latest_metrics,
        "serving_form": "onnx",
        "breaking_change": False,
        "signature_changes": [],
        "compared_with": None,
    }
    # A second version is compared with the first (the latest, nothing being in Production), and numbered on.
    second = services.model_version_register(run_id=train().pk, model_name="iris-clf", by=scientist)
    assert second.version == 2
    assert AuditEntry.objects.filter(action="version.registered").latest("id").after["compared_with"] == "iris-clf v1"
    assert AuditEntry.objects.filter(action="model.created").count() == 1


def test_the_fast_form_is_rebuilt_audited_from_the_cli(register, scientist, capsys):
    from django.core.management import call_command

    version = register()
    ModelVersion.objects.filter(pk=version.pk).update(
        serving_form=ModelVersion.ServingForm.SKLEARN, onnx_path="", onnx_sha256="", serving_note=""
    )
    call_command("build_fast_forms", "--user", "dana")
    version.refresh_from_db()
    assert version.serving_form == ModelVersion.ServingForm.ONNX
    assert version.serving_note.startswith("ONNX matches scikit-learn on 150 rows")
    entry = AuditEntry.objects.get(action="version.fast_form_built")
    assert entry.actor_name == "dana"
    assert entry.before == {"serving_form": "sklearn", "onnx_sha256": ""}
    assert entry.after == {"serving_form": "onnx", "onnx_sha256": version.onnx_sha256}
    assert entry.reason == version.serving_note
    assert f"{version}: ONNX" in capsys.readouterr().out


def test_the_fast_form_rebuild_needs_the_register_permission(register, django_user_model):
    version = register()
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    refused(
        NotPermitted,
        lambda: services.version_fast_form_rebuild(version=version, by=nobody),
        "^nobody may not rebuild the fast form of versions: it needs the",
        None,
    )


def test_model_edits_refuse_what_cannot_be_edited_and_thresholds_that_are_not_numbers(register, scientist):
    model = register().model

    def edit(**changes):
        return lambda: services.registered_model_update(model=model, by=scientist, changes=changes)

    refused(
        InvalidInput,
        edit(name="renamed", zzz=1),
        "^cannot be edited; editable: description, owner, intended_use, tags, metric_thresholds$",
        "name",
    )
    for bad in ({"accuracy": "high"}, {"accuracy": True}, ["accuracy"], {"accuracy": None}):
        refused(
            InvalidInput,
            edit(metric_thresholds=bad),
            r'^give metric names and numbers, e.g. \{"accuracy": 0.95\}$',
            "metric_thresholds",
        )
    count = AuditEntry.objects.count()
    services.registered_model_update(model=model, by=scientist, changes={"metric_thresholds": {"accuracy": 0.5}})
    services.registered_model_update(model=model, by=scientist, changes={"metric_thresholds": {"accuracy": 0.5}})
    assert AuditEntry.objects.count() == count + 1  # an edit that changes nothing is not audited
    entry = AuditEntry.objects.filter(action="model.updated").latest("id")
    assert (entry.before, entry.after) == ({"metric_thresholds": {}}, {"metric_thresholds": {"accuracy": 0.5}})
    services.registered_model_update(model=model, by=scientist, changes={"owner": None, "intended_use": "demo"})
    entry = AuditEntry.objects.filter(action="model.updated").latest("id")
    assert entry.before == {"owner": "dana", "intended_use": ""}
    assert entry.after == {"owner": None, "intended_use": "demo"}
    model.refresh_from_db()
    assert (model.owner, model.intended_use) == (None, "demo")


def test_a_new_version_must_fit_the_production_version_not_the_latest(register, promote, train, scientist):
    production = register()
    promote(production)
    churn_run = train(dataset="customer_churn", n_samples=200)
    services.model_version_register(run_id=churn_run.pk, model_name="iris-clf", by=scientist, breaking_change=True)
    fits_production = services.model_version_register(run_id=train().pk, model_name="iris-clf", by=scientist)
    assert (fits_production.version, fits_production.breaking_change) == (3, False)
    entry = AuditEntry.objects.filter(action="version.registered").latest("id")
    assert entry.after["compared_with"] == "iris-clf v1"


def test_several_removed_features_are_named_together():
    current = _signature([("x", "numeric"), ("y", "numeric"), ("z", "numeric")])
    assert signature_differences(current=current, candidate=_signature([("z", "numeric")])) == [
        "features removed: x, y"
    ]


def test_a_rebuilt_fast_form_is_signalled_to_serving_by_whom(register, scientist):
    from registry.signals import version_serving_form_changed

    version = register()
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs["version"].pk, kwargs["by"]))

    version_serving_form_changed.connect(receiver)
    try:
        services.version_fast_form_rebuild(version=version, by=scientist)
    finally:
        version_serving_form_changed.disconnect(receiver)
    assert received == [(ModelVersion, version.pk, scientist)]


def test_model_edits_need_their_permission_and_are_the_editors(register, scientist, django_user_model):
    model = register().model
    nobody = django_user_model.objects.create_user("nobody", password="pw-nobody-1")
    refused(
        NotPermitted,
        lambda: services.registered_model_update(model=model, by=nobody, changes={"description": "d"}),
        "^nobody may not edit registered models: it needs the",
        None,
    )
    services.registered_model_update(model=model, by=scientist, changes={"description": "iris species"})
    assert AuditEntry.objects.filter(action="model.updated").latest("id").actor_name == "dana"


def _while_the_version_is_built(monkeypatch, happen):
    """`happen()` runs once the fast form is built, before the version is written under the model's lock:
    what another person does in the seconds a conversion takes."""
    from registry.services import registration

    build = registration.fast_form_build

    def build_then_happen(**kwargs):
        fast = build(**kwargs)
        happen()
        return fast

    monkeypatch.setattr(registration, "fast_form_build", build_then_happen)


def test_a_gate_tightened_while_the_version_was_being_built_refuses_it(register, train, scientist, monkeypatch):
    """The gate is checked again under the model's lock: an edit made while the run was being converted
    (seconds, outside the lock) counts."""
    model = register().model
    _while_the_version_is_built(
        monkeypatch,
        lambda: services.registered_model_update(
            model=model, by=scientist, changes={"metric_thresholds": {"accuracy": 1.5, "f1_macro": 1.5}}
        ),
    )
    run = train()
    refused(
        Unprocessable,
        lambda: services.model_version_register(run_id=run.pk, model_name="iris-clf", by=scientist),
        rf"^run {run.pk} misses the registration gate of iris-clf: accuracy \S+ is below the minimum 1.5; "
        r"f1_macro \S+ is below the minimum 1.5$",
        None,
    )
    assert ModelVersion.objects.count() == 1


def test_a_production_version_changed_while_the_version_was_being_built_is_what_it_must_fit(
    register, promote, train, scientist, monkeypatch
):
    promote(register())  # iris-clf v1: four flower measurements
    churn = services.model_version_register(
        run_id=train(dataset="customer_churn", n_samples=200).pk,
        model_name="iris-clf",
        by=scientist,
        breaking_change=True,
    )
    _while_the_version_is_built(monkeypatch, lambda: promote(churn))  # another approver's decision, then
    run = train()
    refused(
        Unprocessable,
        lambda: services.model_version_register(run_id=run.pk, model_name="iris-clf", by=scientist),
        rf"^run {run.pk} does not fit iris-clf v2: classes are setosa, versicolor, virginica; were no, yes; "
        r"features added: [^;]+; features removed: [^;]+; target is target, was churned$",
        "run_id",
    )


def test_a_run_registered_already_names_its_version(register, scientist):
    version = register()
    refused(
        Conflict,
        lambda: services.model_version_register(run_id=version.run_id, model_name="iris-clf", by=scientist),
        rf"^run {version.run_id} is already iris-clf v1$",
        "run_id",
    )


def test_a_registration_is_announced_and_signalled_with_who_registered(train, scientist, hooks):
    from registry.signals import version_registered

    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs["version"].version, kwargs["by"]))

    version_registered.connect(receiver)
    try:
        services.model_version_register(run_id=train().pk, model_name="iris-clf", by=scientist)
    finally:
        version_registered.disconnect(receiver)
    assert received == [(ModelVersion, 1, scientist)]
    [registered] = hooks("version.registered")
    assert (registered["model"], registered["version"]) == ("iris-clf", 1)


def test_a_rebuild_that_falls_back_on_scikit_learn_names_no_onnx_file(register, scientist, settings):
    """A converter upgrade whose ONNX form now disagrees: the version is served by scikit-learn, and its
    record and audit entry no longer name the earlier ONNX file."""
    version = register()
    assert version.serving_form == ModelVersion.ServingForm.ONNX
    settings.ONNX_MAX_ABS_DIFF = -1.0  # no difference is within it

    rebuilt = services.version_fast_form_rebuild(version=version, by=scientist)

    rebuilt.refresh_from_db()
    assert (rebuilt.serving_form, rebuilt.onnx_path, rebuilt.onnx_sha256) == (ModelVersion.ServingForm.SKLEARN, "", "")
    assert rebuilt.serving_note.startswith("ONNX disagrees with scikit-learn")
    entry = AuditEntry.objects.filter(action="version.fast_form_built").latest("id")
    assert entry.before == {"serving_form": "onnx", "onnx_sha256": version.onnx_sha256}
    assert entry.after == {"serving_form": "sklearn", "onnx_sha256": ""}


def test_a_version_registered_without_a_description_has_none(register):
    assert register().description == ""


def test_a_version_number_taken_at_the_same_moment_is_a_conflict_and_nothing_is_written(register, train, scientist):
    """The database's uniqueness of (model, number) is the last guard: a registration that loses the race
    is refused by field, whole (its model sync, audit entry and signal never happen)."""
    from django.db.models.signals import pre_save

    first = register()
    runs = [train(), train(params={"n_estimators": 4, "max_depth": 2})]
    entries = AuditEntry.objects.count()

    def another_registration_takes_the_number(sender, instance, **kwargs):
        if instance._state.adding:
            twin = ModelVersion.objects.get(pk=first.pk)
            twin.pk, twin.version, twin.run = None, instance.version, runs[1]
            ModelVersion.objects.bulk_create([twin])  # sends no pre_save of its own

    pre_save.connect(another_registration_takes_the_number, sender=ModelVersion)
    try:
        refused(
            Conflict,
            lambda: services.model_version_register(run_id=runs[0].pk, model_name="iris-clf", by=scientist),
            "^iris-clf was registered to concurrently; try again$",
            "name",
        )
    finally:
        pre_save.disconnect(another_registration_takes_the_number, sender=ModelVersion)
    assert list(ModelVersion.objects.values_list("version", flat=True)) == [1]
    assert AuditEntry.objects.count() == entries
