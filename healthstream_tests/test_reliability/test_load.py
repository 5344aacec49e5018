"""Reliability of the analytics writes: concurrent writers, steady load while the pipeline runs, and deletes.

Every test runs against a real MongoDB-wire server (FerretDB in CI) and a real local SparkSession.
Expected analytics come from the pure-Python reference in reference_analytics.py, recomputed from the
final `healthmetrics` collection, or from a fresh run on a second database. The load test prints
its throughput and lag, which pytest shows with -s.
"""

import dataclasses
import random
import re
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from statistics import median

import pytest
from bson import ObjectId
from dagster import DagsterInstance
from pymongo.errors import PyMongoError

from healthstream_assets import contract, spark_io
from healthstream_assets.cursor import SensorCursor, to_utc_millis
from healthstream_assets.definitions import build_definitions, policy_from_settings
from healthstream_assets.jobs import WINDOW_JOB_NAME
from healthstream_assets.reconciliation import RECONCILIATION_JOB_NAME
from healthstream_assets.resources.mongo import MongoResource, ensure_indexes
from healthstream_assets.run_once import run_once
from healthstream_assets.sensors import evaluate_tick
from healthstream_assets.transforms.analytics import GOALS_SCHEMA, to_analytics_documents, window_statistics
from healthstream_assets.transforms.rolling import rolling_averages
from reference_analytics import compute_reference, daily_from_documents

RELATIVE_TOLERANCE = 1e-9

# The reference words its anomaly message differently, and detectedAt is the run's calculatedAt,
# so neither is a value both sides can compute.
FIELDS_NOT_COMPARED = {"analytics.anomalyDetails.message", "analytics.anomalyDetails.detectedAt"}

NOTHING_NEW = "no documents updated after"

# Bound on ticks while waiting for the pipeline to go idle. One window run took 10-80 s on a
# shared 2-core machine, and the first run in a process was the slowest.
MAX_TICKS_UNTIL_IDLE = 10

# The load test writes at most WRITE_RATE_PER_SECOND * WRITE_SECONDS times, for at most WRITE_SECONDS.
WRITE_RATE_PER_SECOND = 5.0
WRITE_SECONDS = 40.0

HISTORY_DAYS = 120

# Rounds per upsert race test. With 3 rounds, a run on 2 shared cores saw the race in 0 to 3 of them.
UPSERT_RACE_ROUNDS = 5

# Limits on threads that talk to the server, so a stuck server fails the test instead of hanging it.
UPSERT_TIMEOUT_SECONDS = 120.0
WINDOW_RUN_TIMEOUT_SECONDS = 300.0
WRITER_JOIN_TIMEOUT_SECONDS = 60.0


# --- Generated data -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GeneratedUser:
    """A user of the generated data set. With `goals` None the user has no `users` document."""

    user_id: ObjectId
    goals: dict | None


def _generated_users() -> list[GeneratedUser]:
    """Return users covering custom, default, partial and missing goals."""

    return [
        GeneratedUser(ObjectId(), {"stepGoal": 6000, "sleepGoal": 7, "calorieGoal": 1800, "distanceGoal": 4, "weightGoal": 70}),
        GeneratedUser(ObjectId(), dict(contract.DEFAULT_GOALS)),
        GeneratedUser(ObjectId(), {"stepGoal": 12000}),
        GeneratedUser(ObjectId(), None),
    ]


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _random_metrics(rng: random.Random) -> dict:
    """Return one day's metrics: steps near the goals so streaks form, sometimes an outlier, weight on a third of days."""

    steps = rng.randint(3000, 14000)
    if rng.random() < 0.04:
        steps = rng.randint(40000, 90000)
    elif rng.random() < 0.03:
        steps = 0

    metrics = {"steps": steps, "sleepHours": round(rng.uniform(4.5, 9.5), 2)}
    if rng.random() < 0.35:
        metrics["weight"] = round(rng.uniform(65.0, 80.0), 1)
    return metrics


