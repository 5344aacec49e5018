"""Tests of the `(updatedAt, _id)` watermark, its JSON cursor and the window planning rules.

The tests that read documents run against the real MongoDB-wire server of the `mongo_db` fixture.
"""

import json
import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson import ObjectId

from healthstream_assets import contract
from healthstream_assets.cursor import (
    MIN_OBJECT_ID,
    CursorError,
    InFlight,
    Position,
    SensorCursor,
    Window,
    format_timestamp,
    poll_upper_bound,
)
from healthstream_assets.resources.mongo import MongoResource

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
LOOKBACK_DAYS = 30
VALID_ID = "65a0f0c0a1b2c3d4e5f60718"


@pytest.fixture
def mongo(mongo_uri, mongo_db):
    resource = MongoResource(uri=mongo_uri, database_name=mongo_db.name)
    yield resource
    resource.close()


@pytest.fixture
def metrics(mongo_db):
    return mongo_db[contract.HEALTH_METRICS]


def insert_metric(collection, updated_at: datetime, doc_id: ObjectId | None = None) -> ObjectId:
    document = {"_id": doc_id or ObjectId(), "metricType": "steps", "value": 1, "updatedAt": updated_at}
    collection.insert_one(document)
    return document["_id"]


def read_window_ids(collection, window: Window) -> list[ObjectId]:
    return [document["_id"] for document in collection.find(window.mongo_filter(), {"_id": 1})]


def planned_cursor(end: Position, doc_count: int = 3) -> SensorCursor:
    return SensorCursor.parse(None, NOW, LOOKBACK_DAYS).plan(end, doc_count, NOW)


# JSON round trip and precision


def test_cursor_round_trip_with_in_flight():
    start = Position(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), ObjectId(VALID_ID))
    end = Position(datetime(2026, 1, 3, 0, 0, 0, 1000, tzinfo=UTC), ObjectId())
    in_flight = InFlight(
        window_id="0123456789abcdef",
        attempt=2,
        window=Window(start=start, end=end, doc_count=41),
        requested_at=datetime(2026, 1, 3, 0, 0, 5, 999000, tzinfo=UTC),
        retry_at=datetime(2026, 1, 3, 0, 1, 5, 999000, tzinfo=UTC),
        last_failed_run_id="run-1",
    )
    cursor = SensorCursor(committed=start, in_flight=in_flight, windows_committed=7)

    text = cursor.to_json()
    parsed = SensorCursor.parse(text, NOW, LOOKBACK_DAYS)

    assert parsed == cursor
    assert parsed.to_json() == text
    document = json.loads(text)
    assert document["committed"] == {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": VALID_ID}
    assert document["inFlight"]["end"]["updatedAt"] == "2026-01-03T00:00:00.001Z"
    assert document["inFlight"]["retryAt"] == "2026-01-03T00:01:05.999Z"
    assert document["windowsCommitted"] == 7


def test_cursor_without_in_flight_stores_null():
    cursor = SensorCursor(committed=Position.at_time(NOW))

    document = json.loads(cursor.to_json())

    assert document["inFlight"] is None
    assert SensorCursor.parse(cursor.to_json(), NOW, LOOKBACK_DAYS) == cursor


def test_timestamp_offset_converted_to_utc():
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 1, 2, 5, 4, 5, 678000, tzinfo=plus_two)

    assert format_timestamp(moment) == "2026-01-02T03:04:05.678Z"

    text = json.dumps({"committed": {"updatedAt": "2026-01-02T05:04:05.678+02:00", "_id": VALID_ID}})
    parsed = SensorCursor.parse(text, NOW, LOOKBACK_DAYS)

    assert parsed.committed.updated_at == moment
    assert parsed.committed.updated_at.utcoffset() == timedelta(0)
    assert parsed.committed.to_json()["updatedAt"] == "2026-01-02T03:04:05.678Z"
    assert '"updatedAt": "2026-01-02T03:04:05.678Z"' in parsed.to_json()


def test_timestamp_microseconds_truncated_to_millis():
    moment = datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)

    assert format_timestamp(moment) == "2026-01-02T03:04:05.678Z"
    assert Position.at_time(moment).updated_at.microsecond == 678000

    parsed = SensorCursor.parse("2026-01-02T03:04:05.678999Z", NOW, LOOKBACK_DAYS)
    assert parsed.committed.updated_at.microsecond == 678000


