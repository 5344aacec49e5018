"""Faults of a real server and a real Dagster instance: failed runs, server outages, a killed run, cursor resets.

Tests that stop and restart MongoDB start their own FerretDB on a free 127.0.0.1 port, so they run
only on the embedded server and are skipped when MONGO_URI is set. The other tests use the
`mongo_db` fixture's database on whatever server the suite uses.

A run is failed for real by stopping its server, which pymongo reports after the resource's
server selection timeout (10 s), so each failed attempt costs about that long.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymongo
import pytest
from bson import ObjectId
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    RunsFilter,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, ROOT_RUN_ID_TAG, RUN_KEY_TAG

from healthstream_assets import contract
from healthstream_assets.cursor import Position, SensorCursor, format_timestamp
from healthstream_assets.cursor_store import read_cursor
from healthstream_assets.definitions import build_definitions, policy_from_settings
from healthstream_assets.embedded_server import EmbeddedServer, find_free_port
from healthstream_assets.jobs import ANALYTICS_WRITER_TAG, ATTEMPT_TAG, WINDOW_ID_TAG, WINDOW_JOB_NAME
from healthstream_assets.resources.mongo import ensure_indexes
from healthstream_assets.run_once import run_once
from healthstream_assets.sensors import SENSOR_NAME
from healthstream_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("HEALTHSTREAM_TOOLS_DIR") or REPO_ROOT / ".tools")

requires_embedded_server = pytest.mark.skipif(
    bool(os.environ.get("MONGO_URI", "").strip()),
    reason="stops and restarts a private FerretDB, which needs the embedded server; unset MONGO_URI to run it",
)

# FerretDB 1.24 with the SQLite backend rejects SCRAM-SHA-1 and SCRAM-SHA-256 ("Unsupported
# authentication mechanism") but accepts PLAIN with any user and password, so a URI with
# credentials reaches it when it names PLAIN.
DB_USER = "healthstream"
DB_PASSWORD = "pw-5ecret-3e1a"

WINDOW_BOUND_FIELDS = ("start_updated_at", "start_id", "end_updated_at", "end_id", "doc_count")

# Fields of an analytics document that differ between two runs over the same data.
# `anomalyDetails.detectedAt` is a copy of `calculatedAt`.
RUN_SPECIFIC_FIELDS = {"_id", "calculatedAt", "expiresAt", "metadata", "analytics.anomalyDetails.detectedAt"}

# Minimum, maximum and decimal places of the generated values of each metric, inside the contract's ranges.
GENERATED_RANGES = {
    "steps": (1_000, 20_000, 0),
    "distance": (0.5, 15.0, 2),
    "calories": (1_500, 3_500, 0),
    "activeMinutes": (0, 180, 0),
    "sleepHours": (4.0, 10.0, 2),
    "weight": (55.0, 95.0, 1),
}

FIRST_DAY = datetime(2024, 1, 1, tzinfo=UTC)


def make_documents(user_count: int, day_count: int, metric_types: tuple[str, ...], seed: int) -> list[dict]:
    """Return `healthmetrics` documents of `user_count` users with one document per day.

    Ids and values depend only on the arguments, so two databases loaded with the same call hold
    identical documents. Every document is stamped one minute ago, inside any lookback.
    """

    rng = random.Random(seed)
    updated_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    documents = []

    for user in range(user_count):
        user_id = ObjectId(f"{seed:08x}{user:016x}")
        for day in range(day_count):
            metrics = {}
            for metric_type in metric_types:
                low, high, places = GENERATED_RANGES[metric_type]
                value = round(rng.uniform(low, high), places)
                metrics[metric_type] = int(value) if places == 0 else value

            documents.append(
                {
                    "_id": ObjectId(f"{seed:08x}{user:08x}{day:08x}"),
                    "userId": user_id,
                    "date": FIRST_DAY + timedelta(days=day),
                    "metrics": metrics,
                    "source": "manual",
                    "createdAt": updated_at,
                    "updatedAt": updated_at,
                }
            )

    return documents


def load_documents(db, documents: list[dict]) -> None:
    ensure_indexes(db)
    db[contract.HEALTH_METRICS].insert_many(documents)


def expected_keys(documents: list[dict]) -> set[tuple]:
    """Return the (userId, metricType, timeRange) of every analytics document the data should produce."""

    return {
        (document["userId"], metric_type, time_range)
        for document in documents
        for metric_type in document["metrics"]
        for time_range in contract.TIME_RANGES
    }


def analytics_by_key(db) -> dict[tuple, dict]:
    return {
        (document["userId"], document["metricType"], document["timeRange"]): document
        for document in db[contract.ANALYTICS].find()
    }


def computed_fields(document: dict) -> dict:
    """Return the fields a run computes, flattened to dotted keys, floats wrapped for a 1e-9 relative comparison.

    Spark sums in partition order, so a recomputed standard deviation can differ in the last bits.
    """

    flat = {}

    def walk(prefix: str, value) -> None:
        if prefix in RUN_SPECIFIC_FIELDS:
            return
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, float):
            flat[prefix] = pytest.approx(value, rel=1e-9)
        else:
            flat[prefix] = value

    walk("", document)
    return flat


def window_config(run_config: dict) -> dict:
    return run_config["ops"]["new_health_metrics"]["config"]


def sensor_tick(defs, instance, cursor: str | None):
    """Evaluate the window sensor once through Dagster's sensor API, without launching its run."""

    sensor_def = defs.resolve_sensor_def(SENSOR_NAME)
    with build_sensor_context(
        instance=instance, cursor=cursor, resources={"mongo": defs.resources["mongo"]}, definitions=defs
    ) as context:
        return sensor_def.evaluate_tick(context)


