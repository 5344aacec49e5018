"""The whole pipeline on the real Fitbit exports: load, one tick and its run, then an edit of an old day.

Expected values are computed here from the CSV files with pandas, independently of the Spark code.
"""

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from dagster import DagsterInstance

from reference_analytics import compute_reference, daily_from_documents

from healthstream_assets import contract
from healthstream_assets.definitions import build_definitions, policy_from_settings
from healthstream_assets.fitbit import fitbit_user_id, load_fitbit
from healthstream_assets.resources.mongo import ensure_indexes
from healthstream_assets.run_once import run_once

EARLIER_MONTH = "mturkfitbit_3.12.16-4.11.16"
LATER_MONTH = "mturkfitbit_4.12.16-5.12.16"
FITBIT_USER = "1503960366"
EDITED_DAY = datetime(2016, 5, 1, tzinfo=UTC)


def _activity(fitbit_dir) -> pd.DataFrame:
    """Daily steps per user and day: the later month wins, non-wear days dropped."""

    frames = []
    for order, month in enumerate([EARLIER_MONTH, LATER_MONTH]):
        frame = pd.read_csv(fitbit_dir / month / "dailyActivity_merged.csv")
        frame["day"] = pd.to_datetime(frame["ActivityDate"], format="%m/%d/%Y")
        frame["order"] = order
        frames.append(frame)

    activity = pd.concat(frames).sort_values("order").drop_duplicates(["Id", "day"], keep="last")
    non_wear = (activity["SedentaryMinutes"] == 1440) & (activity["TotalSteps"] == 0)
    return activity[~non_wear]


def _expected_window(activity: pd.DataFrame, fitbit_id: str, column: str, days: int) -> tuple[float, int, pd.Timestamp]:
    user = activity[activity["Id"] == int(fitbit_id)]
    as_of = user["day"].max()
    in_window = user[user["day"] > as_of - pd.Timedelta(days=days)]
    return float(in_window[column].mean()), len(in_window), as_of


def _analytics(db, fitbit_id: str, metric_type: str, time_range: str) -> dict:
    return db[contract.ANALYTICS].find_one(
        {"userId": fitbit_user_id(fitbit_id), "metricType": metric_type, "timeRange": time_range}
    )


def _window_only(document: dict) -> dict:
    """Return the document with only the fields computed from its own N-day window."""

    analytics = document["analytics"]
    window_fields = {"rollingAverage": analytics["rollingAverage"], "statistics": analytics["statistics"]}
    return {**document, "analytics": window_fields}


def _values(document: dict) -> dict:
    """Return the computed fields flattened to dotted keys, floats wrapped for a 1e-9 relative comparison.

    Spark sums in partition order, so a recomputed standard deviation can differ in the last bits.
    """

    flat = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, float):
            flat[prefix] = pytest.approx(value, rel=1e-9)
        else:
            flat[prefix] = value

    for key in ("analytics", "asOfDate", "windowStartDate"):
        walk(key, document[key])
    return flat


def _compare(path: str, actual, expected, mismatches: list[str]) -> None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            mismatches.append(f"{path}: {actual!r} is not an object")
            return
        for key, value in expected.items():
            if key == "message":
                continue
            _compare(f"{path}.{key}", actual.get(key), value, mismatches)
        return

    if isinstance(expected, date) and not isinstance(expected, datetime):
        expected = datetime(expected.year, expected.month, expected.day, tzinfo=UTC)

    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if actual != pytest.approx(expected, rel=1e-9, abs=1e-12):
            mismatches.append(f"{path}: {actual!r} != {expected!r}")
        return

    if actual != expected:
        mismatches.append(f"{path}: {actual!r} != {expected!r}")


def _assert_matches_reference(db, stored: dict) -> None:
    """Compare every field of every stored analytics document with the plain-Python reference."""

    daily = daily_from_documents(db[contract.HEALTH_METRICS].find())
    goals = {str(user["_id"]): user.get("goals") for user in db[contract.USERS].find()}
    calculated_at = next(iter(stored.values()))["calculatedAt"]
    expected = compute_reference(daily, goals, calculated_at)

    assert {(str(user), metric, time_range) for user, metric, time_range in stored} == set(expected)

    mismatches = []
    for (user_id, metric_type, time_range), document in stored.items():
        reference = expected[(str(user_id), metric_type, time_range)]
        _compare(f"{user_id}/{metric_type}/{time_range}", document, reference, mismatches)

        analytics = document["analytics"]
        assert analytics["trend"] in ("up", "down", "stable")
        assert -100 <= analytics["trendPercentage"] <= 1000
        assert 0 <= analytics["percentile"] <= 100
        assert 0 <= analytics["streakDays"] <= 3650
        if analytics["anomalyDetails"] is not None:
            assert len(analytics["anomalyDetails"]["message"]) <= 500

    assert mismatches == [], f"{len(mismatches)} fields differ from the reference, first: {mismatches[:10]}"


