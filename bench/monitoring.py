"""Monitoring's drift job against Evidently 0.7 on a million logged rows, and its sketch and aggregate paths.

    .venv/bin/python bench/monitoring.py [--rows 1000000] [--features 10] [--large-rows 10000000]
                                         [--database-url postgres://postgres@127.0.0.1:5432/mlops_bench_monitoring]

Needs PostgreSQL (the log's partitions, COPY). Makes a throwaway database (dropped at the end unless
--keep), registers a model with `--features` numeric features, gives it a reference of `--rows` rows
(drift in some features, not in others), and loads `--rows` prediction-log rows over the last 24 hours
into the real table through COPY. Then, each in its own process, one after the other:
  - ours: `drift_compute` (the exact job the schedule runs) from the table to stored results;
  - Evidently (bench/.venv-evidently, from bench/requirements-evidently.txt): `Report([DataDriftPreset()])`
    on the same reference and current data, its DataFrames built before the clock starts;
in turns (`--turns`, median of each); and again with Evidently told to use PSI, Jensen–Shannon and KS,
to check those numbers too. It prints time and peak memory (VmHWM of each process) and whether every
number agrees: PSI and JS to 1e-12, Wasserstein and KS p-values to a relative 1e-9, the same verdict on
every feature and for the dataset.

Then the sketch path: a second model with `--rows` rows over 30 days, its hourly aggregates and
sketches built, drift over the 30 days from the sketches; again after growing the log to `--large-rows`.
And the hourly aggregates of the day of `--rows` rows. The last line is a JSON summary.
"""

import argparse
import datetime as dt
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BASE = BENCH.parent
EVIDENTLY_PYTHON = BENCH / ".venv-evidently" / "bin" / "python"
MODEL = "bench-drift"
SKETCH_MODEL = "bench-sketch"
# Per feature: (shift of the mean, factor on the spread) of the current data; four of ten drift.
SHIFTS = [
    (0.25, 1.0),
    (0.0, 1.3),
    (0.1, 1.0),
    (0.5, 1.0),
    (0.0, 1.0),
    (0.0, 1.0),
    (0.0, 1.0),
    (0.0, 1.0),
    (0.0, 1.0),
    (0.0, 1.0),
]


def peak_mb():
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- The two contenders, each in its own process -----------------------------------------------------


def child_ours(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlops_site.settings")
    sys.path.insert(0, str(BASE))
    import django

    django.setup()
    from monitoring.models import DriftResult
    from monitoring.services import drift_compute
    from monitoring.windows import Window

    window = Window(label="24h", start=dt.datetime.fromisoformat(args.start), end=dt.datetime.fromisoformat(args.end))
    started = time.perf_counter()
    run = drift_compute(model_name=MODEL, version=1, window=window, trigger="cli")
    seconds = time.perf_counter() - started
    memory = peak_mb()
    results = {}
    for result in DriftResult.objects.filter(run=run, role="feature"):
        results.setdefault(result.name, {})[result.method] = {"score": result.score, "drifted": result.drifted}
        if result.verdict:
            results[result.name]["verdict"] = result.method
    # KS is no default at this size; computed once more, untimed, to check its p-values too.
    ks_run = drift_compute(model_name=MODEL, version=1, window=window, method="ks", trigger="cli")
    for result in DriftResult.objects.filter(run=ks_run, role="feature", method="ks"):
        results[result.name]["ks"] = {"score": result.score, "drifted": result.drifted}
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": memory,
                "rows": run.rows,
                "dataset_drift": run.dataset_drift,
                "share": run.share_drifted,
                "columns": results,
            }
        )
    )


def child_evidently(args):
    import numpy as np
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = np.load(Path(args.data) / "reference.npy")
    current = np.load(Path(args.data) / "current.npy")
    columns = [f"f{i}" for i in range(reference.shape[1])]
    reference_frame = pd.DataFrame(reference, columns=columns)
    current_frame = pd.DataFrame(current, columns=columns)
    del reference, current
    definition = DataDefinition(numerical_columns=columns)
    method = None if args.method == "auto" else args.method
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(method=method)], include_tests=True).run(
        Dataset.from_pandas(current_frame, data_definition=definition),
        Dataset.from_pandas(reference_frame, data_definition=definition),
    )
    seconds = time.perf_counter() - started
    output = snapshot.dict()
    scores, drifted, dataset_drift, share = {}, {}, None, None
    for metric in output["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            scores[config["column"]] = float(metric["value"])
        elif config["type"].endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    for test in output["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith("ValueDrift"):
            drifted[params["column"]] = test["status"] == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_drift = test["status"] == "FAIL"
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_mb(),
                "method": args.method,
                "scores": scores,
                "drifted": drifted,
                "dataset_drift": dataset_drift,
                "share": share,
            }
        )
    )