def launch_run(defs, instance, run_config: dict, tags: dict):
    """Execute the window job in this process, as run_once does, with `tags` on the run."""

    job = defs.resolve_job_def(WINDOW_JOB_NAME)
    return job.execute_in_process(run_config=run_config, instance=instance, tags=tags, raise_on_error=False)


def launch_request(defs, instance, request):
    return launch_run(defs, instance, request.run_config, {**request.tags, RUN_KEY_TAG: request.run_key})


def launch_reexecution(defs, instance, failed_run):
    """Execute a failed run again with its config and window tags, tagged as a re-execution from the UI."""

    window_tags = {key: value for key, value in failed_run.tags.items() if key.startswith("healthstream/")}
    tags = {**window_tags, PARENT_RUN_ID_TAG: failed_run.run_id, ROOT_RUN_ID_TAG: failed_run.run_id}
    return launch_run(defs, instance, failed_run.run_config, tags)


def run_keys(instance) -> set[str]:
    return {run.tags[RUN_KEY_TAG] for run in instance.get_runs() if RUN_KEY_TAG in run.tags}


def sleep_until(moment: datetime) -> None:
    remaining = (moment - datetime.now(UTC)).total_seconds()
    if remaining > 0:
        time.sleep(remaining + 0.05)


def assert_analytics_written(db, documents: list[dict], run_id: str) -> None:
    stored = analytics_by_key(db)

    assert db[contract.ANALYTICS].count_documents({}) == len(stored)
    assert set(stored) == expected_keys(documents)
    for key, document in stored.items():
        assert document["metadata"]["sparkJobId"] == run_id, key


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def private_server(tmp_path):
    """A FerretDB of this test alone, which the test may stop and start again on the same port and data."""

    server = EmbeddedServer(tmp_path / "private-server", TOOLS_DIR, port=find_free_port())
    server.start()
    yield server
    server.stop()


def credentials_uri(server: EmbeddedServer) -> str:
    return f"mongodb://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{server.port}/?authMechanism=PLAIN"


