"""Mutation testing of the modules that hold the platform's promises (`make mutation`), with mutmut 3.

Each module group runs in its own scratch copy of the repository (mutmut writes its mutated tree to
mutants/ under the working directory, and reads its settings from pyproject.toml), against only the
test files that exercise it, on SQLite and the in-memory broker (the prediction log's group on PostgreSQL
too: see POSTGRES_GROUPS), under a time limit. It prints, per group, how many mutants the tests killed,
how many survived, timed out or were not reached, and the score: caught / (caught + survived), where a
mutant is caught when a test fails or it times out (the change made the tests hang: it was noticed), with
the mutants listed in EQUIVALENT below (a change no test can tell from the original) left out of the count.

    .venv/bin/python tools/mutation.py                       # every group
    .venv/bin/python tools/mutation.py access feedback      # some groups
    MUTATION_TIME_LIMIT=1200 .venv/bin/python tools/mutation.py promotion
    .venv/bin/python tools/mutation.py --report promotion   # the last run's score again, without running
    .venv/bin/python tools/mutation.py --again promotion    # the last run brought up to date (see group_again)

Each group's survivors are listed by name: `cd var/mutation/GROUP && ../../../.venv/bin/mutmut show NAME`
shows the change. It is slow (see the README's "Mutation testing"), so it does not run in CI.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
SCRATCH = ROOT / "var" / "mutation"
APPS = ["core", "experiments", "governance", "registry", "serving", "monitoring", "mlops_site"]

# group: (the files mutated, the tests that exercise them)
GROUPS = {
    "audit": (
        ["governance/services/audit.py"],
        ["tests/governance/test_audit.py", "tests/governance/test_audit_record.py"],
    ),
    "webhooks": (
        ["governance/services/webhooks.py"],
        # the audit head's anchor is in test_audit
        ["tests/governance/test_webhooks.py", "tests/registry/test_webhooks.py", "tests/governance/test_audit.py"],
    ),
    "compliance": (
        ["governance/services/compliance.py"],
        ["tests/governance/test_compliance.py", "tests/registry/test_services.py"],
    ),
    "promotion": (
        ["registry/services/promotion.py"],
        [
            "tests/registry/test_promotion.py",
            "tests/registry/test_services.py",
            "tests/registry/test_webhooks.py",
            "tests/serving/test_routing.py",
        ],
    ),
    "registration": (
        ["registry/services/registration.py", "registry/fast_inference.py"],
        [
            "tests/registry/test_registration.py",
            "tests/registry/test_fast_inference.py",
            "tests/registry/test_services.py",
            "tests/serving/test_api.py",
        ],
    ),
    "access": (["serving/access.py"], ["tests/serving/test_api.py"]),
    "feedback": (["serving/services/feedback.py"], ["tests/serving/test_api.py", "tests/serving/test_feedback.py"]),
    "predict": (
        ["serving/predict.py", "serving/runtime.py"],
        [
            "tests/serving/test_runtime.py",
            "tests/serving/test_api.py",
            "tests/serving/test_fast.py",  # the fast path asks the runtime for the routes it holds
            "tests/serving/test_routing.py",
            "tests/serving/test_protocols.py",
        ],
    ),
    "predlog": (
        ["serving/predlog.py"],
        ["tests/serving/test_predlog.py", "tests/monitoring/test_partitions.py", "tests/serving/test_routing.py"],
    ),
}

# Groups with code of PostgreSQL's (COPY, partitions) and of SQLite's run twice, on SQLite and on the
# PostgreSQL server at MUTATION_POSTGRES_URL (the database mutation_GROUP need not exist; each mutant's tests
# use a copy of test_mutation_GROUP), a mutant caught if either run catches it; on SQLite alone, saying so,
# when no server answers there.
POSTGRES_GROUPS = {"predlog"}
# Seconds added to a mutant's measured test time before the multiplier (see _scratch_copy): the predict group's
# tests sit on fixtures that train, convert and promote a model, which a mutant's process does afresh.
TIMEOUT_CONSTANT = {"predict": 90.0}
# Environment of a group's run: the registration group mutates the ONNX converter, so the suite converts for
# real instead of replaying conversions from its per-session cache (tests/conftest.py).
GROUP_ENV = {"registration": {"MUTATION_REAL_CONVERSIONS": "1"}}
POSTGRES_URL = os.environ.get("MUTATION_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")

# Mutants accepted as equivalent (no behaviour a test could observe changes), each with its reason;
# the README's "Mutation testing" lists them too. mutmut numbers the mutants of a function in order, so
# an edit of that function renumbers them: look at them again (`mutmut show NAME`) after changing it.
_THROTTLE = "serving.access.xǁPredictionRateThrottleǁ"  # mutmut's name for a method
_ALLOWED = "serving.access.x_prediction_allowed__mutmut_"
_HOOKS = "governance.services.webhooks.x_"
_AUDIT = "governance.services.audit.x_"
_PROMOTION = "registry.services.promotion.x_"
_LOG = "serving.predlog.x"
EQUIVALENT = {
    "serving.services.feedback.x__classes__mutmut_14": "`if signature or True`: every registered version has a "
    "signature, and a logged prediction always names a registered version, so the else branch is unreachable",
    "serving.services.feedback.x_feedback_record__mutmut_34": "the refused request's error quoted up to 101 "
    "characters instead of 100: the wording of a message, not a behaviour",
    "serving.services.feedback.x_feedback_record__mutmut_70": "`save(update_fields=None)` writes every column "
    "instead of two, of a row locked by select_for_update: the same row afterwards",
    "serving.access.x__parse_rate__mutmut_3": "rpartition instead of partition of a rate with one slash",
    _THROTTLE + "allow_request__mutmut_11": "getattr without a default: a DRF request always has a user",
    _ALLOWED + "5": "int(t / s) instead of int(t // s): the same for a positive time",
    _THROTTLE
    + "wait__mutmut_5": "max(wait, 1): wait is above 0 and DRF rounds Retry-After up, so it is at least 1 anyway",
    _HOOKS + "_enqueue__mutmut_4": "options {'queue': None} instead of {} when no queue is asked for: Celery "
    "treats queue=None as the task's own queue",
    _HOOKS + "webhook_deliver__mutmut_3": "select_related(None): one more query for the subscription, same result",
    _HOOKS + "webhook_deliver__mutmut_11": "`save(update_fields=None)` writes every column instead of two, of a "
    "row locked by select_for_update: the same row afterwards",
    _HOOKS + "webhook_deliver__mutmut_32": "method=None with a body: urllib sends a POST",
    _HOOKS + "webhook_deliver__mutmut_36": "no method with a body: urllib sends a POST",
    **{
        _HOOKS + f"webhook_deliver__mutmut_{n}": "a header name in another case: urllib sends it capitalized "
        "whatever the case given (Content-type, X-event), and HTTP header names are case-insensitive"
        for n in (41, 42, 46, 47, 55, 56, 58, 59)
    },
    _HOOKS + "webhooks_retry_stalled__mutmut_13": "values_list(flat=True) with no field names gives the first "
    "column, the primary key, as values_list('pk', flat=True) does",
    _AUDIT + "audit_entry_seal__mutmut_4": "json.dumps without DjangoJSONEncoder: the sealed fields are JSON "
    "already (created_at as ISO text, before/after converted by audit_record)",
    _AUDIT + "audit_entry_seal__mutmut_7": "the same, the encoder argument removed",
    _AUDIT + "audit_chain_verify__mutmut_11": "iterator(chunk_size=None): rows fetched in other chunks, the same rows",
    _AUDIT + "audit_chain_verify__mutmut_15": "iterator(chunk_size=2001): the same",
    _AUDIT + "audit_record__mutmut_63": "before=None converted as JSON is None",
    _AUDIT + "audit_record__mutmut_71": "after=None converted as JSON is None",
    "governance.services.compliance.x__data_quality_checks__mutmut_14": "a failed check given as None: "
    "_check stores bool(passed), False either way",
    "governance.services.compliance.x__performance_checks__mutmut_21": "the same, for the missing latency metric",
    **{
        f"serving.predict.x__observe_many__mutmut_{n}": "which of the two ways of counting the confidence "
        "histogram is taken (one observation a row, or one increment a bucket): both count the same"
        for n in (1, 2, 3, 4, 5, 9, 10)
    },
    **{
        f"serving.predict.x__observe_many__mutmut_{n}": "a default spelt out or left out: searchsorted's side is "
        "'left', and bincount's counts cannot outnumber the buckets (the last bound is +Inf) so zip's strictness "
        "and minlength change nothing"
        for n in (18, 24, 29, 32, 33)
    },
    **{
        f"serving.predict.x__count_success__mutmut_{n}": "the metric children looked up on every prediction "
        "instead of once per model and version: the same children, only slower"
        for n in (1, 2, 20)
    },
    "serving.runtime.xǁServingRuntimeǁ__init____mutmut_2": "a new runtime's generation None instead of a fresh "
    "object: its maps are empty either way until the first signal check",
    "serving.runtime.xǁServingRuntimeǁ__init____mutmut_7": "the by-number map None at first: the first signal "
    "check (every lookup starts with one, and a new runtime's generation matches no signal) makes it anew",
    "serving.runtime.xǁServingRuntimeǁroute__mutmut_77": "the fallback of a reloaded route not forgotten at once: "
    "nothing reads it before the next signal overwrites it with the routes held then",
    **{
        _LOG + f"ǁLogRecordǁrows__mutmut_{n}": "strict zip of the vector's columns dropped: zip(*values, strict=True) "
        "below already refuses columns of different lengths, the vector's among them"
        for n in (11, 13, 18)
    },
    **{
        _LOG + f"ǁLogRecordǁrows__mutmut_{n}": "strict zip of names and a row dropped: a row holds one value per "
        "column name by construction"
        for n in (28, 31, 32)
    },
    _LOG + "__json_text__mutmut_4": "backslashes doubled in every text, not only one holding a backslash: "
    "replacing none changes nothing",
    _LOG + "ǁPredictionLogWriterǁ_write__mutmut_44": "`getattr(exc, '__cause__')` without a default: every "
    "exception has the attribute (None when there is no cause)",
    # The COPY builder's (_copy_lines, _run_lines: the same lines whatever the edit).
    _LOG + "__copy_lines__mutmut_33": "the features' names compared with None never match: each record is built "
    "as a run of its own, the same lines, slower",
    _LOG + "__probabilities_template__mutmut_7": "a key's text cut from {label: 1} instead of {label: 0}: one "
    "digit either way",
    _LOG + "__run_lines__mutmut_100": "a label's text made again for each row instead of kept: the same text",
    _LOG + "__run_lines__mutmut_101": "the kept texts looked up under None: a run's labels are class names, never "
    "None, so the text is made again for each row, the same",
    **{
        _LOG + f"__run_lines__mutmut_{n}": "strict zips whose lengths are checked already: a row holds one value "
        "per column name, and every record's columns were checked to hold one value a label"
        for n in (20, 23, 24, 25, 27, 28)
    },
    **{
        _LOG + f"__run_lines__mutmut_{n}": "the vectors' array left to numpy's dtype: float64 columns stay float64, "
        "a list with None becomes an object array that orjson writes through _json_default as the same digits "
        "and null; PostgreSQL reads 5 and 5.0 alike"
        for n in (31, 33)
    },
    _LOG + "__run_lines__mutmut_52": "astype(None) for astype(float64): numpy's default dtype is float64",
    **{
        _LOG + f"__run_lines__mutmut_{n}": "nan or NAN written for NaN: PostgreSQL reads a float8 NaN in any case"
        for n in (45, 46, 80, 81)
    },
    _LOG + "__json_default__mutmut_3": "every numpy scalar's item() made a float: only floating ones reach it and "
    "fit (integers and booleans orjson takes itself; the others are no JSON either way)",
    _LOG + "__json_default__mutmut_5": "the wording of the TypeError for a value that is no JSON: the batch is "
    "counted lost and logged either way",
    _LOG + "__json_default__mutmut_6": "the same",
    **{
        _LOG + name: "the sequence number in a spill file's name: names are unique by their nanosecond time and "
        "pid already"
        for name in (
            "ǁLogSpillǁ__init____mutmut_2",
            "ǁLogSpillǁsave__mutmut_25",
            "ǁLogSpillǁsave__mutmut_26",
            "ǁLogSpillǁsave__mutmut_27",
        )
    },
    **{
        _LOG + f"ǁLogSpillǁ_claimable__mutmut_{n}": "the sort key of spill files: names begin with a 20-digit time, "
        "and a claim's suffix only ever follows it"
        for n in (23, 25, 27, 28, 29)
    },
    _LOG + "ǁLogSpillǁreplay__mutmut_2": "replay() with nothing pending answers False instead of True: it is "
    "only called when something is pending",
    _LOG + "ǁLogSpillǁreplay__mutmut_73": "pending set to None instead of False: both falsy",
    _LOG + "ǁPredictionLogWriterǁsubmit__mutmut_7": "a write of zero rows when the queue is exactly at its bound",
    _LOG + "ǁPredictionLogWriterǁ_run__mutmut_3": "_write_pending(None): the limit falls back to "
    "PREDICTION_LOG_BATCH, the value passed",
    _LOG + "ǁPredictionLogWriterǁ_write_or_spill__mutmut_5": "the shadow cleared as '' instead of None: a "
    "spilled record is replayed by _write, which never reads it",
    _LOG + "ǁPredictionLogWriterǁflush__mutmut_3": "flush's limit 11**9 records instead of 10**9: all that is queued "
    "either way",
    _LOG + "ǁPredictionLogWriterǁflush__mutmut_4": "the same, 10**10",
    _LOG + "ǁPredictionLogWriterǁclose__mutmut_3": "the exit's wait for the writer thread unbounded instead of 60 s: "
    "the thread ends as soon as its write is done",
    _LOG + "ǁPredictionLogWriterǁclose__mutmut_4": "the same, 61 s",
    _LOG + "__shadow_record__mutmut_9": "the shadow's latency set before its prediction, overwritten after it",
    _LOG + "__shadow_record__mutmut_22": "the same",
    "registry.services.registration.x_version_fast_form_rebuild__mutmut_41": "`save(update_fields=None)` of a "
    "version locked by select_for_update: the same row afterwards",
    "registry.fast_inference.x_feeds_from_frame__mutmut_33": "reshape(-2, 1) for reshape(-1, 1): numpy takes any "
    "negative size as the one to infer",
    "serving.runtime.x_version_load__mutmut_56": "the same, in the runtime's feeds",
    **{
        f"serving.runtime.x_version_load__mutmut_{n}": "a caller's text column made a numpy str array instead of an "
        "object array: onnxruntime takes both as the same string tensor (the answers are tested equal)"
        for n in (34, 36)
    },
    "serving.runtime.x_version_load__mutmut_47": "None left in a list of numbers made float32: numpy makes it NaN "
    "itself, as the code does",
    **{
        f"serving.runtime.x_version_load__mutmut_{n}": "a pipeline's n_jobs not set to 1 when loaded: one row is "
        "slower with more jobs, the answer the same (and the trainers fit with n_jobs=1 already)"
        for n in (70, 74, 75, 77, 78, 79)
    },
    "registry.fast_inference.x_onnx_convert__mutmut_8": "a text feature's tensor declared of unknown shape instead "
    "of [None, 1]: the session takes the same [rows, 1] feeds",
    "registry.fast_inference.x_onnx_convert__mutmut_30": "ai.onnx.ml 4 allowed instead of 3: the estimators the "
    "trainers make convert to ai.onnx.ml operators of version 1 either way (tested: the opsets declared)",
    **{
        f"registry.fast_inference.x_onnx_convert__mutmut_{n}": "ONNX's float32 probabilities not made float64 before "
        "the subtraction: numpy promotes them to float64 in it, exactly"
        for n in (65, 67)
    },
    **{
        f"registry.services.registration.x__run_registrable__mutmut_{n}": "a related row not joined in the run's "
        "query (select_related): read by one more query, the same values"
        for n in (5, 6)
    },
    "registry.fast_inference.x_onnx_session__mutmut_5": "two inter-op threads instead of one: they serve only "
    "onnxruntime's parallel execution mode, and a session runs sequentially (the intra-op count is tested)",
    **{
        f"registry.fast_inference.x_onnx_session__mutmut_{n}": "onnxruntime's providers left to its default: the "
        "CPU build's default is the CPU provider alone (tested: `get_providers()`)"
        for n in (8, 11)
    },
    **{
        _LOG + name: "an SQL keyword or identifier in another case: PostgreSQL folds unquoted names and keywords"
        for name in (
            "__partitioned__mutmut_10",
            "_prediction_log_partitions__mutmut_7",
            "_prediction_log_partitions__mutmut_8",
            "_prediction_log_partitions__mutmut_10",
        )
    },
    _LOG + "_prediction_log_partitions_ensure__mutmut_12": "a partition's bounds given without a time zone: "
    "Django's PostgreSQL sessions run in UTC, so they are read as UTC",
    _LOG + "_prediction_log_partitions_ensure__mutmut_15": "the same",
    _LOG + "__partitioned__mutmut_13": "`bool(found) or relkind == 'p'`: every PostgreSQL log is partitioned by "
    "its migration; an unpartitioned one is a table no migration makes",
    _PROMOTION + "stage_parse__mutmut_6": "an empty stage read as 'XXXX' instead of '': neither is a choice, "
    "the same refusal",
    _PROMOTION + "environment_parse__mutmut_5": "the same, for an empty environment",
    _PROMOTION + "_stage_set__mutmut_3": "exclude(pk=None) when moving the slot's holder aside: the version being "
    "moved never holds the slot it moves to (refused as 'already in' before), so excluding it changes nothing",
    _PROMOTION + "_stage_write__mutmut_14": "`save(update_fields=None)` writes every column instead of three, of "
    "a version locked by select_for_update: the same row afterwards",
    _PROMOTION + "_compliance_subject__mutmut_7": "the problem text of a valid dataset, which the policies read "
    "only when it is not valid",
    _PROMOTION + "_compliance_subject__mutmut_39": "null percentages over max(rows, 2) instead of max(rows, 1): a "
    "registered version's dataset has two rows at least (a classifier needs two classes)",
    _PROMOTION + "_request_snapshot__mutmut_22": "`if request.compliance or True`: every request is opened with "
    "its compliance evaluation",
    _PROMOTION + "_request_snapshot__mutmut_26": "the same, for `compliant`",
    _PROMOTION + "_request_open__mutmut_32": "a duplicate looked up without the PENDING filter: requests come "
    "newest first, and none for the same version and target can be newer than the pending one that blocks it",
    _PROMOTION + "_request_open__mutmut_50": "`found or True` in the duplicate's message: found is None only if the "
    "request that blocked was decided between the refused insert and the lookup, a race no test can time",
    _PROMOTION + "_request_open__mutmut_51": "the same race: the '?' shown when no pending request is found",
    _PROMOTION + "_request_open__mutmut_53": "the same race, for the target shown",
    _PROMOTION + "_locked_version__mutmut_14": "select_related without the model: one more query, the same objects",
    _PROMOTION + "_locked_version__mutmut_15": "select_related without the dataset: the same",
    _PROMOTION + "_request_open__mutmut_42": "the kind filter of a promotion's duplicate dropped: a canary or "
    "shadow request has no stage, so it never matches one",
    _PROMOTION + "promotion_request_approve__mutmut_136": "exclude(pk=None) when finding the Production version "
    "an approval replaces: the approved version is not in Production then (its from_stage matched)",
    _PROMOTION + "rollback_target__mutmut_12": "exclude(pk=None) of the current version: the filter on an earlier "
    "production_entered_at leaves it out anyway",
    # Accepted, not strictly equivalent: they change how much memory the counts keep, never a client's count.
    _ALLOWED + "6": "clearing the counts at 50,000 keys instead of 50,001 (memory bound)",
    _ALLOWED + "7": "clearing the counts at 50,002 keys instead of 50,001 (memory bound)",
    _ALLOWED + "18": "not dropping the previous window's count (memory, until the bound clears it)",
    _ALLOWED + "21": "dropping a future window's count instead of the previous one's (memory)",
    _ALLOWED + "22": "dropping the window before the previous one instead (memory)",
    # Accepted, not strictly equivalent: the prediction log's paths no test can time or reach as root.
    _LOG + "__alive__mutmut_7": "a spill claimed by another user's process read as dead: the tests run as root, "
    "for whom kill(pid, 0) never meets EPERM",
    _LOG + "ǁLogSpillǁ_size__mutmut_4": "a spill file removed between listing and stat (another process "
    "replaying it): a race",
    _LOG + "ǁLogSpillǁsave__mutmut_44": "removing the half-written file fails too: the second error's words "
    "replace the first's in the log; the batch is counted lost either way",
    _LOG + "ǁLogSpillǁreplay__mutmut_74": "pending left True after a replay: the spill directory listed again "
    "at the next write, finding nothing",
    _LOG + "ǁPredictionLogWriterǁ_replay__mutmut_2": "a replay broken off by an outage read as done: the new batch "
    "is tried, fails the same outage and is spilled after the others (only a database back in between "
    "could reorder them)",
    _LOG + "ǁPredictionLogWriterǁ_layout__mutmut_7": "a refused request's record (version 0) looks its layout up: "
    "one query finding no version 0, the same empty layout",
    _LOG + "ǁPredictionLogWriterǁ_layout__mutmut_12": "the empty layout of an all-categorical version not kept: "
    "one more query a record, the same layout",
    **{
        _LOG + f"ǁPredictionLogWriterǁ_write_or_spill__mutmut_{n}": "the count of a retry that fails with no "
        "database error after a first attempt failed with one: no record does that"
        for n in range(35, 40)
    },
    _LOG + "__shadow_record__mutmut_30": "a shadow's latency 0.1 % high (x 1001 for x 1000)",
    # Accepted: the PostgreSQL advisory lock that serialises writers of the chain, which the group (on SQLite,
    # whose writes are serialised anyway) cannot reach; test_concurrent_writers_keep_one_unbroken_chain
    # checks it on PostgreSQL (CI), with eight concurrent writers.
    **{_AUDIT + f"_lock_chain__mutmut_{n}": "PostgreSQL only: the chain's advisory lock" for n in range(3, 12)},
    # Accepted: the wording and arguments of the warning logged when the broker refuses a delivery (an
    # in-process test cannot take this process's broker down); the delivery stays PENDING and the beat task
    # sends it, which tests/registry/test_webhooks.py checks.
    **{_HOOKS + f"_enqueue__mutmut_{n}": "the broker-down warning's wording or arguments" for n in range(12, 20)},
}


def _scratch_copy(group, files, tests, *, fresh=True):
    """A copy of the tracked files with this group's [tool.mutmut] settings appended to pyproject.toml;
    not fresh, the files copied over the last run's copy (mutmut then makes again the mutants of the
    functions that changed, from the modification times copy2 keeps, and finds the tests that are new)."""
    workdir = SCRATCH / group
    if workdir.exists() and fresh:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in tracked:
        source = ROOT / name
        if source.is_file():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workdir / name)
    sources = sorted({name.split("/")[0] for name in files})
    settings = {
        "source_paths": sources,
        "only_mutate": files,
        "also_copy": [app for app in APPS if app not in sources]
        + ["templates", "tests", "manage.py", "pyproject.toml", "docs", "README.md"],
        "pytest_add_cli_args_test_selection": tests,
        # --reuse-db: the first run migrates the test database, each mutant's process copies it (conftest).
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q", "--reuse-db", "-m", "not worker and not mlflow"],
        "use_git_change_detection": False,
        # A mutant is taken as hung past 4 x (its tests' time + 20 s). mutmut times only the tests' bodies,
        # not their fixtures (a trained, registered and promoted model), so the constant is what keeps a
        # slow fixture from reading as a hang; its default multiplier, 15, spent minutes on each real hang.
        "timeout_multiplier": 4.0,
        "timeout_constant": TIMEOUT_CONSTANT.get(group.removesuffix("-postgresql"), 20.0),
    }
    with open(workdir / "pyproject.toml", "a") as handle:
        handle.write("\n[tool.mutmut]\n")
        for key, value in settings.items():
            handle.write(f"{key} = {json.dumps(value)}\n")
    return workdir


def _results(workdir):
    """{mutant name: status} from `mutmut results --all true`."""
    output = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=workdir, capture_output=True, text=True).stdout
    statuses = {}
    for line in output.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    return statuses


def _postgres(statement, *, drop=False):
    """Run `statement` on the PostgreSQL server (with drop, drop each database it names); False if none answers."""
    import psycopg2

    try:
        admin = psycopg2.connect(f"{POSTGRES_URL}/postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        return False
    admin.autocommit = True  # DROP DATABASE runs outside a transaction (so no `with admin`, which opens one)
    with admin.cursor() as cursor:
        cursor.execute(statement)
        for (name,) in cursor.fetchall() if drop else ():
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()
    return True


def _mutmut_run(group, time_limit, *, postgres, only=(), again=False):
    """Run mutmut over the group in its scratch copy, on PostgreSQL or SQLite, over every mutant or only
    those named; `again`, over the last run's copy with the code and tests as they are now: the mutants
    of changed functions and those not judged yet, then the last run's survivors. ({mutant: status}, finished)"""
    files, tests = GROUPS[group]
    name = _scratch_name(group, "PostgreSQL" if postgres else "SQLite")
    runs = [only]
    if again:
        last = _results(SCRATCH / name)
        runs = [(), sorted(m for m, status in last.items() if status in UNCAUGHT and m not in EQUIVALENT)]
    workdir = _scratch_copy(name, files, tests, fresh=not again)
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(GROUP_ENV.get(group, {}))
    if postgres:
        _postgres(f"DROP DATABASE IF EXISTS test_mutation_{group}")  # a template of an earlier code, made again
        env["DATABASE_URL"] = f"{POSTGRES_URL}/mutation_{group}"
    deadline, finished = time.monotonic() + time_limit, True
    with open(workdir / "mutmut.log", "a" if again else "w") as log:
        for index, names in enumerate(runs):
            if index and not names:
                continue  # no survivors to judge again
            try:
                subprocess.run(
                    ["nice", "-n", "10", MUTMUT, "run", "--max-children", os.environ.get("MUTATION_CHILDREN", "2")]
                    + list(names),
                    cwd=workdir,
                    env=env,
                    timeout=max(deadline - time.monotonic(), 1),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            except subprocess.TimeoutExpired:
                finished = False
                break
    if postgres:  # the copies of mutants killed for their time, and the template
        _postgres(f"SELECT datname FROM pg_database WHERE datname LIKE 'test\\_mutation\\_{group}%'", drop=True)
    return _results(workdir), finished


CAUGHT = ("killed", "timeout")
UNCAUGHT = ("survived", "no tests")


def _merged(runs):
    """One status a mutant from the runs on each database: caught if a run caught it, survived if one ran
    its tests and none caught it (code one database's tests reach, the other's do not, counts once)."""
    merged = {}
    for name in runs[0]:
        statuses = [run.get(name) for run in runs]
        merged[name] = next((status for status in (*CAUGHT, "survived", "no tests") if status in statuses), statuses[0])
    return merged


def _databases(group):
    databases = ["SQLite"]
    if group in POSTGRES_GROUPS:
        if _postgres("SELECT 1"):
            databases.append("PostgreSQL")
        else:
            print(f"{group}: no PostgreSQL at {POSTGRES_URL}: on SQLite only (its PostgreSQL code unreached)")
    return databases


def group_run(group, time_limit):
    databases = _databases(group)
    started = time.monotonic()
    runs, finished = [], True
    for database in databases:
        # A mutant the first database's run caught is caught whatever the second says, and an equivalent one
        # is left out: the second runs only the others (its own code, and what the SQLite run left standing).
        uncaught = (
            sorted(name for name, status in runs[0].items() if status not in CAUGHT and name not in EQUIVALENT)
            if runs
            else ()
        )
        if runs and not uncaught:
            break
        statuses, done = _mutmut_run(group, time_limit, postgres=database == "PostgreSQL", only=uncaught)
        runs.append(statuses)
        finished = finished and done
    return group_score(group, runs, _how("in", started, databases, finished, time_limit))


def group_again(group, time_limit):
    """The last run brought up to date: each database's copy given the code and tests as they are now, its
    changed functions' mutants and those not judged yet run, then its survivors judged again."""
    started, runs, finished = time.monotonic(), [], True
    databases = [d for d in _databases(group) if (SCRATCH / _scratch_name(group, d) / "mutants").is_dir()]
    if not databases:
        sys.exit(f"{group}: no earlier run in {SCRATCH / group} to bring up to date")
    for database in databases:
        statuses, done = _mutmut_run(group, time_limit, postgres=database == "PostgreSQL", again=True)
        runs.append(statuses)
        finished = finished and done
    return group_score(group, runs, _how("again in", started, databases, finished, time_limit))


def _how(words, started, databases, finished, time_limit):
    how = f"{words} {(time.monotonic() - started) / 60:.1f} min on {' and '.join(databases)}"
    return how + ("" if finished else f" (stopped at the {time_limit} s limit)")


def _scratch_name(group, database):
    return f"{group}-postgresql" if database == "PostgreSQL" else group


def group_report(group):
    """The score of the group's last run, read from its scratch copies (a run stopped part way included)."""
    workdirs = [SCRATCH / group, SCRATCH / f"{group}-postgresql"]
    runs = [_results(workdir) for workdir in workdirs if (workdir / "mutants").is_dir()]
    if not runs:
        sys.exit(f"{group}: no run to report in {SCRATCH / group}")
    return group_score(group, runs, "(the last run, from " + " and ".join(str(w) for w in workdirs[: len(runs)]) + ")")


def group_score(group, runs, how):
    statuses = _merged(runs)
    equivalent = {name for name in statuses if name in EQUIVALENT}
    counted = {name: status for name, status in statuses.items() if name not in equivalent}
    killed = sum(status == "killed" for status in counted.values())
    # "no tests": no test of the group runs the mutated function, so none can catch it: counted as survived.
    survived = sorted(name for name, status in counted.items() if status in ("survived", "no tests"))
    timeouts = sum(status == "timeout" for status in counted.values())
    judged = killed + len(survived) + timeouts
    score = 100.0 * (killed + timeouts) / judged if judged else 0.0
    print(
        f"{group}: {score:.1f} % ({killed} killed of {judged}; {len(survived)} survived, {timeouts} timed out, "
        f"{len(equivalent)} equivalent left out, {len(counted) - judged} not run) {how}",
        flush=True,
    )
    for name in survived:
        print(f"    {'no tests' if counted[name] == 'no tests' else 'survived'}: {name}")
    return score


def main(argv):
    report, again = "--report" in argv, "--again" in argv
    groups = [group for group in argv if group not in ("--report", "--again")] or list(GROUPS)
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
        sys.exit(f"unknown group(s) {', '.join(unknown)}; choose from: {', '.join(GROUPS)}")
    time_limit = int(os.environ.get("MUTATION_TIME_LIMIT", "1800"))
    for group in groups:
        if report:
            group_report(group)
        elif again:
            group_again(group, time_limit)
        else:
            group_run(group, time_limit)


if __name__ == "__main__":
    main(sys.argv[1:])