def run_child(command, env):
    completed = subprocess.run(command, cwd=BASE, env=env, capture_output=True, text=True)
    if completed.returncode:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"{command[1:4]} failed")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --- Setting up the data -----------------------------------------------------------------------------


def make_data(np, rows, features):
    rng = np.random.default_rng(2026)
    means = rng.uniform(-50, 200, features)
    spreads = rng.uniform(1, 40, features)
    reference = rng.normal(means, spreads, (rows, features))
    shifts = (SHIFTS * ((features // len(SHIFTS)) + 1))[:features]
    current = rng.normal(
        means + np.array([s for s, _ in shifts]) * spreads, spreads * np.array([f for _, f in shifts]), (rows, features)
    )
    return np.round(reference, 6), np.round(current, 6), means, spreads


def register_model(np, pd, reference, admin):
    """A model trained on a sample of the reference, registered; its drift reference made of all rows."""
    from experiments.services import dataset_version_upload, run_launch
    from monitoring.services import drift_reference_build
    from registry.services import model_version_register

    columns = [f"f{i}" for i in range(reference.shape[1])]
    sample = pd.DataFrame(reference[:4000], columns=columns)
    sample["label"] = np.where(
        sample[columns[0]] + sample[columns[3]] > np.median(sample[columns[0]] + sample[columns[3]]), "high", "low"
    )
    version = dataset_version_upload(
        name=f"{MODEL}-data", content=sample.to_csv(index=False).encode(), target="label", by=admin
    )[0]
    run = run_launch(
        experiment=MODEL, dataset=version.name, algorithm="logistic_regression", params={}, inline=True, by=admin
    )
    model_version = model_version_register(run_id=run.pk, model_name=MODEL, by=admin)
    frame = pd.DataFrame(reference, columns=columns)
    frame["label"] = np.where(
        frame[columns[0]] + frame[columns[3]] > np.median(frame[columns[0]] + frame[columns[3]]), "high", "low"
    )
    started = time.perf_counter()
    drift_reference_build(version=model_version, frame=frame)
    return model_version, time.perf_counter() - started


def copy_log_rows(np, pd, current, version, *, start, end, model_name=MODEL):
    """The rows a serving process would log, written with COPY (inputs JSON, vector, prediction...)."""
    import io as _io

    import joblib
    from django.db import connection

    from core.storage import artifact_read_verified

    pipeline = joblib.load(_io.BytesIO(artifact_read_verified(version.artifact_path, version.artifact_sha256)))
    columns = [f"f{i}" for i in range(current.shape[1])]
    rows = current.shape[0]
    span = (end - start).total_seconds()
    offsets = np.sort(np.random.default_rng(3).uniform(0, span, rows))
    chunk = 100_000
    with connection.cursor() as cursor:
        for first in range(0, rows, chunk):
            block = current[first : first + chunk]
            probabilities = pipeline.predict_proba(pd.DataFrame(block, columns=columns))
            labels = pipeline.classes_[probabilities.argmax(axis=1)]
            buffer = io.StringIO()
            for index in range(len(block)):
                values = block[index].tolist()
                moment = start + dt.timedelta(seconds=float(offsets[first + index]))
                inputs = json.dumps(dict(zip(columns, values, strict=True))).replace("\\", "\\\\")
                probs = json.dumps(dict(zip(pipeline.classes_.tolist(), probabilities[index].tolist(), strict=True)))
                vector = "{" + ",".join(repr(v) for v in values) + "}"
                buffer.write(
                    f"r{first + index}\t0\t{model_name}\t{version.version}\tprimary\t{inputs}\t{vector}\t"
                    f'"{labels[index]}"\t{probs}\t{float(probabilities[index].max())!r}\t1.5\t\t{moment.isoformat()}\n'
                )
            buffer.seek(0)
            cursor.cursor.copy_expert(
                "COPY serving_predictionlog (request_id, row, model_name, version, deployment_mode, inputs, features,"
                " prediction, probabilities, confidence, latency_ms, error, created_at) FROM STDIN",
                buffer,
            )


def generate_log_rows(*, model_name, version, rows, start, end, means, spreads, seed):
    """`rows` rows made by PostgreSQL itself (vector and prediction, no JSON inputs): volume for the sketch path.
    Features drawn like the reference's, the first and fourth shifted by half a standard deviation."""
    from django.db import connection

    vector = ", ".join(
        f"{mean + (0.5 * spread if i in (0, 3) else 0.0)!r} + {spread!r} * sqrt(-2 * ln(1 - random()))"
        " * cos(2 * pi() * random())"
        for i, (mean, spread) in enumerate(zip(means.tolist(), spreads.tolist(), strict=True))
    )
    span = (end - start).total_seconds()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [seed])
        cursor.execute(
            "INSERT INTO serving_predictionlog (request_id, row, model_name, version, deployment_mode, features,"
            " prediction, confidence, latency_ms, error, created_at)"
            f" SELECT 'g' || g, 0, %s, %s, 'primary', ARRAY[{vector}],"
            " CASE WHEN random() < 0.5 THEN '\"high\"'::jsonb ELSE '\"low\"'::jsonb END,"
            " 0.5 + random() / 2, 1 + random() * 5, '', %s + (g * %s / %s) * interval '1 second'"
            " FROM generate_series(0, %s - 1) AS g",
            [model_name, version, start, span, rows, rows],
        )


# --- Comparing -----------------------------------------------------------------------------------------


def agreement(ours, evidently_runs):
    """Every number and verdict of ours against Evidently's; returns (all agree, lines to print)."""
    lines, agree = [], True
    tolerance = {
        "psi": ("abs", 1e-12),
        "jensenshannon": ("abs", 1e-12),
        "wasserstein": ("rel", 1e-9),
        "ks": ("rel", 1e-9),
    }
    for run in evidently_runs:
        method = run["method"]
        worst = 0.0
        for column, score in sorted(run["scores"].items()):
            mine = ours["columns"][column]
            key = mine["verdict"] if method == "auto" else method
            if key not in mine:
                lines.append(f"  {method}: ours has no {key} for {column}")
                agree = False
                continue
            our_score = mine[key]["score"]
            kind, limit = tolerance[key]
            difference = abs(our_score - score) if kind == "abs" else abs(our_score - score) / max(abs(score), 1e-300)
            if our_score == score:
                difference = 0.0
            worst = max(worst, difference)
            if difference > limit:
                agree = False
                lines.append(f"  {method} {column}: ours {our_score!r} Evidently {score!r}")
            if mine[key]["drifted"] != run["drifted"][column]:
                agree = False
                lines.append(f"  {column}: ours drifted={mine[key]['drifted']} Evidently {run['drifted'][column]}")
        if method == "auto" and (
            ours["dataset_drift"] != run["dataset_drift"] or abs(ours["share"] - run["share"]) > 1e-12
        ):
            agree = False
            theirs = f"{run['dataset_drift']} ({run['share']})"
            lines.append(f"  dataset: ours {ours['dataset_drift']} ({ours['share']}), Evidently {theirs}")
        measure = "relative" if method in ("auto", "wasserstein", "ks") else "absolute"
        lines.append(f"  {method:14s} scores: largest {measure} difference {worst:.3g}; verdicts compared per column")
    return agree, lines


def exact_part(args, env, workdir, start, end, skip):
    """Ours and Evidently on the same million rows, in turns; returns (time ratio, memory ratio, agree)."""
    ours_command = [sys.executable, str(Path(__file__)), "--child", "ours", "--start", start.isoformat()]
    ours_command += ["--end", end.isoformat()]
    evidently_command = [str(EVIDENTLY_PYTHON), str(Path(__file__)), "--child", "evidently", "--data", str(workdir)]
    # Turns: ours, Evidently's default, ours, ... (this machine's speed drifts; each side gets the same drift).
    ours_runs, default_runs = [], []
    for turn in range(args.turns):
        ours_runs.append(run_child(ours_command, env))
        if "evidently" not in skip:
            default_runs.append(run_child([*evidently_command, "--method", "auto"], env))
        print(
            f"  turn {turn + 1}: ours {ours_runs[-1]['seconds']:.2f} s"
            + (f", Evidently {default_runs[-1]['seconds']:.2f} s" if default_runs else "")
        )
    ours = ours_runs[0]
    ours = {**ours, "seconds": statistics.median(r["seconds"] for r in ours_runs)}
    ours["peak_mb"] = max(r["peak_mb"] for r in ours_runs)
    runs = []
    if default_runs:
        runs.append(
            {
                **default_runs[0],
                "seconds": statistics.median(r["seconds"] for r in default_runs),
                "peak_mb": max(r["peak_mb"] for r in default_runs),
            }
        )
        for method in ["psi", "jensenshannon", "ks"]:
            runs.append(run_child([*evidently_command, "--method", method], env))
    print(f"\nexact drift of {args.rows:,} rows x {args.features} features against a reference of {args.rows:,} rows")
    print(f"{'':28s}{'seconds':>10s}{'peak MB':>10s}   (median of {args.turns} turns for ours and Evidently's default)")
    print(f"{'ours (drift_compute)':28s}{ours['seconds']:10.2f}{ours['peak_mb']:10.0f}")
    for run in runs:
        print(f"{'Evidently ' + run['method']:28s}{run['seconds']:10.2f}{run['peak_mb']:10.0f}")
    verdicts = ", ".join(
        f"{c}={'drift' if v[v['verdict']]['drifted'] else 'ok'}" for c, v in sorted(ours["columns"].items())
    )
    print(f"ours: dataset drift {ours['dataset_drift']} (share {ours['share']:.2f}); {verdicts}")
    if not runs:
        return None, None, None
    default = runs[0]
    agree, lines = agreement(ours, runs)
    time_ratio = default["seconds"] / ours["seconds"]
    memory_ratio = default["peak_mb"] / ours["peak_mb"]
    print(f"Evidently (its default tests) / ours: time {time_ratio:.1f}x, peak memory {memory_ratio:.1f}x")
    print(f"agreement: {'every number and verdict equal' if agree else 'DIFFERENT'}")
    print("\n".join(lines))
    return time_ratio, memory_ratio, agree


def aggregates_part(args, start):
    """The hourly aggregates of the day of rows (and with their sketches); returns the aggregates' seconds."""
    from monitoring.services import hours_compute
    from monitoring.windows import hour_floor

    day_start = hour_floor(start)
    day_end = day_start + dt.timedelta(hours=25)
    started = time.perf_counter()
    result = hours_compute(model_name=MODEL, start=day_start, end=day_end, sketches=False)
    seconds = time.perf_counter() - started
    print(f"\nhourly aggregates of a day of {args.rows:,} rows: {seconds:.2f} s ({result.aggregates} hour rows)")
    started = time.perf_counter()
    result = hours_compute(model_name=MODEL, start=day_start, end=day_end, sketches=True)
    print(
        f"  with the sketches of {args.features} features too: {time.perf_counter() - started:.2f} s "
        f"({result.sketches} sketch rows)"
    )
    return seconds


def _sketch_model(version, admin):
    """A second model sharing the first one's reference (the registry rows copied, not trained again)."""
    from monitoring.models import DriftReference, ReferenceColumn
    from registry.models import ModelVersion, RegisteredModel

    model = RegisteredModel.objects.create(name=SKETCH_MODEL, created_by=admin)
    source = ModelVersion.objects.get(pk=version.pk)
    skipped = ("id", "model", "version", "stage", "mlflow_version")
    copy = ModelVersion.objects.create(
        **{f.name: getattr(source, f.name) for f in ModelVersion._meta.fields if f.name not in skipped},
        model=model,
        version=1,
    )
    reference = DriftReference.objects.get(version=source)
    columns = list(reference.columns.all())
    reference.pk, reference.version = None, copy
    reference.save()
    for column in columns:
        column.pk, column.reference = None, reference
    ReferenceColumn.objects.bulk_create(columns)
    return reference


def sketch_part(args, version, admin, now, means, spreads):
    """Drift over 30 days from the hourly sketches, with --rows and then --large-rows rows logged."""
    from django.db import connection

    from monitoring.services import drift_compute, hours_compute
    from monitoring.windows import hour_floor, window_parse

    _sketch_model(version, admin)
    month_end = hour_floor(now)
    month_start = month_end - dt.timedelta(days=30)
    seconds, logged = {}, 0
    for target in (args.rows, args.large_rows):
        started = time.perf_counter()
        generate_log_rows(
            model_name=SKETCH_MODEL,
            version=1,
            rows=target - logged,
            start=month_start,
            end=month_end,
            means=means,
            spreads=spreads,
            seed=0.1 + logged / 1e9,
        )
        logged = target
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE serving_predictionlog")
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        result = hours_compute(model_name=SKETCH_MODEL, start=month_start, end=month_end)
        built = time.perf_counter() - started
        window = window_parse("30d", now=month_end)
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            run = drift_compute(model_name=SKETCH_MODEL, version=1, window=window, kind="sketch", trigger="cli")
            timings.append(time.perf_counter() - started)
        seconds[target] = min(timings)
        print(
            f"\nsketch path, {logged:,} rows logged over 30 days (made in {loaded:.0f} s; {result.hours} hours of "
            f"aggregates and {result.sketches} sketches built in {built:.1f} s):\n  drift over 30 days from the "
            f"sketches: {min(timings):.3f} s (best of 3: {', '.join(f'{t:.3f}' for t in timings)}; {run.rows:,} rows, "
            f"{run.n_drifted} of {run.n_columns} features drifted)"
        )
    return seconds[args.rows], seconds[args.large_rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--large-rows", type=int, default=10_000_000, help="log size of the second sketch measurement")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/mlops_bench_monitoring")
    parser.add_argument("--keep", action="store_true", help="keep the database and work files")
    parser.add_argument("--turns", type=int, default=3, help="turns of ours and Evidently's default test")
    parser.add_argument("--skip", default="", help="parts to leave out, comma-separated: evidently, aggregates, sketch")
    parser.add_argument("--child", choices=["ours", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--method", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "ours":
        return child_ours(args)
    if args.child == "evidently":
        return child_evidently(args)
    if not args.database_url.startswith("postgres"):
        raise SystemExit("bench/monitoring.py needs PostgreSQL (--database-url postgres://...)")
    skip = set(filter(None, args.skip.split(",")))
    if "evidently" not in skip:
        subprocess.run([sys.executable, str(BENCH / "evidently_golden.py"), "--only-venv"], check=True)

    import dj_database_url
    import psycopg2

    database = dj_database_url.parse(args.database_url)
    server = psycopg2.connect(
        dbname="postgres",
        user=database["USER"],
        password=database["PASSWORD"] or None,
        host=database["HOST"],
        port=database["PORT"] or 5432,
    )
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{database["NAME"]}"')
        cursor.execute(f'CREATE DATABASE "{database["NAME"]}"')
    workdir = Path(tempfile.mkdtemp(prefix="mlops-bench-monitoring-"))
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "MLOPS_VAR_DIR": str(workdir / "var"),
        "PREDICTION_LOG_RETENTION_DAYS": "60",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "mlops_site.settings"
    sys.path.insert(0, str(BASE))
    import django

    django.setup()
    import numpy as np
    import pandas as pd
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, connections
    from django.utils import timezone

    from serving.predlog import prediction_log_partitions_ensure

    try:
        print(f"database {database['NAME']}, work files {workdir}")
        call_command("migrate", verbosity=0)
        admin = get_user_model().objects.create_superuser("bench", password="x")
        reference, current, means, spreads = make_data(np, args.rows, args.features)
        np.save(workdir / "reference.npy", reference)
        np.save(workdir / "current.npy", current)
        version, reference_seconds = register_model(np, pd, reference, admin)
        print(f"drift reference of {args.rows:,} rows x {args.features} built in {reference_seconds:.1f} s")
        now = timezone.now().replace(microsecond=0)
        start, end = now - dt.timedelta(hours=24), now
        prediction_log_partitions_ensure(start=(now - dt.timedelta(days=31)).date(), end=now.date())
        started = time.perf_counter()
        copy_log_rows(np, pd, current, version, start=start, end=end)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE serving_predictionlog")
        print(f"{args.rows:,} prediction-log rows loaded by COPY in {time.perf_counter() - started:.1f} s")
        del reference, current

        time_ratio, memory_ratio, agree = exact_part(args, env, workdir, start, end, skip)
        aggregates_seconds = None if "aggregates" in skip else aggregates_part(args, start)
        sketch_1m = sketch_10m = None
        if "sketch" not in skip:
            sketch_1m, sketch_10m = sketch_part(args, version, admin, now, means, spreads)
        summary = {
            "exact_time_ratio": None if time_ratio is None else round(time_ratio, 2),
            "exact_memory_ratio": None if memory_ratio is None else round(memory_ratio, 2),
            "agree": agree,
            "sketch_30d_seconds_1m": None if sketch_1m is None else round(sketch_1m, 4),
            "sketch_30d_seconds_10m": None if sketch_10m is None else round(sketch_10m, 4),
            "aggregates_day_seconds": None if aggregates_seconds is None else round(aggregates_seconds, 3),
        }
        print(json.dumps(summary))
    finally:
        connections.close_all()
        if not args.keep:
            with server.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{database["NAME"]}"')
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
