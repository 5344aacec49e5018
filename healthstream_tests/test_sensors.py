"""Tests of the window sensor through Dagster's sensor API, with a test instance and a real server.

Runs of a window are simulated by creating run records with the tags of the sensor's RunRequest,
so each test sets the run status that the sensor reads on its next tick.
"""

import json
import socket
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId
from dagster import DagsterRunStatus, build_sensor_context, instance_for_test
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test

from healthstream_assets import contract
from healthstream_assets.cursor import Position, SensorCursor
from healthstream_assets.definitions import build_definitions
from healthstream_assets.jobs import ATTEMPT_TAG, WINDOW_ID_TAG, WINDOW_JOB_NAME
from healthstream_assets.resources.mongo import MongoResource
from healthstream_assets.sensors import SENSOR_NAME, WindowPolicy, build_window_sensor


@pytest.fixture
def instance():
    with instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def mongo(mongo_uri, mongo_db):
    resource = MongoResource(uri=mongo_uri, database_name=mongo_db.name)
    yield resource
    resource.close()


@pytest.fixture
def metrics(mongo_db):
    return mongo_db[contract.HEALTH_METRICS]


def build_sensor(settings, **overrides):
    """Return the sensor of `build_definitions`, with settings fields replaced by `overrides`."""

    return build_definitions(replace(settings, **overrides)).resolve_sensor_def(SENSOR_NAME)


def tick(sensor_def, instance, mongo, cursor):
    with build_sensor_context(instance=instance, cursor=cursor, resources={"mongo": mongo}) as context:
        return sensor_def.evaluate_tick(context)


def insert_metric(collection, minutes_ago: float) -> ObjectId:
    updated_at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    document = {"_id": ObjectId(), "metricType": "steps", "value": 1, "updatedAt": updated_at}
    collection.insert_one(document)
    return document["_id"]


# Dagster rejects a QUEUED run without the origin the run queue would launch it from.
WINDOW_JOB_ORIGIN = RemoteJobOrigin(
    repository_origin=RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("healthstream"), "__repository__"),
    job_name=WINDOW_JOB_NAME,
)


def record_run(instance, tags: dict, status: DagsterRunStatus, **kwargs):
    """Create a run record of the window job with these tags, as if the daemon had launched it."""

    return create_run_for_test(
        instance,
        job_name=WINDOW_JOB_NAME,
        tags=dict(tags),
        status=status,
        remote_job_origin=WINDOW_JOB_ORIGIN,
        **kwargs,
    )


def window_config(run_request) -> dict:
    return run_request.run_config["ops"]["new_health_metrics"]["config"]


def free_closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_new_documents_skips(settings, instance, mongo):
    sensor_def = build_sensor(settings)

    first = tick(sensor_def, instance, mongo, None)

    assert first.run_requests == []
    document = json.loads(first.cursor)
    committed = document["committed"]
    assert document["inFlight"] is None
    assert committed["updatedAt"] in first.skip_message
    assert committed["_id"] in first.skip_message

    second = tick(sensor_def, instance, mongo, first.cursor)

    assert second.run_requests == []
    assert json.loads(second.cursor) == document


def test_bare_timestamp_cursor_becomes_json(settings, instance, mongo):
    sensor_def = build_sensor(settings)

    result = tick(sensor_def, instance, mongo, "2026-01-02T03:04:05.678Z")

    assert result.run_requests == []
    assert json.loads(result.cursor)["committed"]["updatedAt"] == "2026-01-02T03:04:05.678Z"


def test_new_document_requests_one_run(settings, instance, mongo, metrics):
    doc_id = insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings)

    result = tick(sensor_def, instance, mongo, None)

    assert len(result.run_requests) == 1
    run_request = result.run_requests[0]
    config = window_config(run_request)
    in_flight = json.loads(result.cursor)["inFlight"]
    assert in_flight is not None
    assert config["end_id"] == str(doc_id)
    assert config["doc_count"] == 1
    assert config["window_id"] == in_flight["windowId"]
    assert config["attempt"] == 1
    assert run_request.tags[WINDOW_ID_TAG] == in_flight["windowId"]
    assert run_request.tags[ATTEMPT_TAG] == "1"
    assert run_request.run_key.startswith(f"window-{in_flight['windowId']}")
    assert in_flight["end"]["_id"] == str(doc_id)
    assert in_flight["attempt"] == 1


@pytest.mark.parametrize("status", [DagsterRunStatus.STARTED, DagsterRunStatus.QUEUED])
def test_window_in_flight_blocks_next(settings, instance, mongo, metrics, status):
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings)
    first = tick(sensor_def, instance, mongo, None)
    run = record_run(instance, first.run_requests[0].tags, status)
    window_id = json.loads(first.cursor)["inFlight"]["windowId"]

    insert_metric(metrics, minutes_ago=1)
    second = tick(sensor_def, instance, mongo, first.cursor)

    assert second.run_requests == []
    assert run.run_id in second.skip_message
    assert window_id in second.skip_message
    assert second.cursor == first.cursor