def _seed(db, users: list[GeneratedUser], rng: random.Random, today: date, fill: float) -> None:
    """Insert the users and a `fill` share of their last HISTORY_DAYS days, stamped one second ago."""

    stamped = datetime.now(UTC) - timedelta(seconds=1)
    user_documents = [{"_id": user.user_id, "goals": user.goals} for user in users if user.goals is not None]
    db[contract.USERS].insert_many(user_documents)

    documents = []
    for user in users:
        for offset in range(HISTORY_DAYS):
            if rng.random() >= fill:
                continue
            documents.append(
                {
                    "userId": user.user_id,
                    "date": _day_start(today - timedelta(days=offset)),
                    # Not "import": an imported day of 0 steps is the non-wear sentinel, which the
                    # reference does not implement.
                    "source": rng.choice(["manual", "googlefit"]),
                    "metrics": _random_metrics(rng),
                    "createdAt": stamped,
                    "updatedAt": stamped,
                }
            )
    db[contract.HEALTH_METRICS].insert_many(documents)


# --- Expected and stored analytics ------------------------------------------------------------------


def _stored_analytics(db) -> tuple[dict, list]:
    """Return the analytics documents by (userId hex, metricType, timeRange), and the keys stored more than once."""

    documents = list(db[contract.ANALYTICS].find())
    counts = Counter((str(doc["userId"]), doc["metricType"], doc["timeRange"]) for doc in documents)
    repeated = sorted(key for key, count in counts.items() if count > 1)
    by_key = {(str(doc["userId"]), doc["metricType"], doc["timeRange"]): doc for doc in documents}
    return by_key, repeated


def _reference_analytics(db) -> dict:
    """Recompute every analytics document with the reference implementation from the collections as they are now."""

    daily = daily_from_documents(db[contract.HEALTH_METRICS].find())
    goals = {str(doc["_id"]): doc.get("goals") for doc in db[contract.USERS].find()}
    return compute_reference(daily, goals, datetime.now(UTC))


def _flatten(value, prefix: str, flat: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", flat)
        return

    # Calendar days are stored as BSON Dates at 00:00 UTC, but the reference returns datetime.date.
    if isinstance(value, datetime) and value.astimezone(UTC).time() == datetime.min.time():
        value = value.astimezone(UTC).date()
    flat[prefix] = value


def _computed_fields(document: dict) -> dict:
    """Return the computed fields of a stored or reference document, flattened to dotted keys."""

    flat = {}
    for key in ("asOfDate", "windowStartDate", "analytics"):
        _flatten(document.get(key), key, flat)
    for field in FIELDS_NOT_COMPARED:
        flat.pop(field, None)
    return flat


def _same_value(stored, expected) -> bool:
    """Compare one field: floats within RELATIVE_TOLERANCE, everything else exactly, bool and int kept apart."""

    if isinstance(expected, float) and isinstance(stored, int | float) and not isinstance(stored, bool):
        return stored == pytest.approx(expected, rel=RELATIVE_TOLERANCE)
    if isinstance(expected, bool) or isinstance(stored, bool):
        return stored is expected
    return type(stored) is type(expected) and stored == expected


def _field_differences(stored: dict, expected: dict) -> list[str]:
    """Return one line per computed field that differs, for the keys present on both sides."""

    missing = "<missing>"
    differences = []
    for key in sorted(stored.keys() & expected.keys()):
        stored_fields = _computed_fields(stored[key])
        expected_fields = _computed_fields(expected[key])
        for field in sorted(stored_fields.keys() | expected_fields.keys()):
            stored_value = stored_fields.get(field, missing)
            expected_value = expected_fields.get(field, missing)
            if not _same_value(stored_value, expected_value):
                differences.append(f"{key} {field}: stored {stored_value!r}, expected {expected_value!r}")
    return differences


# --- Running the pipeline -----------------------------------------------------------------------------


def _run_until_idle(defs, instance, cursor: str | None, policy) -> tuple[str, list, str | None]:
    """Tick and run until a tick requests no run. Return the cursor, the runs' outcomes and the last skip reason."""

    outcomes = []
    for _ in range(MAX_TICKS_UNTIL_IDLE):
        outcome = run_once(defs, instance, cursor, policy)
        cursor = outcome.cursor
        if outcome.run_id is None:
            return cursor, outcomes, outcome.skip_reason
        outcomes.append(outcome)

    pytest.fail(f"the pipeline still requested runs after {MAX_TICKS_UNTIL_IDLE} ticks, outcomes: {outcomes}")


def _join_or_fail(threads: list[threading.Thread], timeout_seconds: float, description: str) -> None:
    """Wait for daemon threads, and fail the test when any is still running after `timeout_seconds` in total."""

    deadline = time.monotonic() + timeout_seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))

    running = [thread.name for thread in threads if thread.is_alive()]
    if running:
        pytest.fail(f"{description} threads {running} still running after {timeout_seconds:.0f} s, so the server may be stuck")


