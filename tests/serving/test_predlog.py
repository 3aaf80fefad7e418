"""The prediction log writer as the serving processes run it: queued records written in batches."""

import os
import signal

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from serving.models import PredictionLog
from serving.predlog import LogRecord, PredictionLogWriter

pytestmark = pytest.mark.django_db(transaction=True)


def _record(index, rows=1):
    return LogRecord(
        request_id=f"req-{index}",
        model_name="iris-clf",
        version=1,
        mode="primary",
        created_at=timezone.now(),
        latency_ms=0.4,
        columns={"petal_length_cm": [1.4 + i for i in range(rows)], "petal_width_cm": [0.2] * rows},
        labels=["setosa"] * rows,
        probabilities=np.array([[0.9, 0.1]] * rows, dtype=np.float32),
        classes=["setosa", "versicolor"],
    )


@pytest.fixture
def writer(settings):
    settings.PREDICTION_LOG_SYNC = False
    writer = PredictionLogWriter()
    yield writer
    writer.close()  # the writer thread, if a test started one, ends and closes its connection


def test_text_numbers_and_missing_values_come_back_as_they_were_sent(writer):
    """COPY's text format (PostgreSQL) and SQLite's parameters both keep every character: backslashes,
    tabs, line breaks, quotes and non-ASCII in inputs, labels and errors; None as null; NaN as null."""
    odd = 'a\\b\tc\nd\re "q" é \\N'
    record = _record(1, rows=2)
    record.columns = {"plan": [odd, None], "petal_width_cm": np.array([0.25, np.nan])}
    record.labels = [odd, "setosa"]
    record.classes = [odd, "setosa"]
    writer._layouts[("iris-clf", 1)] = ("petal_width_cm",)  # the typed vector of numeric features
    writer._queue.put(record)
    writer._queue.put(LogRecord("req-err", "iris-clf", 1, "primary", timezone.now(), 0.1, error=odd))

    writer.flush()

    first, second = PredictionLog.objects.filter(request_id="req-1").order_by("row")
    assert first.inputs == {"plan": odd, "petal_width_cm": 0.25}
    assert second.inputs == {"plan": None, "petal_width_cm": None}
    assert first.prediction == odd
    assert first.predicted_index == 0
    assert first.probabilities == {odd: pytest.approx(0.9), "setosa": pytest.approx(0.1)}
    assert first.confidence == pytest.approx(0.9)
    assert list(first.features) == [0.25]
    assert np.isnan(second.features[0])
    assert (first.row, first.model_name, first.version, first.deployment_mode) == (0, "iris-clf", 1, "primary")
    assert first.latency_ms == pytest.approx(0.4)
    assert PredictionLog.objects.get(request_id="req-err").error == odd


def test_queued_records_are_written_in_multi_row_statements(writer):
    for index in range(600):  # more rows than one statement takes
        writer._queue.put(_record(index, rows=2))
    writer._queue.put(LogRecord("req-bad", "iris-clf", 1, "primary", timezone.now(), 0.1, error="missing feature"))

    writer.flush()

    assert PredictionLog.objects.count() == 1201
    row = PredictionLog.objects.get(request_id="req-7", row=1)
    assert row.inputs == {"petal_length_cm": pytest.approx(2.4), "petal_width_cm": 0.2}
    assert row.prediction == "setosa"
    assert row.probabilities == {"setosa": pytest.approx(0.9), "versicolor": pytest.approx(0.1)}
    assert row.confidence == pytest.approx(0.9)
    assert PredictionLog.objects.get(request_id="req-bad").error == "missing feature"