@pytest.mark.slow
def test_fitbit_pipeline_end_to_end(settings, mongo_db, fitbit_dir):
    ensure_indexes(mongo_db)
    report = load_fitbit(fitbit_dir, mongo_db)
    assert report.users == 35

    defs = build_definitions(settings)
    policy = policy_from_settings(settings)
    instance = DagsterInstance.ephemeral()

    first = run_once(defs, instance, None, policy)

    assert first.run_succeeded is True
    assert first.run_config["ops"]["new_health_metrics"]["config"]["doc_count"] == report.days
    assert len(mongo_db[contract.ANALYTICS].distinct("userId")) == report.users

    activity = _activity(fitbit_dir)
    for fitbit_id in [FITBIT_USER, "4020332650", "8877689391"]:
        for time_range, days in contract.TIME_RANGES.items():
            expected_mean, expected_count, as_of = _expected_window(activity, fitbit_id, "TotalSteps", days)
            stored = _analytics(mongo_db, fitbit_id, "steps", time_range)

            assert stored["analytics"]["rollingAverage"] == pytest.approx(expected_mean, rel=1e-9)
            assert stored["analytics"]["statistics"]["dataPointsCount"] == expected_count
            assert stored["asOfDate"] == as_of.to_pydatetime().replace(tzinfo=UTC)
            assert stored["metadata"]["sparkJobId"] == first.run_id

    before = {
        (doc["userId"], doc["metricType"], doc["timeRange"]): doc for doc in mongo_db[contract.ANALYTICS].find()
    }
    _assert_matches_reference(mongo_db, before)

    nothing_new = run_once(defs, instance, first.cursor, policy)
    assert nothing_new.run_id is None
    assert "no documents updated after" in nothing_new.skip_reason

    user_id = fitbit_user_id(FITBIT_USER)
    mongo_db[contract.HEALTH_METRICS].update_one(
        {"userId": user_id, "date": EDITED_DAY},
        {"$set": {"metrics.steps": 30000, "updatedAt": datetime.now(UTC) - timedelta(milliseconds=1)}},
    )

    second = run_once(defs, instance, first.cursor, policy)

    assert second.run_succeeded is True
    assert second.run_config["ops"]["new_health_metrics"]["config"]["doc_count"] == 1

    edited = activity.copy()
    edited.loc[(edited["Id"] == int(FITBIT_USER)) & (edited["day"] == "2016-05-01"), "TotalSteps"] = 30000
    after = {(doc["userId"], doc["metricType"], doc["timeRange"]): doc for doc in mongo_db[contract.ANALYTICS].find()}
    assert after.keys() == before.keys()

    for time_range in ("30day", "90day"):
        expected_mean, _, _ = _expected_window(edited, FITBIT_USER, "TotalSteps", contract.TIME_RANGES[time_range])
        changed = after[(user_id, "steps", time_range)]
        assert changed["analytics"]["rollingAverage"] == pytest.approx(expected_mean, rel=1e-9)
        assert changed["analytics"] != before[(user_id, "steps", time_range)]["analytics"]

    # The 7-day window is 05-06 .. 05-12, so the edit of 05-01 leaves its statistics alone, but the
    # previous window (04-29 .. 05-05) contains it, so the trend moves.
    seven_day_before = before[(user_id, "steps", "7day")]
    seven_day_after = after[(user_id, "steps", "7day")]
    assert _values(_window_only(seven_day_after)) == _values(_window_only(seven_day_before))
    assert seven_day_after["analytics"]["trendPercentage"] != seven_day_before["analytics"]["trendPercentage"]

    for key, document in after.items():
        if key[0] != user_id:
            assert document == before[key], key
        elif key[1] != "steps":
            assert _values(document) == _values(before[key]), key