def _root_cause(error: BaseException) -> str:
    """Return the innermost `Caused by:` line of a Py4J error, or the first line of any other error."""

    text = str(error)
    causes = re.findall(r"Caused by: (.*)", text)
    return causes[-1] if causes else text.splitlines()[0]


# --- Concurrent analytics writers ---------------------------------------------------------------------


def _analytics_frame(spark, user_ids: list[str], step_offset: float, writer: str):
    """Return cached analytics documents of steps and sleep for `user_ids`, as one Spark partition.

    One partition per writer makes two concurrent writes step through the same keys in the same
    order at the same moment, the interleaving in which both upserts miss and both insert. Without
    the unique index, 4 partitions per writer gave no duplicate in 4 rounds, and 1 partition gave
    24-65 duplicates of 120 keys in each of 4 rounds (FerretDB with SQLite, 2 shared cores).
    """

    rng = random.Random(7)
    rows = []
    for user_id in user_ids:
        for offset in range(10):
            day = date(2026, 1, 1) + timedelta(days=offset)
            rows.append((user_id, "steps", day, float(rng.randint(1000, 9000)) + step_offset))
            rows.append((user_id, "sleepHours", day, round(rng.uniform(5, 9), 2)))

    daily = spark.createDataFrame(rows, "userId string, metricType string, date date, value double")
    no_touched_days = spark.createDataFrame([], "userId string, date date")
    goals = spark.createDataFrame([(user_id, None, None, None, None, None) for user_id in user_ids], "userId string, " + GOALS_SCHEMA)
    statistics = window_statistics(daily, rolling_averages(daily, no_touched_days), goals)

    calculated_at = datetime(2026, 1, 11, tzinfo=UTC)
    documents = to_analytics_documents(statistics, writer, calculated_at, 0, spark.version).coalesce(1).cache()
    documents.count()
    return documents


def _upsert_concurrently(resources: list[MongoResource], frames: list) -> list[str]:
    """Start one upsert_analytics per (resource, frame) at the same moment. Return the errors raised, as text."""

    barrier = threading.Barrier(len(frames))
    errors = []

    def write(resource: MongoResource, frame) -> None:
        barrier.wait()
        try:
            spark_io.upsert_analytics(frame, resource)
        except Exception as error:  # Py4J raises Py4JJavaError, and any other error must reach the assert too.
            errors.append(_root_cause(error))

    threads = [threading.Thread(target=write, args=pair, daemon=True) for pair in zip(resources, frames)]
    for thread in threads:
        thread.start()
    _join_or_fail(threads, UPSERT_TIMEOUT_SECONDS, "analytics upsert")
    return errors


@pytest.fixture
def analytics_writers(mongo_uri, mongo_db):
    """Two MongoResources on the test database, with the pipeline's indexes created."""

    resources = [MongoResource(uri=mongo_uri, database_name=mongo_db.name) for _ in range(2)]
    resources[0].ensure_indexes()
    yield resources
    for resource in resources:
        resource.close()


@pytest.fixture
def duplicate_key_checks(monkeypatch) -> list[bool]:
    """Record every call of spark_io.is_duplicate_key_error, the retry's test of a failed write."""

    original = spark_io.is_duplicate_key_error
    results = []

    def recording(error: Exception) -> bool:
        result = original(error)
        results.append(result)
        return result

    monkeypatch.setattr(spark_io, "is_duplicate_key_error", recording)
    return results