def test_a_batch_mixing_versions_deployments_and_errors_keeps_each_rows_own_layout_in_order(writer):
    """Consecutive records of one layout are built together (_copy_lines): a record that differs from the one
    before by its deployment, classes, version or features only, or is refused, is built on its own
    terms, and every row comes out in the order queued."""
    records = [_record(index) for index in range(1, 16)]
    records[1] = _record(2, rows=2)
    records[2].mode = "canary"
    records[4].classes, records[4].labels = ["50%", "a%sb"], ["a%sb"]  # '%' in a class: the JSON template's
    records[6].version = 2  # the same features, another vector
    records[8].columns = {**records[8].columns, "plan": ["basic"]}
    records[10].error = "refused after predicting"  # labels and all
    records[12].model_name = "iris-other"
    records[14].labels = records[14].probabilities = None  # nothing predicted, no error: one empty row
    writer._layouts[("iris-clf", 1)] = ("petal_length_cm", "petal_width_cm")
    writer._layouts[("iris-clf", 2)] = ("petal_width_cm",)
    writer._layouts[("iris-other", 1)] = ()
    for record in records:
        writer._queue.put(record)

    writer.flush()

    rows = list(PredictionLog.objects.order_by("id"))
    assert [(r.request_id, r.row, r.version, r.deployment_mode, r.prediction) for r in rows] == [
        ("req-1", 0, 1, "primary", "setosa"),
        ("req-2", 0, 1, "primary", "setosa"),
        ("req-2", 1, 1, "primary", "setosa"),
        ("req-3", 0, 1, "canary", "setosa"),
        ("req-4", 0, 1, "primary", "setosa"),
        ("req-5", 0, 1, "primary", "a%sb"),
        ("req-6", 0, 1, "primary", "setosa"),
        ("req-7", 0, 2, "primary", "setosa"),
        ("req-8", 0, 1, "primary", "setosa"),
        ("req-9", 0, 1, "primary", "setosa"),
        ("req-10", 0, 1, "primary", "setosa"),
        ("req-11", 0, 1, "primary", None),
        ("req-12", 0, 1, "primary", "setosa"),
        ("req-13", 0, 1, "primary", "setosa"),
        ("req-14", 0, 1, "primary", "setosa"),
        ("req-15", 0, 1, "primary", None),
    ]
    assert (rows[13].model_name, rows[13].features) == ("iris-other", None)
    assert (rows[15].inputs, rows[15].probabilities, rows[15].error) == (None, None, "")
    assert list(rows[2].features) == [pytest.approx(2.4), 0.2]
    assert rows[2].inputs == {"petal_length_cm": pytest.approx(2.4), "petal_width_cm": 0.2}
    assert (rows[5].predicted_index, rows[5].confidence) == (1, pytest.approx(0.9))
    assert rows[5].probabilities == {"50%": pytest.approx(0.9), "a%sb": pytest.approx(0.1)}
    assert rows[6].probabilities == {"setosa": pytest.approx(0.9), "versicolor": pytest.approx(0.1)}
    assert list(rows[7].features) == [0.2]
    assert list(rows[8].features) == [pytest.approx(1.4), 0.2]
    assert rows[9].inputs == {"petal_length_cm": pytest.approx(1.4), "petal_width_cm": 0.2, "plan": "basic"}
    assert (rows[11].error, rows[11].inputs) == ("refused after predicting", None)


def test_a_log_that_falls_behind_is_written_by_the_requests_themselves(writer, settings):
    """Requests faster than the database: the queue never holds more than PREDICTION_LOG_QUEUE_MAX rows, the
    request that finds it over writing a batch in its own time (backpressure), and nothing is lost."""
    settings.PREDICTION_LOG_FLUSH_SECONDS = 3600  # the writer thread sleeps through the test
    settings.PREDICTION_LOG_QUEUE_MAX = 50
    pending = []
    for index in range(40):
        writer.submit(_record(index, rows=3))
        pending.append(writer._pending_rows)

    # 17 records of 3 rows were 51, one over: that request wrote the oldest record (3 rows) itself, and so on.
    assert pending[15:19] == [48, 48, 48, 48]
    assert max(pending) == 48
    assert PredictionLog.objects.count() == 120 - writer._pending_rows
    writer.flush()
    assert writer._pending_rows == 0
    assert PredictionLog.objects.count() == 120


def test_the_writer_writes_a_bounded_number_of_rows_at_a_time(writer, monkeypatch):
    """A long queue is written a few thousand rows at a time, so a request waiting to write its overflow
    (backpressure) never waits behind one huge transaction."""
    from serving import predlog

    monkeypatch.setattr(predlog, "_ROWS_PER_WRITE", 10)
    sizes = []
    write = writer._write
    monkeypatch.setattr(writer, "_write", lambda records: sizes.append(predlog._row_count(records)) or write(records))
    for index in range(30):
        writer._queue.put(_record(index, rows=3))

    writer.flush()

    assert sizes == [12] * 7 + [6]  # records of 3 rows until at least 10 rows are taken
    assert PredictionLog.objects.count() == 90
    sizes.clear()
    for index in range(30, 40):
        writer._queue.put(_record(index, rows=2))
    writer.flush()
    assert sizes == [10, 10]  # exactly 10 rows reached: no record more