def private_settings(server: EmbeddedServer, tmp_path: Path, **overrides: str) -> Settings:
    env = {
        "MONGO_URI": credentials_uri(server),
        "MONGO_DB_NAME": "hs_faults",
        "HEALTHSTREAM_STATE_DIR": str(tmp_path / "state"),
        "HEALTHSTREAM_TOOLS_DIR": str(TOOLS_DIR),
        "SETTLE_SECONDS": "0",
        "RETRY_BACKOFF_SECONDS": "0",
        **overrides,
    }
    return Settings.from_env(env)


@pytest.fixture
def private_db(private_server):
    client = pymongo.MongoClient(credentials_uri(private_server), tz_aware=True, serverSelectionTimeoutMS=10_000)
    yield client["hs_faults"]
    client.close()


@requires_embedded_server
def test_failed_window_retried_then_held(private_server, private_db, instance, tmp_path):
    backoff_seconds = 1.0
    settings = private_settings(private_server, tmp_path, MAX_RUN_ATTEMPTS="3", RETRY_BACKOFF_SECONDS=str(backoff_seconds))
    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    documents = make_documents(user_count=2, day_count=14, metric_types=("steps", "sleepHours"), seed=1)
    load_documents(private_db, documents)

    planned = sensor_tick(defs, instance, None)
    request = planned.run_requests[0]
    planned_state = json.loads(planned.cursor)
    window_id = planned_state["inFlight"]["windowId"]
    assert window_config(request.run_config)["doc_count"] == len(documents)

    private_server.stop()
    first_run = launch_request(defs, instance, request)

    assert first_run.success is False
    assert instance.get_run_by_id(first_run.run_id).status == DagsterRunStatus.FAILURE

    cursor = planned.cursor
    failed_run_id = first_run.run_id
    seen_keys = {request.run_key}
    for attempt in (2, 3):
        delay = timedelta(seconds=backoff_seconds * 2 ** (attempt - 2))
        failed_at = datetime.fromtimestamp(instance.get_run_record_by_id(failed_run_id).end_time, UTC)

        waiting = run_once(defs, instance, cursor, policy)

        waiting_state = json.loads(waiting.cursor)
        assert waiting.run_id is None, f"attempt {attempt} started before its backoff"
        assert waiting_state["committed"] == planned_state["committed"], "a failed run moved the watermark"
        assert "retrying after" in waiting.skip_reason
        assert failed_run_id in waiting.skip_reason
        assert waiting_state["inFlight"]["attempt"] == attempt - 1
        assert waiting_state["inFlight"]["lastFailedRunId"] == failed_run_id
        retry_at = datetime.fromisoformat(waiting_state["inFlight"]["retryAt"])
        assert failed_at + delay - timedelta(milliseconds=1) <= retry_at
        assert retry_at <= datetime.now(UTC) + delay

        sleep_until(retry_at)
        retried = run_once(defs, instance, waiting.cursor, policy)

        run = instance.get_run_by_id(retried.run_id)
        state = json.loads(retried.cursor)
        assert retried.run_succeeded is False
        assert run.status == DagsterRunStatus.FAILURE
        assert run.tags[WINDOW_ID_TAG] == window_id
        assert run.tags[ATTEMPT_TAG] == str(attempt)
        assert run.tags[RUN_KEY_TAG] not in seen_keys
        for field in WINDOW_BOUND_FIELDS:
            assert window_config(run.run_config)[field] == window_config(request.run_config)[field], field
        assert state["committed"] == planned_state["committed"]
        assert state["windowsCommitted"] == 0
        assert state["inFlight"]["attempt"] == attempt

        seen_keys.add(run.tags[RUN_KEY_TAG])
        failed_run_id = retried.run_id
        cursor = retried.cursor

    on_hold = run_once(defs, instance, cursor, policy)

    on_hold_state = json.loads(on_hold.cursor)
    assert on_hold.run_id is None
    assert "failed 3 times" in on_hold.skip_reason
    assert window_id in on_hold.skip_reason
    assert planned_state["inFlight"]["end"]["_id"] in on_hold.skip_reason
    assert failed_run_id in on_hold.skip_reason
    assert on_hold_state["committed"] == planned_state["committed"]

    # Past the last backoff the window still waits for an operator.
    sleep_until(datetime.fromisoformat(on_hold_state["inFlight"]["retryAt"]))
    still_on_hold = run_once(defs, instance, on_hold.cursor, policy)

    assert still_on_hold.run_id is None
    assert still_on_hold.cursor == on_hold.cursor
    assert len(instance.get_runs(filters=RunsFilter(tags={WINDOW_ID_TAG: window_id}))) == 3

    private_server.start()
    assert private_db[contract.HEALTH_METRICS].count_documents({}) == len(documents)
    reexecution = launch_reexecution(defs, instance, instance.get_run_by_id(failed_run_id))
    assert reexecution.success is True

    settled = run_once(defs, instance, on_hold.cursor, policy)

    settled_state = json.loads(settled.cursor)
    assert settled.run_id is None
    assert "no documents updated after" in settled.skip_reason
    assert settled_state["committed"] == planned_state["inFlight"]["end"]
    assert settled_state["inFlight"] is None
    assert settled_state["windowsCommitted"] == 1
    assert_analytics_written(private_db, documents, reexecution.run_id)