def test_racing_upserts_one_document_per_key(spark, mongo_db, analytics_writers, duplicate_key_checks):
    user_ids = [str(ObjectId()) for _ in range(20)]
    documents = _analytics_frame(spark, user_ids, 0.0, "writer-a")
    expected_keys = {(user_id, metric, time_range) for user_id in user_ids for metric in ("steps", "sleepHours") for time_range in contract.TIME_RANGES}

    repeated_by_round = []
    stored_keys_by_round = []
    errors_by_round = []
    for _ in range(UPSERT_RACE_ROUNDS):
        mongo_db[contract.ANALYTICS].delete_many({})

        errors_by_round.append(_upsert_concurrently(analytics_writers, [documents, documents]))

        stored, repeated = _stored_analytics(mongo_db)
        repeated_by_round.append(repeated)
        stored_keys_by_round.append(set(stored))

    print(f"racing upserts: duplicate-key checks {duplicate_key_checks}, errors per round {[len(e) for e in errors_by_round]}")
    assert repeated_by_round == [[]] * UPSERT_RACE_ROUNDS
    assert stored_keys_by_round == [expected_keys] * UPSERT_RACE_ROUNDS
    # The unique index turns the lost race into a duplicate-key error, which the one retry in
    # upsert_analytics must absorb, so neither writer may fail.
    # NOTE: fails on FerretDB, whose update reply with writeErrors has no `n` field. The Java driver
    # then raises BsonInvalidOperationException, which is_duplicate_key_error does not recognise.
    assert errors_by_round == [[]] * UPSERT_RACE_ROUNDS, (
        f"upsert_analytics raised instead of retrying, and is_duplicate_key_error returned {duplicate_key_checks}"
    )


def test_racing_upserts_whole_documents(spark, mongo_db, analytics_writers, duplicate_key_checks):
    user_ids = [str(ObjectId()) for _ in range(20)]
    first = _analytics_frame(spark, user_ids, 0.0, "writer-a")
    second = _analytics_frame(spark, user_ids, 500.0, "writer-b")
    averages = {}
    for frame in (first, second):
        for row in frame.select("userId", "metricType", "timeRange", "analytics", "metadata").collect():
            averages[(row["metadata"]["sparkJobId"], row["userId"], row["metricType"], row["timeRange"])] = row["analytics"]["rollingAverage"]
    key_count = len(user_ids) * 2 * len(contract.TIME_RANGES)

    repeated_by_round = []
    counts_by_round = []
    mixed_by_round = []
    errors_by_round = []
    for _ in range(UPSERT_RACE_ROUNDS):
        mongo_db[contract.ANALYTICS].delete_many({})

        errors_by_round.append(_upsert_concurrently(analytics_writers, [first, second]))

        stored, repeated = _stored_analytics(mongo_db)
        repeated_by_round.append(repeated)
        counts_by_round.append(len(stored))

        # Each document must come whole from one writer: its rollingAverage is that writer's value.
        mixed = []
        for key, document in stored.items():
            frame_key = (document["metadata"]["sparkJobId"], f'{{"$oid":"{key[0]}"}}', key[1], key[2])
            if document["analytics"]["rollingAverage"] != pytest.approx(averages[frame_key], rel=RELATIVE_TOLERANCE):
                mixed.append(key)
        mixed_by_round.append(mixed)

    print(f"racing upserts of different values: duplicate-key checks {duplicate_key_checks}, errors per round {[len(e) for e in errors_by_round]}")
    assert repeated_by_round == [[]] * UPSERT_RACE_ROUNDS
    assert counts_by_round == [key_count] * UPSERT_RACE_ROUNDS
    assert mixed_by_round == [[]] * UPSERT_RACE_ROUNDS
    assert errors_by_round == [[]] * UPSERT_RACE_ROUNDS, (
        f"upsert_analytics raised instead of retrying, and is_duplicate_key_error returned {duplicate_key_checks}"
    )