def test_flushing_writes_all_that_is_queued_not_a_batch_at_a_time(writer, settings, monkeypatch):
    """At exit there is no next tick: flush() takes every queued record, bounded only by the rows of a write."""
    from serving import predlog

    settings.PREDICTION_LOG_BATCH = 2  # what the writer thread takes a tick
    sizes = []
    write = writer._write
    monkeypatch.setattr(writer, "_write", lambda records: sizes.append(len(records)) or write(records))
    for index in range(100):
        writer._queue.put(_record(index))
    writer.flush()
    assert sizes == [100]
    assert predlog._ROWS_PER_WRITE == 5000


def test_a_dropped_connection_is_reopened_and_the_batch_kept(writer):
    writer._queue.put(_record(1))
    writer.flush()
    connection.connection.close()  # the database went away under the open connection

    writer._queue.put(_record(2))
    writer.flush()

    assert set(PredictionLog.objects.values_list("request_id", flat=True)) == {"req-1", "req-2"}


def _metric(name, **labels):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def database_down():
    """Make the next connections fail for real: the connection is closed and its settings point nowhere."""
    settings_dict = connection.settings_dict
    saved = dict(settings_dict)

    def down():
        connection.close()
        if connection.vendor == "postgresql":
            settings_dict["PORT"] = "1"  # nothing listens there: connection refused
        else:
            settings_dict["NAME"] = "/nonexistent/dir/db.sqlite3"

    def up():
        connection.close()
        settings_dict.update(saved)

    yield down, up
    up()


def test_a_database_outage_spills_batches_to_disk_and_replays_them_in_order(writer, settings, tmp_path, database_down):
    down, up = database_down
    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    spilled, replayed = _metric("prediction_log_rows_spilled_total"), _metric("prediction_log_rows_replayed_total")
    writer._queue.put(_record(0))
    writer.flush()
    down()
    for index in range(1, 4):  # three batches while the database is away
        writer._queue.put(_record(index, rows=2))
        writer.flush()
    assert len(list((tmp_path / "spill").glob("*.spill"))) == 3
    assert _metric("prediction_log_rows_spilled_total") - spilled == 6
    up()
    writer._queue.put(_record(4))
    writer.flush()  # the spilled batches go first, then the new one
    assert list((tmp_path / "spill").iterdir()) == []
    assert _metric("prediction_log_rows_replayed_total") - replayed == 6
    order = list(PredictionLog.objects.order_by("id", "row").values_list("request_id", flat=True))
    assert order == ["req-0", "req-1", "req-1", "req-2", "req-2", "req-3", "req-3", "req-4"]
    assert PredictionLog.objects.count() == 8


def test_spilled_batches_wait_for_the_database_with_nothing_new_coming(writer, settings, tmp_path, database_down):
    down, up = database_down
    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    down()
    writer._queue.put(_record(1))
    writer.flush()
    writer.flush()  # still down: the file stays
    assert len(list((tmp_path / "spill").glob("*.spill"))) == 1
    up()
    writer.flush()  # an idle tick replays it
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-1"]


def test_a_full_spill_loses_rows_loudly_and_requests_go_on(writer, settings, tmp_path, database_down, caplog):
    down, _up = database_down
    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    lost = _metric("prediction_log_rows_lost_total", reason="spill_full")
    down()
    writer._queue.put(_record(0, rows=3))
    writer.flush()
    (first,) = (tmp_path / "spill").glob("*.spill")
    settings.PREDICTION_LOG_SPILL_MAX_BYTES = first.stat().st_size + 100  # full with this one batch
    for index in range(1, 3):
        writer._queue.put(_record(index, rows=3))
        writer.flush()
    assert list((tmp_path / "spill").glob("*.spill")) == [first]
    assert _metric("prediction_log_rows_lost_total", reason="spill_full") - lost == 6
    assert "row(s) LOST (spill_full)" in caplog.text


