"""Reliability of the window pipeline against awkward input.

Covers writes committed after a tick already read past their `updatedAt`, clients whose clock is
ahead, malformed documents mixed into the Fitbit data, and a MongoDB password that must appear in
no output and no stored record. Every window runs the real job on the local SparkSession against
the test server. Ticks that need a chosen clock call `sensors.evaluate_tick(..., now=...)`. The
next tick finds the window's run by its tags and commits it, as the sensor does under the daemon.
"""

import json
import os
import socket
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymongo
import pytest
from bson import ObjectId
from dagster import AssetCheckSeverity, AssetKey, DagsterEventType, DagsterInstance, Definitions
from dagster._serdes import serialize_value
from pymongo.errors import OperationFailure

from healthstream_assets import contract, spark_io
from healthstream_assets.assets import BAD_INPUT_CHECK
from healthstream_assets.cli import prepare_dagster_home
from healthstream_assets.cursor import Position, Window, to_utc_millis
from healthstream_assets.definitions import build_definitions, build_mongo_resource, policy_from_settings
from healthstream_assets.fitbit import fitbit_user_id, load_fitbit
from healthstream_assets.jobs import WINDOW_JOB_NAME
from healthstream_assets.resources.mongo import MongoResource, ensure_indexes
from healthstream_assets.run_once import run_once
from healthstream_assets.sensors import TickDecision, WindowPolicy, evaluate_tick
from healthstream_assets.settings import Settings
from healthstream_assets.transforms.validation import validate_document_fields

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = os.environ.get("HEALTHSTREAM_TOOLS_DIR") or str(REPO_ROOT / ".tools")
HEALTHSTREAM_CLI = Path(sys.executable).parent / "healthstream"

DAY = datetime(2016, 5, 2, tzinfo=UTC)
SETTLE = timedelta(seconds=2)


def _env(mongo_uri: str, db_name: str, state_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        "MONGO_URI": mongo_uri,
        "MONGO_DB_NAME": db_name,
        "HEALTHSTREAM_STATE_DIR": str(state_dir),
        "HEALTHSTREAM_TOOLS_DIR": TOOLS_DIR,
        "SETTLE_SECONDS": "0",
        "RETRY_BACKOFF_SECONDS": "0",
    }
    return {**env, **overrides}


def _settings_with_settle_lag(mongo_uri: str, mongo_db, tmp_path: Path) -> Settings:
    env = _env(mongo_uri, mongo_db.name, tmp_path / "state", SETTLE_SECONDS=str(SETTLE.total_seconds()))
    return Settings.from_env(env)


