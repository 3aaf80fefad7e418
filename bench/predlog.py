"""What the prediction log costs a row by itself, part by part, away from the server: the figure to
set beside what it costs in the running server on shared cores (bench/serving.py's "srv µs" and "db µs").

    .venv/bin/python bench/predlog.py [--postgres SERVER_URL] [--requests 20000] [--rounds 3]

Sets up the bench's forest (bench/serving.py's setup) in a throwaway store, answers `--requests`
single-row predictions and 20 of 1,000 rows through `serving.predict` (the records the request path
hands to the writer, kept here instead of queued), then writes them with the writer's own `_write` in
writes of 100, 1,000 and 5,000 rows (5,000: the writer's largest), `--rounds` times in turns, each write
one transaction, as the writer does. A row costs: this thread's CPU writing it ("writer": building the
COPY text, measured on its own too, sending it and committing; SQLite builds inside its INSERT) and, on
PostgreSQL, its backend's CPU read from /proc ("db"). Medians of the rounds.
"""

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BASE = Path(__file__).resolve().parents[1]
# bench/serving.py's setup and helpers, under another name than the `serving` app it would hide.
_spec = importlib.util.spec_from_file_location("bench_serving", BASE / "bench" / "serving.py")
bench = importlib.util.module_from_spec(_spec)
sys.path.insert(0, str(BASE / "bench"))  # its own `import loadgen`
_spec.loader.exec_module(bench)
sys.path[0] = str(BASE)


def _records(requests):
    """The records `requests` single-row and 20 thousand-row predictions hand to the log writer."""
    from serving import predlog
    from serving.api import native_payload
    from serving.predict import predict

    kept = []
    predlog.writer.submit = kept.append  # this process's writer only: what would be queued is kept
    for rows, count in ((1, requests), (1000, 20)):
        payload, kind = native_payload({"instances": [bench.ROW] * rows})
        for _ in range(count):
            predict(model_name="iris-rf", payload=payload, kind=kind)
    return kept[:requests], kept[requests:]


def _write_round(records, per_write, database):
    """(writer, of it building, database) CPU µs a row for `records` written `per_write` rows a write."""
    from django.db import connection

    from serving import predlog

    writer = predlog.writer
    rows = predlog._row_count(records)
    batches, batch, count = [], [], 0
    for record in records:
        batch.append(record)
        count += predlog._row_count([record])
        if count >= per_write:
            batches.append(batch)
            batch, count = [], 0
    if batch:
        batches.append(batch)
    build = 0.0
    if connection.vendor == "postgresql":
        adapt = connection.ops.adapt_datetimefield_value
        started = time.thread_time()
        for batch in batches:
            "".join(predlog._copy_lines(batch, writer._layout, adapt))
        build = time.thread_time() - started
    backends = bench._cpu_ticks(database=database) if database else {}
    started = time.thread_time()
    for batch in batches:
        writer._write(batch)
    write = time.thread_time() - started
    own = bench._cpu_seconds_since(backends, bench._cpu_ticks(database=database)) if database else float("nan")
    return write / rows * 1e6, build / rows * 1e6, own / rows * 1e6


def _empty(model):
    """Each round writes into an empty table: PostgreSQL's TRUNCATE leaves no dead rows behind for the next
    round's inserts and indexes to step over, as a DELETE would."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {connection.ops.quote_name(model._meta.db_table)}")
    else:
        model.objects.all().delete()


def _measure(args, database):
    import django

    django.setup()
    from django.db import connection

    from serving.models import PredictionLog

    single, thousands = _records(args.requests)
    kinds = [("1-row requests", single, (100, 1000, 5000)), ("1,000-row requests", thousands, (1000, 5000))]
    results = {(kind, per): [] for kind, _, writes in kinds for per in writes}
    for _ in range(args.rounds):
        for kind, records, writes in kinds:
            for per in writes:
                results[(kind, per)].append(_write_round(records, per, database))
                _empty(PredictionLog)
    connection.close()
    store = "PostgreSQL (COPY)" if database else "SQLite (executemany)"
    print(f"\nThe prediction log's own cost a row, {store}, medians of {args.rounds} rounds, alone on the machine")
    header = ("records".ljust(18), "rows a write", "writer µs", "of it building", "db µs", "total µs")
    widths = [18, 12, 9, 14, 6, 8]
    print("| " + " | ".join(f"{name:>{width}}" for name, width in zip(header, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * width for width in widths) + " |")
    for (kind, per), runs in results.items():
        kind = kind.ljust(18)
        write, build, own = (statistics.median(run[i] for run in runs) for i in range(3))
        total = write + (own if database else 0.0)
        measured = (f"{build:.1f}", f"{own:.1f}") if database else ("-", "-")  # SQLite: no COPY text, no backend
        cells = [kind, f"{per:,}", f"{write:.1f}", *measured, f"{total:.1f}"]
        print("| " + " | ".join(f"{cell:>{width}}" for cell, width in zip(cells, widths, strict=True)) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", metavar="SERVER_URL", help="the store in a new database on this server")
    args = parser.parse_args()
    var, env, database, _forms = bench.setup_store("mlops-bench-predlog-", args.postgres)
    os.environ.clear()
    os.environ.update(env, DJANGO_SETTINGS_MODULE="mlops_site.settings")  # Django runs in this process
    try:
        _measure(args, database)
    finally:
        shutil.rmtree(var, ignore_errors=True)
        if database:
            bench._postgres_drop(args.postgres, database)


if __name__ == "__main__":
    main()