@requires_embedded_server
def test_outage_tick_skips_with_masked_uri(private_server, private_db, instance, tmp_path):
    settings = private_settings(private_server, tmp_path)
    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    documents = make_documents(user_count=1, day_count=5, metric_types=("steps",), seed=2)
    load_documents(private_db, documents)
    committed = Position.at_time(datetime.now(UTC) - timedelta(days=1))
    cursor = SensorCursor(committed=committed).to_json()

    private_server.stop()
    outcome = run_once(defs, instance, cursor, policy)

    assert outcome.run_id is None
    assert f"127.0.0.1:{private_server.port}" in outcome.skip_reason
    assert DB_PASSWORD not in outcome.skip_reason
    assert outcome.cursor == cursor
    assert instance.get_runs() == []

    private_server.start()
    resumed = sensor_tick(defs, instance, outcome.cursor)

    assert len(resumed.run_requests) == 1
    config = window_config(resumed.run_requests[0].run_config)
    assert config["start_updated_at"] == committed.to_json()["updatedAt"]
    assert config["doc_count"] == len(documents)


@requires_embedded_server
def test_outage_during_run_retried(private_server, private_db, instance, tmp_path):
    settings = private_settings(private_server, tmp_path)
    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    documents = make_documents(user_count=2, day_count=10, metric_types=("steps", "weight"), seed=3)
    load_documents(private_db, documents)

    planned = sensor_tick(defs, instance, None)
    request = planned.run_requests[0]
    planned_state = json.loads(planned.cursor)

    private_server.stop()
    failed = launch_request(defs, instance, request)

    assert failed.success is False
    failures = [event for event in failed.all_events if event.event_type == DagsterEventType.STEP_FAILURE]
    assert [event.step_key for event in failures] == ["new_health_metrics"]
    error_text = failures[0].step_failure_data.error.to_string()
    assert f"127.0.0.1:{private_server.port}" in error_text
    assert DB_PASSWORD not in error_text
    for entry in instance.all_logs(failed.run_id):
        assert DB_PASSWORD not in entry.to_json(), f"{entry.dagster_event_type or 'log message'} of step {entry.step_key}"

    private_server.start()
    retried = run_once(defs, instance, planned.cursor, policy)

    run = instance.get_run_by_id(retried.run_id)
    state = json.loads(retried.cursor)
    assert retried.run_succeeded is True
    assert run.tags[ATTEMPT_TAG] == "2"
    assert run.tags[RUN_KEY_TAG] != request.run_key
    assert state["committed"] == planned_state["inFlight"]["end"]
    assert state["inFlight"] is None
    assert state["windowsCommitted"] == 1
    assert_analytics_written(private_db, documents, retried.run_id)