def test_truncation_matches_bson_date(metrics):
    # A cursor that rounded where BSON truncates would put a stored document on the wrong side.
    moment = datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)
    doc_id = insert_metric(metrics, moment)

    stored = metrics.find_one({"_id": doc_id})

    assert Position.from_document(stored) == Position(Position.at_time(moment).updated_at, doc_id)


# Bare timestamp cursor, as typed into `dagster sensor cursor --set`


def test_bare_timestamp_cursor_parsed():
    parsed = SensorCursor.parse(" 2026-01-02T03:04:05.678Z\n", NOW, LOOKBACK_DAYS)

    assert parsed.committed == Position(datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), MIN_OBJECT_ID)
    assert parsed.in_flight is None
    assert parsed.windows_committed == 0


def test_bare_timestamp_includes_that_instant(mongo, metrics):
    instant = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    before = insert_metric(metrics, instant - timedelta(milliseconds=1))
    at = insert_metric(metrics, instant)
    after = insert_metric(metrics, instant + timedelta(milliseconds=1))

    cursor = SensorCursor.parse("2026-01-02T03:04:05.678Z", NOW, LOOKBACK_DAYS)
    end, doc_count = mongo.find_window_end(cursor.committed, NOW, 100)
    window = cursor.plan(end, doc_count, NOW).in_flight.window
    seen = read_window_ids(metrics, window)

    assert doc_count == 2
    assert at in seen
    assert after in seen
    assert before not in seen


# Invalid cursor text