def test_sequential_upserts_keep_newest(spark, mongo_db, analytics_writers):
    user_ids = [str(ObjectId()) for _ in range(5)]
    older = _analytics_frame(spark, user_ids, 0.0, "writer-a")
    newer = _analytics_frame(spark, user_ids, 500.0, "writer-b")
    key_count = len(user_ids) * 2 * len(contract.TIME_RANGES)

    first_writer, second_writer = analytics_writers
    for first, second in ((older, newer), (newer, older)):
        spark_io.upsert_analytics(first, first_writer)
        spark_io.upsert_analytics(second, second_writer)

        newest = second.select("analytics", "metadata").first()["metadata"]["sparkJobId"]
        stored, repeated = _stored_analytics(mongo_db)
        assert repeated == []
        assert len(stored) == key_count
        assert {document["metadata"]["sparkJobId"] for document in stored.values()} == {newest}


def test_racing_window_runs_one_document_per_key(settings, mongo_db, tmp_path, spark, duplicate_key_checks):
    ensure_indexes(mongo_db)
    users = _generated_users()
    today = datetime.now(UTC).date()
    _seed(mongo_db, users, random.Random(11), today, fill=0.5)

    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    decision = evaluate_tick(None, DagsterInstance.ephemeral(), defs.resources["mongo"], policy)
    assert decision.run_request is not None

    # Each run gets its own Parquet folder and Dagster instance, as two deployments would have.
    # NOTE: with one shared Parquet folder the second run failed in metric_history ("chmod: cannot
    # access .../parquet/metric_history/_temporary/..."). One shared in-memory instance raised
    # "database table is locked". A deployment relies on the dagster.yaml tag limit of one run.
    results = {}
    barrier = threading.Barrier(2)

    def run_window(name: str) -> None:
        run_settings = dataclasses.replace(settings, parquet_base_path=str(tmp_path / f"parquet-{name}"))
        job = build_definitions(run_settings).resolve_job_def(WINDOW_JOB_NAME)
        barrier.wait()
        started = time.monotonic()
        result = job.execute_in_process(
            run_config=decision.run_request.run_config,
            instance=DagsterInstance.ephemeral(),
            tags=decision.run_request.tags,
            raise_on_error=False,
        )
        failures = [event.message for event in result.all_events if event.is_failure]
        results[name] = (result.success, round(time.monotonic() - started, 1), failures)

    threads = [threading.Thread(target=run_window, args=(name,), daemon=True) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    _join_or_fail(threads, WINDOW_RUN_TIMEOUT_SECONDS, "window run")

    print(f"racing window runs: {results}, duplicate-key checks {duplicate_key_checks}")
    assert results["first"][0] is True, results["first"]
    assert results["second"][0] is True, results["second"]

    stored, repeated = _stored_analytics(mongo_db)
    expected = _reference_analytics(mongo_db)
    assert repeated == []
    assert stored.keys() == expected.keys()
    assert _field_differences(stored, expected) == []


# --- Steady load while the pipeline runs ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MetricWrite:
    """One write of the load generator: its updatedAt as stored (milliseconds) and what it touched."""

    updated_at: datetime
    inserted: bool
    old_day: bool


def _write_steadily(collection, users: list[GeneratedUser], today: date, stop: threading.Event, writes: list, errors: list) -> None:
    """Upsert days as the app does, WRITE_RATE_PER_SECOND for at most WRITE_SECONDS, until `stop` is set.

    Each write is an upsert on {userId, date} with updatedAt now. Half touch the last week, a sixth
    touch days 60-119 days back and the rest any day. One write in 20 unsets the day's weight.
    """

    rng = random.Random(23)
    total = int(WRITE_RATE_PER_SECOND * WRITE_SECONDS)
    started = time.monotonic()
    for index in range(total):
        delay = started + index / WRITE_RATE_PER_SECOND - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set() or time.monotonic() - started > WRITE_SECONDS:
            return

        roll = rng.random()
        if roll < 0.5:
            offset = rng.randint(0, 6)
        elif roll < 0.67:
            offset = rng.randint(60, HISTORY_DAYS - 1)
        else:
            offset = rng.randint(0, HISTORY_DAYS - 1)

        metrics = _random_metrics(rng)
        unset_weight = rng.random() < 0.05
        if unset_weight:
            metrics.pop("weight", None)

        now = datetime.now(UTC)
        update = {
            "$set": {**{f"metrics.{name}": value for name, value in metrics.items()}, "source": "manual", "updatedAt": now},
            "$setOnInsert": {"createdAt": now},
        }
        if unset_weight:
            update["$unset"] = {"metrics.weight": ""}

        user = rng.choice(users)
        try:
            result = collection.update_one(
                {"userId": user.user_id, "date": _day_start(today - timedelta(days=offset))}, update, upsert=True
            )
        except PyMongoError as error:
            errors.append(f"write {index} for user {user.user_id} failed: {error}")
            return
        writes.append(MetricWrite(updated_at=to_utc_millis(now), inserted=result.upserted_id is not None, old_day=offset >= 60))


@dataclasses.dataclass(frozen=True)
class WindowRun:
    """One succeeded window run of the load test."""

    finished_at: datetime
    committed_updated_at: datetime
    documents: int
    seconds: float
    during_writes: bool


def _tick(defs, instance, cursor: str | None, policy, during_writes: bool, runs: list, failed_runs: list):
    """Run one tick and its run, record the run in `runs` or `failed_runs`, and return the outcome."""

    started = time.monotonic()
    outcome = run_once(defs, instance, cursor, policy)
    if outcome.run_id is None:
        return outcome
    if not outcome.run_succeeded:
        failed_runs.append(outcome.run_id)
        return outcome

    committed = SensorCursor.parse(outcome.cursor, datetime.now(UTC), policy.lookback_days).committed
    runs.append(
        WindowRun(
            finished_at=datetime.now(UTC),
            committed_updated_at=committed.updated_at,
            documents=outcome.run_config["ops"]["new_health_metrics"]["config"]["doc_count"],
            seconds=time.monotonic() - started,
            during_writes=during_writes,
        )
    )
    return outcome


def _lag_seconds(write: MetricWrite, runs: list[WindowRun]) -> float:
    """Return the seconds from the write's updatedAt to the end of the first run whose watermark reached it."""

    reached = [run.finished_at for run in runs if run.committed_updated_at >= write.updated_at]
    return (min(reached) - write.updated_at).total_seconds() if reached else float("inf")


def test_steady_writes_all_reflected(settings, mongo_db, spark):
    ensure_indexes(mongo_db)
    users = _generated_users()
    today = datetime.now(UTC).date()
    _seed(mongo_db, users, random.Random(5), today, fill=0.6)

    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    instance = DagsterInstance.ephemeral()

    # NOTE: fails while assets.py caches its MongoDB reads, because a later run that touches the same
    # users builds the same read plan, and Spark serves it the history cached by an earlier run.
    writes: list[MetricWrite] = []
    writer_errors: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(
        target=_write_steadily,
        args=(mongo_db[contract.HEALTH_METRICS], users, today, stop, writes, writer_errors),
        daemon=True,
    )

    runs: list[WindowRun] = []
    failed_runs: list[str] = []
    cursor = None
    writer.start()
    try:
        while writer.is_alive():
            outcome = _tick(defs, instance, cursor, policy, True, runs, failed_runs)
            cursor = outcome.cursor
            if outcome.run_id is None:
                time.sleep(0.5)
    finally:
        stop.set()
        _join_or_fail([writer], WRITER_JOIN_TIMEOUT_SECONDS, "healthmetrics writer")

    drain_started = time.monotonic()
    skip_reason = None
    for _ in range(MAX_TICKS_UNTIL_IDLE):
        outcome = _tick(defs, instance, cursor, policy, False, runs, failed_runs)
        cursor = outcome.cursor
        if outcome.run_id is None:
            skip_reason = outcome.skip_reason
            break
    drain_seconds = time.monotonic() - drain_started

    write_span = (writes[-1].updated_at - writes[0].updated_at).total_seconds() if len(writes) > 1 else 0.0
    lags = [_lag_seconds(write, runs) for write in writes] or [float("inf")]
    print(
        f"\nload: {len(writes)} writes over {write_span:.1f} s ({(len(writes) - 1) / max(write_span, 1e-9):.2f}/s), "
        f"{sum(write.inserted for write in writes)} inserted a day, {sum(write.old_day for write in writes)} went to days 60+ back.\n"
        f"load: {len(runs)} runs processed {sum(run.documents for run in runs)} documents. "
        f"Run seconds during writes {[round(run.seconds, 1) for run in runs if run.during_writes]}, "
        f"after {[round(run.seconds, 1) for run in runs if not run.during_writes]}, drain {drain_seconds:.1f} s.\n"
        f"load: lag from updatedAt to the end of the run that committed it: median {median(lags):.1f} s, max {max(lags):.1f} s"
    )

    assert writer_errors == []
    assert len(writes) >= WRITE_RATE_PER_SECOND * WRITE_SECONDS * 0.9
    assert skip_reason is not None, f"the pipeline still requested runs after {MAX_TICKS_UNTIL_IDLE} ticks"
    assert skip_reason.startswith(NOTHING_NEW), skip_reason
    assert failed_runs == []
    assert max(lags) < float("inf")

    stored, repeated = _stored_analytics(mongo_db)
    expected = _reference_analytics(mongo_db)
    assert repeated == []
    assert sorted(expected.keys() - stored.keys()) == []
    assert sorted(stored.keys() - expected.keys()) == []
    differences = _field_differences(stored, expected)
    assert differences == [], f"{len(differences)} fields of {len(stored)} documents differ from the final collection"


# --- Deletes and reconciliation -------------------------------------------------------------------------


@pytest.fixture
def second_db(mongo_client):
    """A second fresh database with a unique name, dropped after the test."""

    db = mongo_client[f"hs_test_{uuid.uuid4().hex[:10]}"]
    yield db
    mongo_client.drop_database(db.name)


def test_reconciliation_after_deletes(settings, mongo_db, second_db, tmp_path, spark):
    ensure_indexes(mongo_db)
    users = _generated_users()
    today = datetime.now(UTC).date()
    _seed(mongo_db, users, random.Random(17), today, fill=0.7)

    # The trimmed user weighs in only on their last 3 days, so deleting their last 5 days removes
    # the weight metric entirely, and reconciliation must delete those analytics too.
    trimmed, removed = users[0].user_id, users[1].user_id
    metrics_collection = mongo_db[contract.HEALTH_METRICS]
    trimmed_days = sorted(doc["date"] for doc in metrics_collection.find({"userId": trimmed}, {"date": 1}))
    metrics_collection.update_many({"userId": trimmed}, {"$unset": {"metrics.weight": ""}})
    for day in trimmed_days[-3:]:
        metrics_collection.update_one({"userId": trimmed, "date": day}, {"$set": {"metrics.weight": 72.5}})

    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    instance = DagsterInstance.ephemeral()

    started = time.monotonic()
    cursor, outcomes, _ = _run_until_idle(defs, instance, None, policy)
    first_run_seconds = time.monotonic() - started
    assert [outcome.run_succeeded for outcome in outcomes] == [True]

    analytics = mongo_db[contract.ANALYTICS]
    old_last_day = trimmed_days[-1]
    assert analytics.count_documents({"userId": trimmed, "metricType": "weight"}) == len(contract.TIME_RANGES)

    deleted_days = trimmed_days[-5:]
    metrics_collection.delete_many({"userId": trimmed, "date": {"$in": deleted_days}})
    metrics_collection.delete_many({"userId": removed})
    new_last_day = trimmed_days[-6]

    # Deletes leave no document past the watermark, so the sensor requests no run.
    cursor, outcomes, skip_reason = _run_until_idle(defs, instance, cursor, policy)
    assert outcomes == []
    assert skip_reason.startswith(NOTHING_NEW), skip_reason

    stale, _ = _stored_analytics(mongo_db)
    assert analytics.count_documents({"userId": removed}) > 0
    assert analytics.count_documents({"userId": trimmed, "metricType": "weight"}) == len(contract.TIME_RANGES)
    assert stale[(str(trimmed), "steps", "7day")]["asOfDate"] == old_last_day

    started = time.monotonic()
    reconciliation = defs.resolve_job_def(RECONCILIATION_JOB_NAME).execute_in_process(instance=instance, raise_on_error=False)
    reconciliation_seconds = time.monotonic() - started
    assert reconciliation.success is True

    # A fresh run from an empty cursor on a copy of the remaining documents is the expected state.
    second_db[contract.HEALTH_METRICS].insert_many(list(metrics_collection.find()))
    second_db[contract.USERS].insert_many(list(mongo_db[contract.USERS].find()))
    ensure_indexes(second_db)
    fresh_settings = dataclasses.replace(settings, mongo_db_name=second_db.name, parquet_base_path=str(tmp_path / "fresh-parquet"))
    started = time.monotonic()
    _, fresh_outcomes, _ = _run_until_idle(build_definitions(fresh_settings), DagsterInstance.ephemeral(), None, policy)
    fresh_run_seconds = time.monotonic() - started
    assert [outcome.run_succeeded for outcome in fresh_outcomes] == [True]

    print(
        f"\nreconciliation: first window run {first_run_seconds:.1f} s, reconciliation {reconciliation_seconds:.1f} s, "
        f"fresh run {fresh_run_seconds:.1f} s"
    )

    reconciled, repeated = _stored_analytics(mongo_db)
    fresh, fresh_repeated = _stored_analytics(second_db)
    assert repeated == []
    assert fresh_repeated == []
    assert analytics.count_documents({"userId": removed}) == 0
    assert analytics.count_documents({"userId": trimmed, "metricType": "weight"}) == 0
    assert reconciled[(str(trimmed), "steps", "7day")]["asOfDate"] == new_last_day
    assert reconciled[(str(trimmed), "sleepHours", "90day")]["asOfDate"] == new_last_day
    assert sorted(fresh.keys() - reconciled.keys()) == []
    assert sorted(reconciled.keys() - fresh.keys()) == []
    assert _field_differences(reconciled, fresh) == []


def test_second_reconciliation_after_deletes(settings, mongo_db, spark):
    ensure_indexes(mongo_db)
    users = _generated_users()
    today = datetime.now(UTC).date()
    _seed(mongo_db, users, random.Random(29), today, fill=0.5)

    defs = build_definitions(settings)
    instance = DagsterInstance.ephemeral()
    reconciliation_job = defs.resolve_job_def(RECONCILIATION_JOB_NAME)

    first = reconciliation_job.execute_in_process(instance=instance, raise_on_error=False)
    assert first.success is True
    assert mongo_db[contract.ANALYTICS].count_documents({"userId": users[2].user_id}) > 0

    # A second reconciliation in the same process after deletes, as one long-lived process running
    # the daily schedule would do.
    # NOTE: fails while reconciliation.py caches its read of the whole collection, because Spark
    # then serves the second run's identical read from the first run's cache.
    metrics_collection = mongo_db[contract.HEALTH_METRICS]
    trimmed_days = sorted(doc["date"] for doc in metrics_collection.find({"userId": users[3].user_id}, {"date": 1}))
    metrics_collection.delete_many({"userId": users[2].user_id})
    metrics_collection.delete_many({"userId": users[3].user_id, "date": {"$in": trimmed_days[-3:]}})

    second = reconciliation_job.execute_in_process(instance=instance, raise_on_error=False)
    assert second.success is True

    stored, repeated = _stored_analytics(mongo_db)
    expected = _reference_analytics(mongo_db)
    assert repeated == []
    assert mongo_db[contract.ANALYTICS].count_documents({"userId": users[2].user_id}) == 0, (
        "the analytics of the user deleted between the two reconciliations survived the second one"
    )
    assert stored[(str(users[3].user_id), "steps", "7day")]["asOfDate"] == trimmed_days[-4]
    assert sorted(expected.keys() - stored.keys()) == []
    assert sorted(stored.keys() - expected.keys()) == []
    differences = _field_differences(stored, expected)
    assert differences == [], f"{len(differences)} fields of {len(stored)} documents differ from the remaining data"