@pytest.fixture
def full_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs) for the spill: writing past it fails with ENOSPC."""
    import os
    import subprocess

    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_loses_rows_counted_and_logged_and_the_writer_goes_on(
    writer, settings, database_down, full_disk, caplog
):
    down, up = database_down
    settings.PREDICTION_LOG_SPILL_DIR = str(full_disk)
    lost = _metric("prediction_log_rows_lost_total", reason="disk_error")
    spilled = _metric("prediction_log_rows_spilled_total")
    down()
    for index in range(40):  # ~6 KiB a batch: the disk fills after about ten
        writer._queue.put(_record(index, rows=200))
        writer.flush()  # never raises: the request path is not affected
    lost_rows = _metric("prediction_log_rows_lost_total", reason="disk_error") - lost
    spilled_rows = _metric("prediction_log_rows_spilled_total") - spilled
    print(f"\nspill on a 64 KiB disk: {spilled_rows:.0f} rows spilled, {lost_rows:.0f} lost (counted)")
    assert lost_rows > 0
    assert spilled_rows > 0
    assert lost_rows + spilled_rows == 40 * 200
    assert "LOST (disk_error)" in caplog.text
    assert "OSError: [Errno 28] No space left on device" in caplog.text
    assert not list(full_disk.glob(".*.tmp"))  # a half-written batch is removed, not replayed
    up()
    writer.flush()
    assert PredictionLog.objects.count() == spilled_rows  # what fitted on the disk, all written back


def test_a_batch_the_database_refuses_is_set_aside_and_does_not_block_the_rest(
    writer, settings, tmp_path, database_down, caplog
):
    down, up = database_down
    spill = tmp_path / "spill"
    settings.PREDICTION_LOG_SPILL_DIR = str(spill)
    refused = _metric("prediction_log_rows_lost_total", reason="refused")
    down()
    bad = _record(1)
    bad.version = -1  # the table's check constraint refuses it once the database is back
    writer._queue.put(bad)
    writer.flush()
    writer._queue.put(_record(2))
    writer.flush()
    # A batch claimed by a process that died before writing it is taken back.
    writer._queue.put(_record(3))
    writer.flush()
    newest = sorted(spill.glob("*.spill"))[-1]
    newest.rename(spill / f"{newest.name}.claimed-999999999")
    up()
    writer.flush()
    writer._queue.put(_record(4))
    writer.flush()
    assert sorted(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-2", "req-3", "req-4"]
    assert _metric("prediction_log_rows_lost_total", reason="refused") - refused == 1
    assert [path.name.endswith(".refused") for path in spill.iterdir()] == [True]
    [aside] = spill.iterdir()
    [said] = [r.getMessage() for r in caplog.records if "LOST (refused)" in r.getMessage()]
    assert said.startswith("prediction log: 1 row(s) LOST (refused): IntegrityError: ")
    assert said.endswith(f"; kept as {aside.name}")


def _shadow(predict):
    from serving.runtime import LoadedModel

    return LoadedModel(
        pk=2,
        model_name="iris-clf",
        version=2,
        form="sklearn",
        features=[],
        classes=["setosa", "versicolor"],
        _predict=predict,
    )


def test_a_shadow_is_predicted_once_by_the_writer_and_logged_beside_with_its_own_latency(writer):
    import time

    calls = []

    def predict(columns):
        calls.append(columns)
        time.sleep(0.02)
        return ["versicolor"], np.array([[0.3, 0.7]])

    record = _record(1)
    record.shadow = _shadow(predict)
    writer._queue.put(record)
    writer.flush()
    writer.flush()

    assert len(calls) == 1
    assert calls[0] is record.columns
    shadow = PredictionLog.objects.get(request_id="req-1", deployment_mode="shadow")
    assert (shadow.version, shadow.prediction, shadow.error) == (2, "versicolor", "")
    assert shadow.confidence == pytest.approx(0.7)
    assert 20 <= shadow.latency_ms < 1000  # milliseconds of the shadow's own prediction
    assert PredictionLog.objects.get(request_id="req-1", deployment_mode="primary").prediction == "setosa"


def test_a_failing_shadow_is_logged_as_a_failure_and_the_answer_row_kept(writer):
    def predict(columns):
        raise ValueError("shadow cannot read petal_length_cm")

    record = _record(1)
    record.shadow = _shadow(predict)
    writer._queue.put(record)
    writer.flush()

    shadow = PredictionLog.objects.get(request_id="req-1", deployment_mode="shadow")
    assert shadow.error == "ValueError: shadow cannot read petal_length_cm"
    assert (shadow.row, shadow.prediction, shadow.inputs) == (0, None, None)
    assert PredictionLog.objects.get(request_id="req-1", deployment_mode="primary").error == ""


def test_an_error_record_is_one_row_whatever_it_holds_and_its_error_cut_at_2000_characters(writer):
    long_error = LogRecord("req-long", "iris-clf", 1, "primary", timezone.now(), 0.1, error="e" * 2500)
    with_labels = _record(2, rows=3)
    with_labels.error = "refused after predicting"
    writer._queue.put(long_error)
    writer._queue.put(with_labels)
    writer.flush()

    row = PredictionLog.objects.get(request_id="req-long")
    assert (row.row, len(row.error), row.inputs, row.features, row.confidence) == (0, 2000, None, None, None)
    assert row.latency_ms == pytest.approx(0.1)
    [refused] = PredictionLog.objects.filter(request_id="req-2")
    assert (refused.error, refused.prediction) == ("refused after predicting", None)


def test_a_label_outside_the_classes_has_no_index(writer):
    record = _record(1)
    record.labels = ["virginica"]  # a regressor-like label not among the classes
    writer._queue.put(record)
    writer.flush()
    row = PredictionLog.objects.get(request_id="req-1")
    assert (row.prediction, row.predicted_index) == ("virginica", None)


def test_the_writer_thread_writes_on_its_own_and_survives_a_batch_it_cannot_build(writer, settings, caplog):
    import time

    settings.PREDICTION_LOG_FLUSH_SECONDS = 0.05
    settings.PREDICTION_LOG_BATCH = 1  # one record a write: the bad one fails alone
    lost = _metric("prediction_log_rows_lost_total", reason="error")
    bad = _record(1, rows=2)
    bad.labels = ["setosa"]  # fewer labels than rows: the rows cannot be built
    writer.submit(bad)
    writer.submit(_record(2))
    deadline = time.monotonic() + 10
    while not PredictionLog.objects.filter(request_id="req-2").exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-2"]
    assert _metric("prediction_log_rows_lost_total", reason="error") - lost == 1
    assert "writing the prediction log failed" in [r.getMessage() for r in caplog.records]
    assert writer._thread.is_alive()
    # Named for whoever reads a thread dump; a daemon, so it never holds a process that is exiting.
    assert (writer._thread.name, writer._thread.daemon) == ("prediction-log", True)
    writer.submit(_record(3))
    writer.close()  # at exit: the thread ends and what is queued is written
    assert not writer._thread.is_alive()
    assert PredictionLog.objects.filter(request_id="req-3").exists()


def test_a_full_spill_says_so_in_its_own_words_and_save_says_it_kept_nothing(writer, settings, tmp_path, caplog):
    from serving.predlog import LogSpill

    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    settings.PREDICTION_LOG_SPILL_MAX_BYTES = 10
    assert LogSpill().save([_record(0, rows=3)]) is False
    assert "prediction log: 3 row(s) LOST (spill_full): the spill directory holds 10 bytes at most" in [
        r.getMessage() for r in caplog.records
    ]
    settings.PREDICTION_LOG_SPILL_MAX_BYTES = 10**6
    assert LogSpill().save([_record(0, rows=3)]) is True


def test_a_batch_claimed_by_a_live_process_is_left_to_it(writer, settings, tmp_path, database_down):
    """Two processes share the spill: one still replaying a claimed file keeps it (and is not signalled)."""
    import subprocess

    down, up = database_down
    spill = tmp_path / "spill"
    settings.PREDICTION_LOG_SPILL_DIR = str(spill)
    down()
    writer._queue.put(_record(1))
    writer.flush()
    # SIGHUP at its default (a sibling killed by any real signal shows it), even under nohup.
    sibling = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        [file] = spill.glob("*.spill")
        claimed = file.rename(spill / f"{file.name}.claimed-{sibling.pid}")
        up()
        writer._queue.put(_record(2))
        writer.flush()
        assert claimed.exists()
        assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-2"]
        with pytest.raises(subprocess.TimeoutExpired):  # alive: asked with signal 0, never sent a real one
            sibling.wait(timeout=0.5)
    finally:
        sibling.kill()
        sibling.wait()


def test_a_new_process_replays_what_an_earlier_one_spilled_with_nothing_new_coming(settings, tmp_path):
    from serving.predlog import LogSpill

    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    LogSpill().save([_record(1)])  # an earlier process, gone (the database was down then)
    writer = PredictionLogWriter()  # this process, started with the database up
    writer.flush()
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-1"]


def test_the_spill_holds_its_limit_to_the_byte_in_a_directory_it_makes(settings, tmp_path, caplog):
    import logging
    import pickle

    from serving.predlog import LogSpill

    directory = tmp_path / "var" / "predlog" / "spill"  # none of it exists yet
    settings.PREDICTION_LOG_SPILL_DIR = str(directory)
    batch = [_record(1, rows=2)]
    size = len(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
    settings.PREDICTION_LOG_SPILL_MAX_BYTES = 3 * size  # three batches, exactly
    spill = LogSpill()
    spilled = _metric("prediction_log_rows_spilled_total")
    with caplog.at_level(logging.WARNING, logger="serving.predlog"):
        assert [spill.save(batch) for _ in range(4)] == [True, True, True, False]
    assert _metric("prediction_log_rows_spilled_total") - spilled == 6
    assert len(list(directory.glob("*.spill"))) == 3
    assert f"prediction log: database unavailable, 2 row(s) spilled to {directory}" in [
        r.getMessage() for r in caplog.records
    ]


def test_an_error_record_counts_as_one_row_spilled(settings, tmp_path):
    from serving.predlog import LogSpill

    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    refused = _record(1, rows=3)
    refused.error = "refused after predicting"
    spilled = _metric("prediction_log_rows_spilled_total")
    LogSpill().save([refused, LogRecord("req-2", "iris-clf", 1, "primary", timezone.now(), 0.1, error="bad")])
    assert _metric("prediction_log_rows_spilled_total") - spilled == 2


def test_files_set_aside_do_not_stop_a_later_replay(writer, settings, tmp_path, database_down):
    down, up = database_down
    spill = tmp_path / "spill"
    settings.PREDICTION_LOG_SPILL_DIR = str(spill)
    (spill).mkdir()
    (spill / "00000000000000000001-1-000001.spill.claimed-1.refused").write_bytes(b"kept for a person to look at")
    (spill / "00000000000000000002-1-000001.spill.claimed-1.unreadable").write_bytes(b"?")
    down()
    writer._queue.put(_record(1))
    writer.flush()
    up()
    writer.flush()
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-1"]
    assert len(list(spill.iterdir())) == 2


def _lost_messages(caplog):
    return [r.getMessage() for r in caplog.records if "LOST" in r.getMessage()]


def test_rows_that_do_not_line_up_are_refused_whole_never_written_shifted(writer):
    """A record whose columns, vector features or probabilities are not as long as its labels is a bug
    upstream: the batch is counted lost (reason error), never written with values under the wrong row."""
    lost = _metric("prediction_log_rows_lost_total", reason="error")
    longer_column = _record(1, rows=2)
    longer_column.columns = {"petal_length_cm": [1.4, 1.5, 1.6], "petal_width_cm": [0.2, 0.2]}
    short_vector = _record(2, rows=2)
    short_vector.columns = {"petal_length_cm": [1.4, 1.5], "petal_width_cm": [0.2, 0.2], "x": [1.0]}
    probabilities = _record(3)
    probabilities.classes = ["setosa", "versicolor", "virginica"]  # two probabilities for three classes
    for record, layout in [(longer_column, ()), (short_vector, ("petal_length_cm", "x")), (probabilities, ())]:
        writer._layouts[("iris-clf", 1)] = layout
        writer._queue.put(record)
        with pytest.raises(ValueError, match="zip|line up"):
            writer.flush()
    assert not PredictionLog.objects.exists()
    assert _metric("prediction_log_rows_lost_total", reason="error") - lost == 5


def test_a_missing_number_is_nan_in_the_feature_vector(writer):
    record = _record(1, rows=2)
    record.columns = {"petal_length_cm": [1.4, None], "petal_width_cm": [0.2, 0.3]}
    writer._layouts[("iris-clf", 1)] = ("petal_length_cm", "petal_width_cm")
    writer._queue.put(record)
    writer.flush()
    first, second = PredictionLog.objects.order_by("row")
    assert list(first.features) == [1.4, 0.2]
    assert np.isnan(second.features[0])
    if connection.vendor == "postgresql":  # NaN in the array itself, not a NULL element (which reads back as NaN)
        with connection.cursor() as cursor:
            cursor.execute("SELECT features[1] = 'NaN'::float8 FROM serving_predictionlog WHERE row = 1")
            assert cursor.fetchone() == (True,)
    assert second.features[1] == pytest.approx(0.3)
    assert second.inputs == {"petal_length_cm": None, "petal_width_cm": 0.3}


def test_a_certain_prediction_and_a_nan_probability_are_logged_as_they_came(writer):
    """A confidence of exactly 1 keeps its leading digit, and a model answering NaN probabilities has its
    row written (NaN, or NULL where SQLite stores NaN so), not the batch refused."""
    record = _record(1, rows=2)
    record.probabilities = np.array([[1.0, 0.0], [np.nan, np.nan]])
    writer._queue.put(record)
    writer.flush()
    first, second = PredictionLog.objects.order_by("row")
    assert (first.confidence, first.probabilities) == (1.0, {"setosa": 1.0, "versicolor": 0.0})
    assert second.confidence is None or np.isnan(second.confidence)
    assert second.probabilities == {"setosa": None, "versicolor": None}


def test_numpy_values_and_numeric_classes_are_logged_as_json(writer):
    """Columns as a caller has them (numpy arrays, even of long doubles or of 0-d arrays) and a model whose
    classes are numbers: the JSON columns take them as plain numbers, keys as text."""
    record = _record(1, rows=2)
    record.columns = {
        "petal_length_cm": np.array([1, 2], dtype=np.int64),
        "big": np.array([1.5, 2], dtype=np.longdouble),
        "cell": [np.array(0.5), np.array(["a"], dtype=object)],
    }
    record.labels = [np.int64(1), np.int64(0)]
    record.classes = [0, 1]
    writer._queue.put(record)
    writer.flush()
    first = PredictionLog.objects.order_by("row").first()
    assert first.inputs == {"petal_length_cm": 1, "big": 1.5, "cell": 0.5}
    assert PredictionLog.objects.order_by("row").last().inputs["cell"] == ["a"]
    assert (first.prediction, first.predicted_index) == (1, 1)
    assert first.probabilities == {"0": pytest.approx(0.9), "1": pytest.approx(0.1)}


def test_the_feature_vector_follows_the_signature_of_the_version_logged(writer, register, train, scientist):
    """Read once per version from the registry (two models share version numbers; a breaking version has
    other features) and kept."""
    from registry import services

    iris = register()
    churn_run = train(dataset="customer_churn", n_samples=200)
    services.model_version_register(run_id=churn_run.pk, model_name="churn", by=scientist)
    breaking = services.model_version_register(
        run_id=churn_run.pk, model_name="iris-clf", by=scientist, breaking_change=True
    )
    numeric = [f["name"] for f in breaking.signature["features"] if f["dtype"] != "categorical"]
    churn_row = {f["name"]: (1.0 if f["dtype"] != "categorical" else "x") for f in breaking.signature["features"]}
    iris_row = {f["name"]: 2.0 for f in iris.signature["features"]}

    def record(request_id, model, version, row):
        return LogRecord(
            request_id,
            model,
            version,
            "primary",
            timezone.now(),
            0.1,
            columns={name: [value] for name, value in row.items()},
            labels=["a"],
            probabilities=np.array([[1.0]]),
            classes=["a"],
        )

    for batch in range(2):  # the second time from what the writer kept
        writer._queue.put(record(f"iris-{batch}", "iris-clf", 1, iris_row))
        writer._queue.put(record(f"churn-{batch}", "churn", 1, churn_row))
        writer._queue.put(record(f"breaking-{batch}", "iris-clf", 2, churn_row))
        with CaptureQueriesContext(connection) as queries:
            writer.flush()
        read = [q["sql"] for q in queries.captured_queries if "registry_modelversion" in q["sql"]]
        assert len(read) == (3 if batch == 0 else 0)  # once per version, then kept
        assert list(PredictionLog.objects.get(request_id=f"iris-{batch}").features) == [2.0] * 4
        assert list(PredictionLog.objects.get(request_id=f"churn-{batch}").features) == [1.0] * len(numeric)
        assert list(PredictionLog.objects.get(request_id=f"breaking-{batch}").features) == [1.0] * len(numeric)
    assert len(numeric) != 4


def test_an_unreadable_spill_file_is_set_aside_counted_and_the_rest_replayed(writer, settings, tmp_path, caplog):
    from serving.predlog import LogSpill

    spill = tmp_path / "spill"
    settings.PREDICTION_LOG_SPILL_DIR = str(spill)
    LogSpill().save([_record(1)])
    spill.joinpath("00000000000000000001-1-000001.spill").write_bytes(b"half a pickle")  # the oldest
    LogSpill().save([_record(2, rows=2)])
    unreadable = _metric("prediction_log_rows_lost_total", reason="unreadable")
    caplog.set_level("INFO", logger="serving.predlog")

    writer.flush()

    assert sorted(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-1", "req-2", "req-2"]
    [aside] = spill.iterdir()
    assert aside.name == f"00000000000000000001-1-000001.spill.claimed-{os.getpid()}.unreadable"
    assert _metric("prediction_log_rows_lost_total", reason="unreadable") - unreadable == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"prediction log: spill file {spill / aside.name[: -len('.unreadable')]} unreadable, set aside: ")
        and m.endswith("Memo value not found at index 97")  # what was wrong with it
        for m in messages
    )
    written = [m for m in messages if m.startswith("prediction log: ") and "spilled row(s) written from" in m]
    assert written[-1].startswith("prediction log: 2 spilled row(s) written from ")
    assert written[-1].endswith(".spill")


def test_a_file_another_process_took_meanwhile_is_skipped_and_the_rest_replayed(
    writer, settings, tmp_path, monkeypatch
):
    from serving.predlog import LogSpill

    settings.PREDICTION_LOG_SPILL_DIR = str(tmp_path / "spill")
    LogSpill().save([_record(1)])
    claimable = writer.spill._claimable
    # Listed, then renamed by a sibling process before this one could claim it.
    monkeypatch.setattr(writer.spill, "_claimable", lambda: ["00000000000000000000-1-000001.spill", *claimable()])
    writer.flush()
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-1"]


def test_a_replay_the_database_breaks_off_puts_the_file_back_under_its_own_name(
    writer, settings, tmp_path, database_down
):
    from serving.predlog import LogSpill

    down, up = database_down
    spill = tmp_path / "spill"
    settings.PREDICTION_LOG_SPILL_DIR = str(spill)
    LogSpill().save([_record(1)])
    [file] = spill.glob("*.spill")
    file.rename(spill / f"{file.name}.claimed-999999999")  # claimed by a process that died
    down()
    writer._queue.put(_record(2))
    writer.flush()  # the replay fails: the file goes back in line, unclaimed, and the new batch after it
    assert file.exists()
    up()
    writer.flush()
    assert list(PredictionLog.objects.order_by("id").values_list("request_id", flat=True)) == ["req-1", "req-2"]


def test_rows_the_database_refuses_are_lost_loudly_and_the_next_are_written(writer, caplog, database_down):
    down, up = database_down
    refused = _metric("prediction_log_rows_lost_total", reason="refused")
    bad = _record(1, rows=2)
    bad.version = -1  # the table's check constraint refuses it
    writer._queue.put(bad)
    writer.flush()
    writer._queue.put(_record(2))
    writer.flush()
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-2"]
    assert _metric("prediction_log_rows_lost_total", reason="refused") - refused == 2
    [message] = _lost_messages(caplog)
    assert message.startswith("prediction log: 2 row(s) LOST (refused): IntegrityError: ")
    # And the words of an outage, once the connection is lost for the retry too.
    down()
    writer._queue.put(_record(3))
    writer.flush()
    warnings = [r.getMessage() for r in caplog.records if "database unavailable (" in r.getMessage()]
    assert warnings[-1].startswith("prediction log: database unavailable (OperationalError: ")
    assert not warnings[-1].endswith(": None)")  # the database's own words follow
    up()


def test_a_write_that_fails_under_backpressure_is_the_logs_not_the_requests(writer, settings, caplog):
    """The request that finds the log behind writes a batch itself; if that batch cannot be built, the
    request still gets its answer: the rows are counted lost and the failure logged, as the thread does."""
    settings.PREDICTION_LOG_FLUSH_SECONDS = 3600
    settings.PREDICTION_LOG_QUEUE_MAX = 1
    lost = _metric("prediction_log_rows_lost_total", reason="error")
    bad = _record(1, rows=2)
    bad.labels = ["setosa"]  # its rows cannot be built
    writer.submit(bad)
    writer.submit(_record(2))  # over the bound: this request writes the oldest record, and fails to
    assert _metric("prediction_log_rows_lost_total", reason="error") - lost == 1
    assert "writing the prediction log failed" in [r.getMessage() for r in caplog.records]
    writer.flush()
    assert list(PredictionLog.objects.values_list("request_id", flat=True)) == ["req-2"]