INVALID_CURSORS = [
    pytest.param("2026-01-02T03:04:05", "cursor", id="naive-bare-timestamp"),
    pytest.param("yesterday", "cursor", id="bare-text"),
    pytest.param('{"committed": {"updatedAt": "2026-01-02T03:04:05.678Z"', "JSON", id="truncated-json"),
    pytest.param(
        json.dumps({"committed": {"updatedAt": "2026-01-02T03:04:05", "_id": VALID_ID}}),
        "committed.updatedAt",
        id="naive-committed",
    ),
    pytest.param(
        json.dumps({"committed": {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": "not-an-id"}}),
        "committed._id",
        id="bad-committed-id",
    ),
    pytest.param(
        json.dumps({"committed": {"_id": VALID_ID}}),
        "committed.updatedAt",
        id="missing-committed-time",
    ),
    pytest.param(json.dumps({"inFlight": None}), "committed", id="missing-committed"),
    pytest.param(
        json.dumps(
            {
                "committed": {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": VALID_ID},
                "inFlight": {
                    "windowId": "0123456789abcdef",
                    "attempt": 1,
                    "start": {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": VALID_ID},
                    "end": {"updatedAt": "2026-01-03T00:00:00.000Z", "_id": "65a0f0c0"},
                    "docCount": 3,
                    "requestedAt": "2026-01-03T00:00:01.000Z",
                },
            }
        ),
        "inFlight.end._id",
        id="bad-in-flight-end-id",
    ),
    pytest.param(
        json.dumps(
            {
                "committed": {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": VALID_ID},
                "inFlight": {
                    "windowId": "0123456789abcdef",
                    "attempt": 1,
                    "start": {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": VALID_ID},
                    "end": {"updatedAt": "2026-01-03T00:00:00.000Z", "_id": VALID_ID},
                    "docCount": 3,
                    "requestedAt": "2026-01-03T00:00:01",
                },
            }
        ),
        "inFlight.requestedAt",
        id="naive-requested-at",
    ),
]


@pytest.mark.parametrize(("text", "field"), INVALID_CURSORS)
def test_invalid_cursor_names_field(text, field):
    with pytest.raises(CursorError) as error:
        SensorCursor.parse(text, NOW, LOOKBACK_DAYS)

    assert field in str(error.value)


def test_invalid_object_id_message_shows_value():
    text = json.dumps({"committed": {"updatedAt": "2026-01-02T03:04:05.678Z", "_id": "not-an-id"}})

    with pytest.raises(CursorError) as error:
        SensorCursor.parse(text, NOW, LOOKBACK_DAYS)

    assert "not-an-id" in str(error.value)


def test_naive_datetime_rejected():
    with pytest.raises(CursorError):
        Position.at_time(datetime(2026, 1, 2, 3, 4, 5))


# Ties on updatedAt


TIE_COUNT = 7


@pytest.mark.parametrize("batch_size", [*range(1, TIE_COUNT), TIE_COUNT, TIE_COUNT + 3])
def test_tied_updated_at_split_without_loss(mongo, metrics, batch_size):
    tied_at = datetime(2026, 1, 5, 8, 0, 0, 250000, tzinfo=UTC)
    metrics.create_index([("updatedAt", 1), ("_id", 1)])

    inserted = [
        insert_metric(metrics, tied_at - timedelta(seconds=2)),
        insert_metric(metrics, tied_at - timedelta(milliseconds=1)),
    ]
    # Insert the tied documents out of _id order, so insertion order cannot stand in for _id order.
    tied_ids = sorted(ObjectId() for _ in range(TIE_COUNT))
    random.Random(batch_size).shuffle(tied_ids)
    inserted += [insert_metric(metrics, tied_at, doc_id) for doc_id in tied_ids]
    inserted += [
        insert_metric(metrics, tied_at + timedelta(milliseconds=1)),
        insert_metric(metrics, tied_at + timedelta(minutes=3)),
    ]

    state = SensorCursor(committed=Position.at_time(tied_at - timedelta(days=1)))
    seen = []
    windows = 0
    while (found := mongo.find_window_end(state.committed, NOW, batch_size)) is not None:
        assert windows <= len(inserted), f"more windows than documents at batch size {batch_size}"

        end, doc_count = found
        state = state.plan(end, doc_count, NOW)
        window_ids = read_window_ids(metrics, state.in_flight.window)

        assert len(window_ids) == doc_count
        assert doc_count <= batch_size
        seen += window_ids
        state = state.commit()
        windows += 1

    repeated = [doc_id for doc_id, count in Counter(seen).items() if count > 1]
    assert repeated == []
    assert set(seen) == set(inserted)
    assert len(seen) == len(inserted)
    assert state.windows_committed == windows
    assert windows == math.ceil(len(inserted) / batch_size)


# Lookback, reset and retries


def test_first_window_starts_at_lookback(mongo, metrics):
    insert_metric(metrics, NOW - timedelta(days=LOOKBACK_DAYS, seconds=1))
    recent = insert_metric(metrics, NOW - timedelta(days=LOOKBACK_DAYS - 1))

    cursor = SensorCursor.parse(None, NOW, LOOKBACK_DAYS)
    end, doc_count = mongo.find_window_end(cursor.committed, NOW, 100)
    window = cursor.plan(end, doc_count, NOW).in_flight.window

    assert cursor.committed == Position.at_time(NOW - timedelta(days=LOOKBACK_DAYS))
    assert doc_count == 1
    assert read_window_ids(metrics, window) == [recent]


def test_empty_cursor_same_as_missing():
    assert SensorCursor.parse("  ", NOW, LOOKBACK_DAYS) == SensorCursor.parse(None, NOW, LOOKBACK_DAYS)


def test_reset_cursor_gets_new_run_keys():
    end = Position(NOW - timedelta(days=1), ObjectId())
    bare_timestamp = format_timestamp(NOW - timedelta(days=LOOKBACK_DAYS))

    plans = [
        SensorCursor.parse(None, NOW, LOOKBACK_DAYS).plan(end, 3, NOW),
        SensorCursor.parse(None, NOW, LOOKBACK_DAYS).plan(end, 3, NOW),
        SensorCursor.parse(bare_timestamp, NOW, LOOKBACK_DAYS).plan(end, 3, NOW),
    ]
    windows = [plan.in_flight.window for plan in plans]
    run_keys = {plan.in_flight.run_key for plan in plans}
    window_ids = {plan.in_flight.window_id for plan in plans}

    assert windows[0] == windows[1]
    assert windows[0] == windows[2]
    assert len(run_keys) == 3
    assert len(window_ids) == 3


def test_next_attempt_changes_run_key():
    first = planned_cursor(Position(NOW - timedelta(days=1), ObjectId()))
    later = NOW + timedelta(minutes=1)

    retried = first.next_attempt(later)

    assert retried.in_flight.window_id == first.in_flight.window_id
    assert retried.in_flight.window == first.in_flight.window
    assert retried.in_flight.attempt == 2
    assert retried.in_flight.run_key != first.in_flight.run_key
    assert retried.in_flight.requested_at == later
    assert retried.in_flight.retry_at is None
    assert retried.committed == first.committed


def test_record_failure_backs_off_exponentially():
    backoff = 30.0
    state = planned_cursor(Position(NOW - timedelta(days=1), ObjectId()))

    failed_once = state.record_failure("run-1", NOW, backoff)
    assert failed_once.in_flight.retry_at == NOW + timedelta(seconds=backoff)
    assert failed_once.in_flight.last_failed_run_id == "run-1"
    assert failed_once.in_flight.attempt == 1

    second_seen_at = NOW + timedelta(minutes=5)
    failed_twice = failed_once.next_attempt(NOW + timedelta(minutes=1)).record_failure("run-2", second_seen_at, backoff)
    assert failed_twice.in_flight.retry_at == second_seen_at + timedelta(seconds=2 * backoff)
    assert failed_twice.in_flight.last_failed_run_id == "run-2"
    assert failed_twice.in_flight.attempt == 2

    assert failed_twice.committed == state.committed


def test_commit_moves_to_window_end():
    end = Position(NOW - timedelta(days=1), ObjectId())
    state = planned_cursor(end)

    committed = state.commit()

    assert committed.committed == end
    assert committed.in_flight is None
    assert committed.windows_committed == 1


def test_plan_rejects_second_window():
    state = planned_cursor(Position(NOW - timedelta(days=1), ObjectId()))

    with pytest.raises(CursorError):
        state.plan(Position(NOW, ObjectId()), 1, NOW)


def test_plan_rejects_end_before_committed():
    state = SensorCursor(committed=Position(NOW, ObjectId(VALID_ID)))

    with pytest.raises(CursorError):
        state.plan(Position(NOW, MIN_OBJECT_ID), 1, NOW)


def test_commit_without_in_flight_rejected():
    with pytest.raises(CursorError):
        SensorCursor(committed=Position.at_time(NOW)).commit()


# Poll upper bound


def test_poll_upper_bound_leaves_settle_time(mongo, metrics):
    settle_seconds = 5.0
    settled = insert_metric(metrics, NOW - timedelta(seconds=10))
    at_bound = insert_metric(metrics, NOW - timedelta(seconds=settle_seconds))
    insert_metric(metrics, NOW - timedelta(seconds=2))

    start = Position.at_time(NOW - timedelta(days=1))
    until = poll_upper_bound(NOW, settle_seconds)
    end, doc_count = mongo.find_window_end(start, until, 100)
    window = Window(start=start, end=end, doc_count=doc_count)

    assert until == NOW - timedelta(seconds=settle_seconds)
    assert doc_count == 2
    assert read_window_ids(metrics, window) == [settled, at_bound]


def test_future_document_waits_for_its_time(mongo, metrics):
    settle_seconds = 5.0
    future_at = NOW + timedelta(hours=1)
    present = insert_metric(metrics, NOW - timedelta(minutes=1))
    future = insert_metric(metrics, future_at)
    start = Position.at_time(NOW - timedelta(days=1))

    end_now, count_now = mongo.find_window_end(start, poll_upper_bound(NOW, settle_seconds), 100)
    assert count_now == 1
    assert end_now == Position(NOW - timedelta(minutes=1), present)

    not_settled = poll_upper_bound(future_at + timedelta(seconds=1), settle_seconds)
    end_at_time, count_at_time = mongo.find_window_end(start, not_settled, 100)
    assert count_at_time == 1
    assert end_at_time.doc_id == present

    settled = poll_upper_bound(future_at + timedelta(seconds=settle_seconds), settle_seconds)
    end_later, count_later = mongo.find_window_end(start, settled, 100)
    assert count_later == 2
    assert end_later == Position(future_at, future)


def test_window_end_none_when_nothing_new(mongo, metrics):
    insert_metric(metrics, NOW - timedelta(days=2))

    assert mongo.find_window_end(Position.at_time(NOW - timedelta(days=1)), NOW, 100) is None