@dataclass
class SensorLoop:
    """Sensor ticks at chosen clock times, with each requested window run in this process."""

    defs: Definitions
    instance: DagsterInstance
    mongo: MongoResource
    policy: WindowPolicy
    cursor: str | None = None
    windows: list[Window] = field(default_factory=list)

    @classmethod
    def start(cls, settings: Settings) -> "SensorLoop":
        return cls(
            defs=build_definitions(settings),
            instance=DagsterInstance.ephemeral(),
            mongo=build_mongo_resource(settings),
            policy=policy_from_settings(settings),
        )

    def tick(self, now: datetime) -> TickDecision:
        decision = evaluate_tick(self.cursor, self.instance, self.mongo, self.policy, now=now)
        self.cursor = decision.cursor.to_json()
        if decision.run_request is not None:
            self.windows.append(decision.cursor.in_flight.window)
        return decision

    def run(self, decision: TickDecision) -> str | None:
        """Execute the run the tick requested, with its tags, and return the run id (None: no request)."""

        request = decision.run_request
        if request is None:
            return None

        result = self.defs.resolve_job_def(WINDOW_JOB_NAME).execute_in_process(
            run_config=request.run_config,
            instance=self.instance,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
        return result.run_id

    def close(self) -> None:
        self.mongo.close()


def _insert_day(collection, steps: int, updated_at: datetime) -> dict:
    """Insert one day of a new user, so the user's analytics come from this document alone."""

    document = {
        "_id": ObjectId(),
        "userId": ObjectId(),
        "date": DAY,
        "source": "manual",
        "metrics": {"steps": steps},
        "createdAt": updated_at,
        "updatedAt": to_utc_millis(updated_at),
    }
    collection.insert_one(document)
    return document


def _window_contains(window: Window, document: dict) -> bool:
    return window.start < Position.from_document(document) <= window.end


def _metadata(instance: DagsterInstance, run_id: str, asset: str = "new_health_metrics") -> dict:
    """Return the materialization metadata of `asset` in the run, as plain values."""

    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization.asset_key == AssetKey(asset):
            return {key: value.value for key, value in materialization.metadata.items()}
    raise AssertionError(f"run {run_id} has no materialization of {asset}")


def _check_evaluation(instance: DagsterInstance, run_id: str):
    evaluations = [
        entry.asset_check_evaluation
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if entry.asset_check_evaluation.check_name == BAD_INPUT_CHECK
    ]
    assert len(evaluations) == 1, f"run {run_id} has {len(evaluations)} evaluations of {BAD_INPUT_CHECK}"
    return evaluations[0]


def _steps_analytics(db, user_id: ObjectId) -> dict[str, dict]:
    documents = db[contract.ANALYTICS].find({"userId": user_id, "metricType": "steps"})
    return {document["timeRange"]: document for document in documents}


# --- Late commits ---------------------------------------------------------------------------------


def test_late_commit_processed_once(mongo_uri, mongo_db, tmp_path):
    """A write stamped T becomes visible after the window of a tick at T + 0.5 s was processed.

    That tick saw a document stamped just after T. With a 2 s settle lag its window ends before T,
    so a later tick takes the late write.
    """

    settings = _settings_with_settle_lag(mongo_uri, mongo_db, tmp_path)
    loop = SensorLoop.start(settings)
    metrics = mongo_db[contract.HEALTH_METRICS]

    # T lies in the past of the real clock, so no document counts as stamped in the future.
    late_stamp = to_utc_millis(datetime.now(UTC) - timedelta(minutes=1))
    settled = _insert_day(metrics, steps=1000, updated_at=late_stamp - timedelta(seconds=5))
    just_after = _insert_day(metrics, steps=2000, updated_at=late_stamp + timedelta(milliseconds=1))

    first = loop.tick(late_stamp + timedelta(seconds=0.5))
    first_run = loop.run(first)
    # The app stamped this write at T, but it became visible only after the first window's run
    # had read the collection. A run reads its window by range, so an earlier insert would join it.
    late = _insert_day(metrics, steps=3000, updated_at=late_stamp)

    waiting = loop.tick(late_stamp + timedelta(seconds=1))
    second = loop.tick(late_stamp + timedelta(seconds=2.5))
    second_run = loop.run(second)
    done = loop.tick(late_stamp + timedelta(seconds=10))
    loop.close()

    late_analytics = _steps_analytics(mongo_db, late["userId"])
    assert sorted(late_analytics) == sorted(contract.TIME_RANGES), "the late write never reached analytics"
    for time_range, document in late_analytics.items():
        assert document["analytics"]["statistics"]["dataPointsCount"] == 1, time_range
        assert document["analytics"]["rollingAverage"] == 3000, time_range
        assert document["metadata"]["sparkJobId"] == second_run, time_range

    windows_with_late = [window for window in loop.windows if _window_contains(window, late)]
    assert len(windows_with_late) == 1

    assert first.cursor.in_flight.window.end == Position.from_document(settled)
    assert first.cursor.in_flight.window.end.updated_at <= late_stamp + timedelta(seconds=0.5) - SETTLE
    assert waiting.committed is True
    assert waiting.run_request is None
    assert second.cursor.in_flight.window.end == Position.from_document(just_after)
    assert second.cursor.in_flight.window.doc_count == 2
    assert done.committed is True
    assert done.run_request is None

    documents_read = [_metadata(loop.instance, run_id)["documents_read"] for run_id in (first_run, second_run)]
    assert documents_read == [1, 2]
    assert _steps_analytics(mongo_db, just_after["userId"])["7day"]["metadata"]["sparkJobId"] == second_run


# --- Future timestamps ----------------------------------------------------------------------------


def test_future_stamp_waits_for_its_time(mongo_uri, mongo_db, tmp_path):
    settings = _settings_with_settle_lag(mongo_uri, mongo_db, tmp_path)
    loop = SensorLoop.start(settings)
    metrics = mongo_db[contract.HEALTH_METRICS]

    start = to_utc_millis(datetime.now(UTC))
    future = _insert_day(metrics, steps=4000, updated_at=start + timedelta(hours=1))
    written_after = _insert_day(metrics, steps=5000, updated_at=start - timedelta(seconds=3))

    first = loop.tick(start)
    first_run = loop.run(first)
    first_metadata = _metadata(loop.instance, first_run)

    # The tick commits the first window and finds nothing it may take yet.
    waiting = loop.tick(to_utc_millis(datetime.now(UTC)))
    # Written after the first window was committed, so a watermark that had jumped to the
    # future stamp would skip it.
    written_later = _insert_day(metrics, steps=6000, updated_at=datetime.now(UTC))

    its_time = future["updatedAt"] + SETTLE + timedelta(seconds=1)
    second = loop.tick(its_time)
    second_run = loop.run(second)
    done = loop.tick(its_time + timedelta(seconds=10))
    loop.close()

    expected_runs = {
        "written after the future stamp": (written_after, first_run),
        "written after the first window": (written_later, second_run),
        "stamped in the future": (future, second_run),
    }
    for case, (document, run_id) in expected_runs.items():
        analytics = _steps_analytics(mongo_db, document["userId"]).get("7day")
        assert analytics is not None, f"the document {case} never reached analytics"
        assert analytics["metadata"]["sparkJobId"] == run_id, case
        assert analytics["analytics"]["rollingAverage"] == document["metrics"]["steps"], case
        assert analytics["analytics"]["statistics"]["dataPointsCount"] == 1, case

    first_window = loop.windows[0]
    assert first_window.end == Position.from_document(written_after)
    assert first_window.end.updated_at <= start - SETTLE
    assert not _window_contains(first_window, future)
    assert first_metadata["documents_stamped_in_future"] == 1
    assert first_metadata["documents_read"] == 1

    assert waiting.committed is True
    assert waiting.run_request is None
    assert "no documents updated after" in waiting.skip_reason

    second_window = loop.windows[1]
    assert second_window.end == Position.from_document(future)
    assert second_window.doc_count == 2
    assert _window_contains(second_window, written_later)
    assert done.committed is True
    assert done.run_request is None


# --- Bad input mixed into real data ---------------------------------------------------------------

# Fitbit users with sleep, weight and non-wear days among them, enough to cover every metric the
# export has while keeping the window small.
SUBSET_FITBIT_IDS = ("1503960366", "4057192912", "6962181067", "8877689391")
SUBSET_FILES = ("dailyActivity_merged.csv", "sleepDay_merged.csv", "weightLogInfo_merged.csv")

# Fields that depend on the run rather than on the data.
RUN_SPECIFIC_FIELDS = {
    "_id",
    "calculatedAt",
    "expiresAt",
    "metadata.sparkJobId",
    "metadata.processingDurationMs",
    "metadata.sparkVersion",
    "analytics.anomalyDetails.detectedAt",
}


def _write_fitbit_subset(fitbit_dir: Path, target: Path) -> Path:
    """Copy the daily export files of every month folder, keeping only the rows of SUBSET_FITBIT_IDS."""

    for month in sorted(fitbit_dir.glob("mturkfitbit_*")):
        (target / month.name).mkdir(parents=True)
        for name in SUBSET_FILES:
            source = month / name
            if not source.exists():
                continue
            header, *rows = source.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [row for row in rows if row.split(",", 1)[0] in SUBSET_FITBIT_IDS]
            (target / month.name / name).write_text(header + "".join(kept), encoding="utf-8")
    return target


# Marks a field that `_bad_input` leaves out of a document.
MISSING = object()


@dataclass(frozen=True)
class BadInput:
    """Malformed documents and what the window must make of them."""

    documents: list[dict]
    # (source _id, reason, metricType or "" for a skipped document) of every record expected in quarantine.
    quarantined: set[tuple[ObjectId, str, str]]
    skipped_by_reason: dict[str, int]
    rejected_by_reason: dict[str, int]
    # Documents the sensor cannot poll because updatedAt is missing or not a Date.
    unpollable: int
    # A synthetic user whose one document mixes accepted and rejected values.
    mixed_user: ObjectId


def _bad_input(now: datetime) -> BadInput:
    real_user = fitbit_user_id("1503960366")
    other_real_user = fitbit_user_id("6962181067")
    mixed_user = ObjectId()

    def day(number: int) -> datetime:
        # Days after the export's last day (2016-05-12), so no bad document replaces a real one.
        return datetime(2016, 5, 12, tzinfo=UTC) + timedelta(days=number)

    def document(**fields) -> dict:
        # 50,000 steps would move the real user's analytics if any of these documents were used.
        base = {
            "_id": ObjectId(),
            "userId": real_user,
            "date": day(1),
            "source": "manual",
            "metrics": {"steps": 50_000},
            "updatedAt": now,
        }
        base.update(fields)
        return {key: value for key, value in base.items() if value is not MISSING}

    skipped = {
        "missing_user_id": [document(userId=MISSING, date=day(2)), document(userId=None, date=day(3))],
        "invalid_user_id": [document(userId="1503960366", date=day(4))],
        "missing_date": [document(date=MISSING)],
        "invalid_date": [document(date="2016-05-14")],
        "date_not_midnight_utc": [document(date=day(5) + timedelta(hours=12))],
        "missing_metrics": [document(date=day(6), metrics=MISSING)],
        "invalid_metrics": [
            document(date=day(7), metrics="steps=5000"),
            document(date=day(8), metrics=[5000]),
        ],
    }
    unpollable = [
        document(date=day(9), updatedAt=MISSING),
        document(date=day(10), updatedAt=now.isoformat()),
    ]

    mixed = document(
        userId=mixed_user,
        date=day(1),
        metrics={
            "steps": "9727",
            "heartPoints": "12.5",
            "hydration": 2.5,
            "distance": "8,253",
            "calories": True,
            "activeMinutes": -5,
            "sleepHours": 30,
            "weight": 350,
        },
    )
    # Every value of this real user's day is rejected, so the user's analytics must not change.
    all_rejected = document(
        userId=other_real_user,
        date=day(1),
        metrics={"steps": "12,000", "distance": False, "calories": -1, "activeMinutes": 1441},
    )
    # Fitbit's non-wear day: 0 steps and a full day of sedentary minutes, with the calories of the
    # basal metabolic rate. None of its activity values is a measurement.
    sentinel = document(
        date=day(1),
        source="import",
        metrics={"steps": 0, "distance": 0, "calories": 1347, "activeMinutes": 0, "sedentaryMinutes": 1440},
    )
    rejected_values = {
        mixed["_id"]: {
            "distance": "non_numeric_string",
            "calories": "invalid_value_type",
            "activeMinutes": "out_of_range",
            "sleepHours": "out_of_range",
            "weight": "out_of_range",
        },
        all_rejected["_id"]: {
            "steps": "non_numeric_string",
            "distance": "invalid_value_type",
            "calories": "out_of_range",
            "activeMinutes": "out_of_range",
        },
        sentinel["_id"]: dict.fromkeys(("steps", "distance", "calories", "activeMinutes"), "not_measured_sentinel"),
    }

    quarantined = {
        (skipped_document["_id"], reason, "")
        for reason, documents in skipped.items()
        for skipped_document in documents
    }
    quarantined |= {
        (source_id, reason, metric)
        for source_id, reasons in rejected_values.items()
        for metric, reason in reasons.items()
    }

    rejected_by_reason = Counter(reason for reasons in rejected_values.values() for reason in reasons.values())

    skipped_documents = [skipped_document for documents in skipped.values() for skipped_document in documents]
    return BadInput(
        documents=[*skipped_documents, *unpollable, mixed, all_rejected, sentinel],
        quarantined=quarantined,
        skipped_by_reason={reason: len(documents) for reason, documents in skipped.items()},
        rejected_by_reason=dict(rejected_by_reason),
        unpollable=len(unpollable),
        mixed_user=mixed_user,
    )


def _comparable(document: dict) -> dict:
    """Flatten an analytics document to dotted keys without run-specific fields.

    Floats compare to 1e-9 relative, because Spark sums in partition order.
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


def _analytics_by_key(db, user_ids: list[ObjectId]) -> dict[tuple, dict]:
    documents = db[contract.ANALYTICS].find({"userId": {"$in": user_ids}})
    return {(d["userId"], d["metricType"], d["timeRange"]): _comparable(d) for d in documents}


@pytest.fixture
def baseline_db(mongo_client):
    """A second fresh database, for the same data without the bad documents."""

    db = mongo_client[f"hs_test_{uuid.uuid4().hex[:10]}"]
    yield db
    mongo_client.drop_database(db.name)


@pytest.mark.slow
def test_bad_input_counted_and_quarantined(settings, mongo_db, baseline_db, fitbit_dir, tmp_path):
    subset = _write_fitbit_subset(fitbit_dir, tmp_path / "fitbit")
    real_users = [fitbit_user_id(fitbit_id) for fitbit_id in SUBSET_FITBIT_IDS]

    ensure_indexes(baseline_db)
    load_fitbit(subset, baseline_db)
    baseline_settings = replace(
        settings, mongo_db_name=baseline_db.name, parquet_base_path=str(tmp_path / "baseline-parquet")
    )
    baseline_instance = DagsterInstance.ephemeral()
    baseline = run_once(
        build_definitions(baseline_settings), baseline_instance, None, policy_from_settings(baseline_settings)
    )
    assert baseline.run_succeeded is True
    assert _check_evaluation(baseline_instance, baseline.run_id).passed is True
    assert baseline_db[contract.QUARANTINE].count_documents({}) == 0

    ensure_indexes(mongo_db)
    report = load_fitbit(subset, mongo_db)
    bad = _bad_input(to_utc_millis(datetime.now(UTC)))
    mongo_db[contract.HEALTH_METRICS].insert_many(bad.documents)

    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    instance = DagsterInstance.ephemeral()
    outcome = run_once(defs, instance, None, policy)
    assert outcome.run_succeeded is True

    pollable = len(bad.documents) - bad.unpollable
    metadata = _metadata(instance, outcome.run_id)
    assert metadata["documents_planned"] == report.days + pollable
    assert metadata["documents_read"] == report.days + pollable
    assert metadata["documents_skipped_by_reason"] == bad.skipped_by_reason
    assert metadata["values_rejected_by_reason"] == bad.rejected_by_reason
    assert metadata["documents_skipped"] == sum(bad.skipped_by_reason.values())

    check = _check_evaluation(instance, outcome.run_id)
    assert check.passed is False
    assert check.severity == AssetCheckSeverity.WARN
    assert check.metadata["documents_skipped_by_reason"].value == bad.skipped_by_reason
    assert check.metadata["values_rejected_by_reason"].value == bad.rejected_by_reason

    quarantine = list(mongo_db[contract.QUARANTINE].find())
    assert {(q["sourceId"], q["reason"], q["metricType"]) for q in quarantine} == bad.quarantined
    assert len(quarantine) == len(bad.quarantined)
    for record in quarantine:
        assert record["collection"] == contract.HEALTH_METRICS, record
        assert record["runId"] == outcome.run_id, record

    mixed = {
        d["metricType"]: d
        for d in mongo_db[contract.ANALYTICS].find({"userId": bad.mixed_user, "timeRange": "7day"})
    }
    assert sorted(mixed) == ["heartPoints", "hydration", "steps"]
    assert mixed["steps"]["analytics"]["rollingAverage"] == 9727
    assert mixed["heartPoints"]["analytics"]["rollingAverage"] == 12.5
    assert mixed["hydration"]["analytics"]["rollingAverage"] == 2.5

    expected = _analytics_by_key(baseline_db, real_users)
    actual = _analytics_by_key(mongo_db, real_users)
    assert sorted(actual) == sorted(expected)
    for key, document in actual.items():
        assert document == expected[key], key

    # The documents the sensor cannot poll must not make every later tick request a window.
    again = run_once(defs, instance, outcome.cursor, policy)
    assert again.run_id is None
    assert "no documents updated after" in again.skip_reason


def test_non_finite_values_quarantined(settings, mongo_db, server_is_ferretdb):
    # The connector renders BSON NaN and infinity as bare NaN / Infinity tokens in the JSON text.
    metrics_json = '{"steps": NaN, "calories": Infinity, "distance": 3.5}'
    rows = validate_document_fields("objectId", "2016-05-02T00:00:00Z", "date", "date", metrics_json, "object")
    reasons = {metric: reason for metric, _, reason, _ in rows}
    assert reasons["steps"] == "non_finite_value"
    assert reasons["calories"] == "non_finite_value"
    assert reasons["distance"] is None

    document = {
        "_id": ObjectId(),
        "userId": ObjectId(),
        "date": DAY,
        "source": "manual",
        "metrics": {"steps": float("nan"), "calories": float("inf"), "distance": 3.5},
        "updatedAt": datetime.now(UTC),
    }
    if server_is_ferretdb:
        # FerretDB 1.24.2 closes the connection on NaN and rejects Infinity with a write error, so
        # the insert is not even tried: a dropped connection can leave the server unreliable.
        pytest.skip("FerretDB rejects NaN and Infinity on insert, so no window can read them; needs MongoDB")
    mongo_db[contract.HEALTH_METRICS].insert_one(document)

    instance = DagsterInstance.ephemeral()
    outcome = run_once(build_definitions(settings), instance, None, policy_from_settings(settings))
    assert outcome.run_succeeded is True

    metadata = _metadata(instance, outcome.run_id)
    assert metadata["values_rejected_by_reason"] == {"non_finite_value": 2}

    quarantine = {(q["sourceId"], q["reason"], q["metricType"]) for q in mongo_db[contract.QUARANTINE].find()}
    assert quarantine == {
        (document["_id"], "non_finite_value", "steps"),
        (document["_id"], "non_finite_value", "calories"),
    }

    distance = mongo_db[contract.ANALYTICS].find_one(
        {"userId": document["userId"], "metricType": "distance", "timeRange": "7day"}
    )
    assert distance["analytics"]["rollingAverage"] == 3.5


# --- Credentials ----------------------------------------------------------------------------------

PASSWORD = "S3cr3t-pw"


def _free_port() -> int:
    """Return a 127.0.0.1 port with no listener, for a URI whose server is down."""

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _with_password(uri: str, mechanism: str | None = None) -> str:
    scheme, rest = uri.split("://", 1)
    hosts, _, path = rest.partition("/")
    if "@" in hosts:
        pytest.skip("MONGO_URI already carries credentials; this test adds its own user and password")

    database, _, query = path.partition("?")
    options = [option for option in (query, f"authMechanism={mechanism}" if mechanism else "") if option]
    return f"{scheme}://healthstream:{PASSWORD}@{hosts}/{database}" + (f"?{'&'.join(options)}" if options else "")


def _accepted_password_uri(mongo_uri: str) -> str:
    """Return the URI with user healthstream and PASSWORD that the test server accepts.

    FerretDB 1.24.2 on SQLite rejects SCRAM ("Unsupported authentication mechanism") and accepts
    PLAIN with any user and password, so the password still reaches pymongo and the Spark connector.
    """

    for mechanism in (None, "PLAIN"):
        uri = _with_password(mongo_uri, mechanism)
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("ping")
            return uri
        except OperationFailure:
            continue
        finally:
            client.close()

    pytest.skip("the test server rejects user healthstream with SCRAM and PLAIN; create that user to run this test")


def _stored_records(instance: DagsterInstance) -> dict[str, str]:
    """Return every run, run config, tag set, snapshot and event record of the instance as text, by name."""

    texts = {}
    for run in instance.get_runs():
        name = f"run {run.run_id}"
        texts[f"{name} record"] = serialize_value(run)
        texts[f"{name} config"] = json.dumps(run.run_config)
        texts[f"{name} tags"] = json.dumps(run.tags)
        if run.job_snapshot_id:
            texts[f"{name} job snapshot"] = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        if run.execution_plan_snapshot_id:
            plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            texts[f"{name} execution plan"] = serialize_value(plan)
        for record in instance.get_records_for_run(run.run_id).records:
            texts[f"{name} event {record.storage_id}"] = serialize_value(record.event_log_entry)
    return texts


def _stored_files(*roots: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for root in roots for path in root.rglob("*") if path.is_file()}


def _places_with_password(texts: dict[str, str | bytes]) -> list[str]:
    """Return 'name: ...context...' for every text that contains PASSWORD."""

    places = []
    for name, text in texts.items():
        content = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        position = content.find(PASSWORD)
        if position >= 0:
            places.append(f"{name}: ...{content[max(0, position - 120) : position + 40]}...")
    return places


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HEALTHSTREAM_CLI), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _cli_env(password_uri: str, db_name: str, root: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key != "MONGO_URI"}
    return {
        **environment,
        **_env(password_uri, db_name, root / "state"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }


def test_password_never_output_or_stored(mongo_uri, mongo_db, tmp_path, monkeypatch, capfd, caplog):
    password_uri = _accepted_password_uri(mongo_uri)
    down_uri = _with_password(f"mongodb://127.0.0.1:{_free_port()}/", "PLAIN")
    # INFO here: the DEBUG records of py4j are checked by test_password_not_in_debug_logs.
    caplog.set_level("INFO")

    # The production path: MONGO_URI comes from the process environment, as under the CLI and dagster dev.
    home = tmp_path / "dagster_home"
    monkeypatch.chdir(tmp_path)
    for name, value in _env(password_uri, mongo_db.name, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    settings = Settings.from_env()
    assert settings.mongo_uri == password_uri
    prepare_dagster_home(settings)

    metrics = mongo_db[contract.HEALTH_METRICS]
    _insert_day(metrics, steps=7000, updated_at=datetime.now(UTC) - timedelta(seconds=1))
    skip_messages = {}

    with DagsterInstance.get() as instance:
        policy = policy_from_settings(settings)
        succeeded = run_once(build_definitions(settings), instance, None, policy)
        assert succeeded.run_succeeded is True

        nothing_new = run_once(build_definitions(settings), instance, succeeded.cursor, policy)
        skip_messages["tick with nothing new"] = nothing_new.skip_reason

        # The window is planned while the server is reachable, and its run starts after it went away.
        _insert_day(metrics, steps=8000, updated_at=datetime.now(UTC) - timedelta(seconds=1))
        planner = MongoResource(uri=password_uri, database_name=mongo_db.name)
        planned = evaluate_tick(succeeded.cursor, instance, planner, policy)
        planner.close()

        monkeypatch.setenv("MONGO_URI", down_uri)
        down_defs = build_definitions(Settings.from_env())
        failed = down_defs.resolve_job_def(WINDOW_JOB_NAME).execute_in_process(
            run_config=planned.run_request.run_config,
            instance=instance,
            tags=planned.run_request.tags,
            raise_on_error=False,
        )
        assert failed.success is False

        unreachable = run_once(down_defs, instance, succeeded.cursor, policy)
        skip_messages["tick with the server down"] = unreachable.skip_reason
        assert "could not be queried" in unreachable.skip_reason

        stored = _stored_records(instance)

    captured = capfd.readouterr()
    log_records = [f"{record.getMessage()}\n{record.exc_text or ''}" for record in caplog.records]
    printed = {"stdout": captured.out, "stderr": captured.err, "log records": "\n".join(log_records)}

    cli_root = tmp_path / "cli"
    cli_env = _cli_env(password_uri, mongo_db.name, cli_root)
    commands = {
        "put-metric": ["put-metric", "--user", "1503960366", "--date", "2016-05-03", "--steps", "9000"],
        "run-once": ["run-once"],
        "server status": ["server", "status"],
    }
    for name, args in commands.items():
        result = _cli(args, cli_env)
        printed[f"healthstream {name} stdout"] = result.stdout
        printed[f"healthstream {name} stderr"] = result.stderr
        if name != "server status":
            assert result.returncode == 0, f"healthstream {name} failed:\n{result.stdout}\n{result.stderr}"

    assert "succeeded" in printed["healthstream run-once stdout"]

    with DagsterInstance.from_config(str(cli_root / "dagster_home")) as cli_instance:
        cli_stored = _stored_records(cli_instance)

    places = _places_with_password(
        {
            **printed,
            **{f"skip message, {name}": message for name, message in skip_messages.items()},
            **stored,
            **{f"CLI instance, {name}": text for name, text in cli_stored.items()},
            **_stored_files(home, tmp_path / "state", cli_root),
        }
    )
    assert places == []

    # The masked URI is printed and stored, so the search above looked where the URI goes.
    assert "healthstream:***@" in skip_messages["tick with the server down"]
    assert any("healthstream:***@" in text for text in stored.values())


def test_password_not_in_debug_logs(mongo_uri, mongo_db, spark, caplog):
    # py4j logs every command sent to the JVM at DEBUG, so the connector options must not carry the password.
    password_uri = _accepted_password_uri(mongo_uri)
    mongo = MongoResource(uri=password_uri, database_name=mongo_db.name)
    caplog.set_level("DEBUG")

    spark_io.read_health_metrics(spark, mongo, {}).count()

    assert _places_with_password({"log records at DEBUG": caplog.text}) == []


def test_cli_first_run_server_down(tmp_path):
    # A fresh DAGSTER_HOME has no stored cursor, and an unreachable server gives no new one.
    down_uri = _with_password(f"mongodb://127.0.0.1:{_free_port()}/", "PLAIN")

    result = _cli(["run-once"], _cli_env(down_uri, "hs_test_unreachable", tmp_path))
    output = result.stdout + result.stderr

    assert result.returncode == 1
    assert "healthstream:***@" in output
    assert "is unreachable" in output
    assert PASSWORD not in output
    assert "Traceback" not in output, output[-600:]