@pytest.fixture
def reference_db(mongo_client):
    """A second fresh database on the same server, dropped after the test."""

    db = mongo_client[f"hs_test_{uuid.uuid4().hex[:10]}"]
    yield db
    mongo_client.drop_database(db.name)


def start_run_once_process(mongo_uri: str, db_name: str, state_dir: Path, dagster_home: Path, log_path: Path):
    """Start `healthstream run-once` in its own process group, with output to `log_path`."""

    env = {
        **os.environ,
        "MONGO_URI": mongo_uri,
        "MONGO_DB_NAME": db_name,
        "HEALTHSTREAM_STATE_DIR": str(state_dir),
        "HEALTHSTREAM_TOOLS_DIR": str(TOOLS_DIR),
        "DAGSTER_HOME": str(dagster_home),
        "SETTLE_SECONDS": "0",
    }
    command = [str(Path(sys.executable).parent / "healthstream"), "run-once"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL every process left in the group that `process` leads, then reap `process`."""

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def kill_during_analytics_upsert(process: subprocess.Popen, db, total: int, log_path: Path, timeout_seconds: float) -> int:
    """SIGKILL the process group once some but not all analytics documents exist, and return the count left.

    The whole group is killed so the Spark JVM dies with the Python driver, as in a machine crash.
    """

    deadline = time.monotonic() + timeout_seconds
    collection = db[contract.ANALYTICS]
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"run-once exited with code {process.returncode} before it could be killed mid-write; "
                    f"its output:\n{log_path.read_text()[-3000:]}"
                )

            written = collection.count_documents({})
            if 0 < written < total:
                kill_process_group(process)
                return collection.count_documents({})

            time.sleep(0.05)

        pytest.fail(f"run-once wrote no analytics within {timeout_seconds:.0f} s; its output:\n{log_path.read_text()[-3000:]}")
    finally:
        kill_process_group(process)


def test_killed_run_rerun_matches_clean_run(settings, mongo_uri, mongo_db, reference_db, tmp_path):
    documents = make_documents(
        user_count=10, day_count=60, metric_types=tuple(GENERATED_RANGES), seed=5
    )
    load_documents(mongo_db, documents)
    load_documents(reference_db, documents)
    total = len(expected_keys(documents))
    dagster_home = tmp_path / "dagster_home"
    log_path = tmp_path / "run-once.log"

    process = start_run_once_process(mongo_uri, mongo_db.name, settings.state_dir, dagster_home, log_path)
    left = kill_during_analytics_upsert(process, mongo_db, total, log_path, timeout_seconds=600)

    assert 0 < left < total, f"{left} of {total} analytics documents after the kill"

    policy = policy_from_settings(settings)
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        killed_keys = run_keys(instance)
        cursor = read_cursor(instance)
        assert cursor is None, "the killed run's window was committed"

        rerun = run_once(build_definitions(settings), instance, cursor, policy)

        assert rerun.run_succeeded is True
        assert window_config(rerun.run_config)["doc_count"] == len(documents)
        assert instance.get_run_by_id(rerun.run_id).tags[RUN_KEY_TAG] not in killed_keys

    reference_settings = replace(settings, mongo_db_name=reference_db.name)
    clean = run_once(build_definitions(reference_settings), DagsterInstance.ephemeral(), None, policy)
    assert clean.run_succeeded is True

    recovered = analytics_by_key(mongo_db)
    expected = analytics_by_key(reference_db)
    assert mongo_db[contract.ANALYTICS].count_documents({}) == total
    assert set(recovered) == set(expected) == expected_keys(documents)
    for key, document in recovered.items():
        assert computed_fields(document) == computed_fields(expected[key]), key
        assert document["metadata"]["sparkJobId"] == rerun.run_id, key


def wait_for_output(process: subprocess.Popen, log_path: Path, marker: str, timeout_seconds: float) -> None:
    """Poll the process's output until it contains `marker`, and fail if the process exits first or the timeout passes.

    The output is read instead of the Dagster instance because the instance's SQLite storage may
    still be migrating in the other process.
    """

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if marker in log_path.read_text(errors="replace"):
            return

        if process.poll() is not None:
            pytest.fail(f"run-once exited with code {process.returncode} before {marker!r}; its output:\n{log_path.read_text()[-3000:]}")

        time.sleep(0.1)

    pytest.fail(f"no {marker!r} from run-once within {timeout_seconds:.0f} s; its output:\n{log_path.read_text()[-3000:]}")


def test_killed_run_frees_writer_slot(settings, mongo_uri, mongo_db, tmp_path):
    """A run-once killed mid-run must not leave a run that counts as active in the shared DAGSTER_HOME.

    `healthstream dev` uses the same DAGSTER_HOME, whose dagster.yaml lets one run tagged
    `healthstream/analytics_writer` be active at a time, and Dagster's queue counts STARTED runs as
    active. A run that stays STARTED after its process died therefore keeps every later window and
    reconciliation run queued.
    """

    documents = make_documents(user_count=1, day_count=3, metric_types=("steps",), seed=7)
    load_documents(mongo_db, documents)
    dagster_home = tmp_path / "dagster_home"
    log_path = tmp_path / "run-once.log"

    process = start_run_once_process(mongo_uri, mongo_db.name, settings.state_dir, dagster_home, log_path)
    try:
        # Logged after RUN_START, so the run is stored as STARTED by then.
        wait_for_output(process, log_path, "RESOURCE_INIT_STARTED", timeout_seconds=300)
    finally:
        kill_process_group(process)

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        killed_runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        assert len(killed_runs) == 1
        assert killed_runs[0].tags.get(ANALYTICS_WRITER_TAG) == "true"

        rerun = run_once(build_definitions(settings), instance, read_cursor(instance), policy_from_settings(settings))

        assert rerun.run_succeeded is True
        active = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]))
        assert [run.run_id for run in active] == [], "a run whose process was killed still counts as active"


def test_cursor_reset_reprocesses_once(settings, mongo_db, instance):
    documents = make_documents(user_count=3, day_count=30, metric_types=("steps", "sleepHours", "weight"), seed=6)
    load_documents(mongo_db, documents)
    before_data = format_timestamp(documents[0]["updatedAt"] - timedelta(seconds=1))
    defs = build_definitions(settings)
    policy = policy_from_settings(settings)

    first = run_once(defs, instance, before_data, policy)

    assert first.run_succeeded is True
    baseline = analytics_by_key(mongo_db)
    assert set(baseline) == expected_keys(documents)

    # The bare timestamp comes twice, so a run key derived from the window bounds would repeat.
    for reset_cursor in (None, before_data):
        earlier_keys = run_keys(instance)

        outcome = run_once(defs, instance, reset_cursor, policy)

        assert outcome.run_succeeded is True, reset_cursor
        assert window_config(outcome.run_config)["doc_count"] == len(documents), reset_cursor
        assert instance.get_run_by_id(outcome.run_id).tags[RUN_KEY_TAG] not in earlier_keys, reset_cursor
        assert json.loads(outcome.cursor)["committed"] == json.loads(first.cursor)["committed"], reset_cursor

        after = analytics_by_key(mongo_db)
        assert mongo_db[contract.ANALYTICS].count_documents({}) == len(baseline), reset_cursor
        assert set(after) == set(baseline), reset_cursor
        for key, document in after.items():
            assert computed_fields(document) == computed_fields(baseline[key]), (reset_cursor, key)
            assert document["metadata"]["sparkJobId"] == outcome.run_id, (reset_cursor, key)