def test_failed_run_requested_again(settings, instance, mongo, metrics):
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings, retry_backoff_seconds=0.0)
    first = tick(sensor_def, instance, mongo, None)
    first_request = first.run_requests[0]
    failed = record_run(instance, first_request.tags, DagsterRunStatus.FAILURE)

    second = tick(sensor_def, instance, mongo, first.cursor)

    assert len(second.run_requests) == 1
    retry_request = second.run_requests[0]
    first_config = window_config(first_request)
    retry_config = window_config(retry_request)
    assert retry_request.run_key != first_request.run_key
    assert retry_request.tags[ATTEMPT_TAG] == "2"
    assert retry_request.tags[WINDOW_ID_TAG] == first_request.tags[WINDOW_ID_TAG]
    assert retry_config["attempt"] == 2
    for field in ("start_updated_at", "start_id", "end_updated_at", "end_id", "doc_count"):
        assert retry_config[field] == first_config[field], field

    before = json.loads(first.cursor)
    after = json.loads(second.cursor)
    assert after["committed"] == before["committed"]
    assert after["windowsCommitted"] == 0
    assert after["inFlight"]["lastFailedRunId"] == failed.run_id


def test_failed_run_waits_for_backoff(settings, instance, mongo, metrics):
    backoff_seconds = 3600.0
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings, retry_backoff_seconds=backoff_seconds)
    first = tick(sensor_def, instance, mongo, None)
    failed = record_run(instance, first.run_requests[0].tags, DagsterRunStatus.FAILURE)

    seen_at = datetime.now(UTC)
    second = tick(sensor_def, instance, mongo, first.cursor)

    assert second.run_requests == []
    in_flight = json.loads(second.cursor)["inFlight"]
    retry_at = datetime.fromisoformat(in_flight["retryAt"])
    assert seen_at + timedelta(seconds=backoff_seconds - 60) < retry_at
    assert retry_at < seen_at + timedelta(seconds=backoff_seconds + 60)
    assert "retrying after" in second.skip_message
    assert retry_at.strftime("%Y-%m-%dT%H:%M:%S") in second.skip_message
    assert failed.run_id in second.skip_message
    assert in_flight["attempt"] == 1

    third = tick(sensor_def, instance, mongo, second.cursor)

    assert third.run_requests == []
    assert json.loads(third.cursor)["inFlight"]["retryAt"] == in_flight["retryAt"]


def test_max_attempts_stops_requests(settings, instance, mongo, metrics):
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings, max_run_attempts=2, retry_backoff_seconds=0.0)
    first = tick(sensor_def, instance, mongo, None)
    record_run(instance, first.run_requests[0].tags, DagsterRunStatus.FAILURE)
    second = tick(sensor_def, instance, mongo, first.cursor)
    last_failed = record_run(instance, second.run_requests[0].tags, DagsterRunStatus.FAILURE)

    third = tick(sensor_def, instance, mongo, second.cursor)

    in_flight = json.loads(third.cursor)["inFlight"]
    assert third.run_requests == []
    assert last_failed.run_id in third.skip_message
    assert in_flight["windowId"] in third.skip_message
    assert in_flight["end"]["_id"] in third.skip_message
    assert json.loads(third.cursor)["committed"] == json.loads(first.cursor)["committed"]

    fourth = tick(sensor_def, instance, mongo, third.cursor)

    assert fourth.run_requests == []
    assert fourth.cursor == third.cursor


def test_reexecution_after_max_attempts_commits(settings, instance, mongo, metrics):
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings, max_run_attempts=2, retry_backoff_seconds=0.0)
    first = tick(sensor_def, instance, mongo, None)
    record_run(instance, first.run_requests[0].tags, DagsterRunStatus.FAILURE)
    second = tick(sensor_def, instance, mongo, first.cursor)
    last_failed = record_run(instance, second.run_requests[0].tags, DagsterRunStatus.FAILURE)
    stopped = tick(sensor_def, instance, mongo, second.cursor)
    window_end = json.loads(stopped.cursor)["inFlight"]["end"]

    record_run(
        instance,
        last_failed.tags,
        DagsterRunStatus.SUCCESS,
        parent_run_id=last_failed.run_id,
        root_run_id=last_failed.run_id,
    )
    result = tick(sensor_def, instance, mongo, stopped.cursor)

    document = json.loads(result.cursor)
    assert result.run_requests == []
    assert document["committed"] == window_end
    assert document["inFlight"] is None
    assert document["windowsCommitted"] == 1


def test_reexecuted_first_attempt_commits(settings, instance, mongo, metrics):
    # An operator may re-execute any failed run of the window from the UI, not only the newest.
    # Here the newest run is a re-execution of attempt 1 while the cursor is at attempt 2.
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings, max_run_attempts=2, retry_backoff_seconds=0.0)
    first = tick(sensor_def, instance, mongo, None)
    first_failed = record_run(instance, first.run_requests[0].tags, DagsterRunStatus.FAILURE)
    second = tick(sensor_def, instance, mongo, first.cursor)
    record_run(instance, second.run_requests[0].tags, DagsterRunStatus.FAILURE)
    stopped = tick(sensor_def, instance, mongo, second.cursor)
    window_end = json.loads(stopped.cursor)["inFlight"]["end"]

    record_run(
        instance,
        first_failed.tags,
        DagsterRunStatus.SUCCESS,
        parent_run_id=first_failed.run_id,
        root_run_id=first_failed.run_id,
    )
    result = tick(sensor_def, instance, mongo, stopped.cursor)

    document = json.loads(result.cursor)
    assert result.run_requests == [], "a third attempt was requested although max_run_attempts is 2"
    assert document["committed"] == window_end
    assert document["windowsCommitted"] == 1


def test_started_reexecution_blocks_retry(settings, instance, mongo, metrics):
    # The newest run is a STARTED re-execution of attempt 1 while the cursor is at attempt 2.
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings, max_run_attempts=2, retry_backoff_seconds=0.0)
    first = tick(sensor_def, instance, mongo, None)
    first_failed = record_run(instance, first.run_requests[0].tags, DagsterRunStatus.FAILURE)
    second = tick(sensor_def, instance, mongo, first.cursor)
    record_run(instance, second.run_requests[0].tags, DagsterRunStatus.FAILURE)
    stopped = tick(sensor_def, instance, mongo, second.cursor)

    reexecution = record_run(
        instance,
        first_failed.tags,
        DagsterRunStatus.STARTED,
        parent_run_id=first_failed.run_id,
        root_run_id=first_failed.run_id,
    )
    result = tick(sensor_def, instance, mongo, stopped.cursor)

    assert result.run_requests == [], "a second run of the window was requested while one is STARTED"
    assert reexecution.run_id in result.skip_message


def test_success_commits_and_plans_next(settings, instance, mongo, metrics):
    insert_metric(metrics, minutes_ago=10)
    second_id = insert_metric(metrics, minutes_ago=9)
    third_id = insert_metric(metrics, minutes_ago=8)
    sensor_def = build_sensor(settings, max_batch_docs=2)
    first = tick(sensor_def, instance, mongo, None)
    first_config = window_config(first.run_requests[0])
    assert first_config["end_id"] == str(second_id)
    assert first_config["doc_count"] == 2

    record_run(instance, first.run_requests[0].tags, DagsterRunStatus.SUCCESS)
    second = tick(sensor_def, instance, mongo, first.cursor)

    document = json.loads(second.cursor)
    assert document["committed"] == json.loads(first.cursor)["inFlight"]["end"]
    assert document["windowsCommitted"] == 1
    assert len(second.run_requests) == 1
    next_config = window_config(second.run_requests[0])
    assert next_config["start_id"] == str(second_id)
    assert next_config["end_id"] == str(third_id)
    assert next_config["doc_count"] == 1
    assert next_config["window_id"] != first_config["window_id"]


def test_success_without_more_documents_skips(settings, instance, mongo, metrics):
    insert_metric(metrics, minutes_ago=5)
    sensor_def = build_sensor(settings)
    first = tick(sensor_def, instance, mongo, None)
    record_run(instance, first.run_requests[0].tags, DagsterRunStatus.SUCCESS)

    second = tick(sensor_def, instance, mongo, first.cursor)

    document = json.loads(second.cursor)
    assert second.run_requests == []
    assert document["committed"] == json.loads(first.cursor)["inFlight"]["end"]
    assert document["inFlight"] is None
    assert document["windowsCommitted"] == 1


def test_window_policy_sensor_uses_batch_size(instance, mongo, metrics):
    for minutes_ago in (4, 3, 2):
        insert_metric(metrics, minutes_ago)
    sensor_def = build_window_sensor(WindowPolicy(max_batch_docs=1, settle_seconds=0.0), minimum_interval_seconds=30)

    result = tick(sensor_def, instance, mongo, None)

    assert window_config(result.run_requests[0])["doc_count"] == 1


def test_unreachable_mongo_skips(instance):
    port = free_closed_port()
    unreachable = MongoResource(
        uri=f"mongodb://user:secret@127.0.0.1:{port}/",
        database_name="health_metrics",
        server_selection_timeout_ms=500,
    )
    cursor = SensorCursor(committed=Position.at_time(datetime.now(UTC) - timedelta(days=1))).to_json()
    sensor_def = build_window_sensor(WindowPolicy(settle_seconds=0.0), minimum_interval_seconds=30)

    try:
        result = tick(sensor_def, instance, unreachable, cursor)
    finally:
        unreachable.close()

    assert result.run_requests == []
    assert result.cursor == cursor
    assert result.skip_message
    assert f"127.0.0.1:{port}" in result.skip_message
    assert "secret" not in result.skip_message
