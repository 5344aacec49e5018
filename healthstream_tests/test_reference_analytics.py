"""Tests of the reference analytics: the hand-computed cases, its input handling and the real Fitbit data.

The expected values of the cases come from analytics_cases.py, where a comment beside each case
shows the arithmetic. The Fitbit facts were read off dailyActivity_merged.csv by hand.
"""

import math
import random
from datetime import date, datetime, timedelta, timezone

import pytest
from bson import ObjectId
from bson.int64 import Int64

from analytics_cases import CALCULATED_AT, CASES, AnalyticsCase, value_at
from healthstream_assets.contract import DEFAULT_GOALS, METRIC_TYPES, TIME_RANGES
from healthstream_assets.fitbit import fitbit_user_id, parse_fitbit_export
from reference_analytics import MAX_STREAK_DAYS, compute_reference, daily_from_documents

RELATIVE_TOLERANCE = 1e-9

TOP_LEVEL_FIELDS = {"asOfDate", "windowStartDate", "analytics"}
ANALYTICS_FIELDS = {
    "rollingAverage",
    "trend",
    "trendPercentage",
    "comparisonToPrevious",
    "streakDays",
    "longestStreak",
    "streakStartDate",
    "anomalyDetected",
    "anomalyReason",
    "anomalyDetails",
    "percentile",
    "statistics",
}
COMPARISON_FIELDS = {"absoluteChange", "percentageChange", "isImprovement"}
ANOMALY_DETAIL_FIELDS = {"severity", "actualValue", "expectedValue", "deviation", "message", "detectedAt"}
STATISTICS_FIELDS = {
    "standardDeviation",
    "minValue",
    "maxValue",
    "medianValue",
    "dataPointsCount",
    "completenessPercentage",
}
TRENDS = {"up", "down", "stable"}
SEVERITIES = {"low", "medium", "high"}
ANOMALY_REASONS = {None, "insufficient_history", "zero_spread"}

FITBIT_USER = "1503960366"


def run_case(case: AnalyticsCase) -> dict:
    daily = list(case.daily) + daily_from_documents(case.documents)
    return compute_reference(daily, case.goals, case.calculated_at)


def assert_field_equal(actual: object, expected: object, where: str) -> None:
    """Assert one field: floats within the relative tolerance, every other type exactly."""

    if expected is None:
        assert actual is None, f"{where}: expected None, got {actual!r}"
    elif isinstance(expected, bool):
        assert actual is expected, f"{where}: expected {expected!r}, got {actual!r}"
    elif isinstance(expected, float):
        assert isinstance(actual, float), f"{where}: expected a float near {expected!r}, got {actual!r}"
        assert actual == pytest.approx(expected, rel=RELATIVE_TOLERANCE, abs=0), (
            f"{where}: expected {expected!r}, got {actual!r}"
        )
    elif isinstance(expected, int):
        assert type(actual) is int, f"{where}: expected the int {expected!r}, got {actual!r}"
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"
    elif isinstance(expected, datetime):
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"
    elif isinstance(expected, date):
        assert type(actual) is date, f"{where}: expected the date {expected!r}, got {actual!r}"
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"
    else:
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


def iter_leaves(value, path=""):
    """Yield (dotted path, value) for every non-dict value in nested dicts."""

    if isinstance(value, dict):
        for key, item in value.items():
            yield from iter_leaves(item, f"{path}.{key}" if path else key)
    else:
        yield path, value


def assert_document_shape(key: tuple[str, str, str], document: dict) -> None:
    """Assert the field names and types of one result, and the enums and ranges of the contract."""

    _, _, time_range = key
    days = TIME_RANGES[time_range]
    assert set(document) == TOP_LEVEL_FIELDS, f"{key}: top-level fields {sorted(document)}"

    analytics = document["analytics"]
    assert set(analytics) == ANALYTICS_FIELDS, f"{key}: analytics fields {sorted(analytics)}"
    assert set(analytics["statistics"]) == STATISTICS_FIELDS, f"{key}: statistics fields"

    for path, value in iter_leaves(document):
        if isinstance(value, float):
            assert math.isfinite(value), f"{key} {path}: non-finite {value!r}"

    assert type(document["asOfDate"]) is date, f"{key}: asOfDate {document['asOfDate']!r}"
    window_start = document["asOfDate"] - timedelta(days=days - 1)
    assert document["windowStartDate"] == window_start, f"{key}: windowStartDate {document['windowStartDate']}"

    assert analytics["trend"] in TRENDS, f"{key}: trend {analytics['trend']!r}"
    trend_percentage = analytics["trendPercentage"]
    assert -100 <= trend_percentage <= 1000, f"{key}: trendPercentage {trend_percentage}"
    assert 0 <= analytics["percentile"] <= 100, f"{key}: percentile {analytics['percentile']}"
    assert 0 <= analytics["streakDays"] <= MAX_STREAK_DAYS, f"{key}: streakDays {analytics['streakDays']}"
    assert analytics["streakDays"] <= analytics["longestStreak"] <= MAX_STREAK_DAYS, f"{key}: longestStreak"
    assert (analytics["streakStartDate"] is None) == (analytics["streakDays"] == 0), f"{key}: streakStartDate"
    reason = analytics["anomalyReason"]
    assert reason in ANOMALY_REASONS, f"{key}: anomalyReason {reason!r}"
    assert isinstance(analytics["anomalyDetected"], bool), f"{key}: anomalyDetected"

    comparison = analytics["comparisonToPrevious"]
    if comparison is not None:
        assert set(comparison) == COMPARISON_FIELDS, f"{key}: comparison fields {sorted(comparison)}"
        assert comparison["isImprovement"] in (True, False, None), f"{key}: isImprovement"

    details = analytics["anomalyDetails"]
    if analytics["anomalyDetected"]:
        assert analytics["anomalyReason"] is None, f"{key}: anomalyReason set on a detected anomaly"
        assert set(details) == ANOMALY_DETAIL_FIELDS, f"{key}: anomalyDetails fields"
        assert details["severity"] in SEVERITIES, f"{key}: severity {details['severity']!r}"
        assert isinstance(details["message"], str), f"{key}: message {details['message']!r}"
        assert 0 < len(details["message"]) <= 500, f"{key}: message length {len(details['message'])}"
    else:
        assert details is None, f"{key}: anomalyDetails without a detected anomaly"

    statistics = analytics["statistics"]
    count = statistics["dataPointsCount"]
    assert type(count) is int, f"{key}: dataPointsCount {count!r} is not an int"
    assert 1 <= count <= days, f"{key}: dataPointsCount {count}"
    assert statistics["completenessPercentage"] == pytest.approx(count / days * 100), f"{key}: completeness"
    assert statistics["minValue"] <= statistics["medianValue"] <= statistics["maxValue"], f"{key}: median"
    assert statistics["standardDeviation"] >= 0, f"{key}: standardDeviation"

    # The rounded sum divided by the count can land one rounding step outside [min, max].
    minimum = statistics["minValue"]
    maximum = statistics["maxValue"]
    mean = analytics["rollingAverage"]
    assert minimum <= mean or mean == pytest.approx(minimum), f"{key}: mean {mean} below min {minimum}"
    assert mean <= maximum or mean == pytest.approx(maximum), f"{key}: mean {mean} above max {maximum}"


# --- The hand-computed cases --------------------------------------------------------------------


def test_case_names_unique():
    names = [case.name for case in CASES]
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"repeated case names: {repeated}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_reference_matches_case(case: AnalyticsCase):
    results = run_case(case)

    assert case.key in results, f"{case.name}: no result for {case.key}; keys: {sorted(results)}"
    document = results[case.key]
    for path, expected in case.expected.items():
        assert_field_equal(value_at(document, path), expected, f"{case.name} {path}")


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_results_contract_shape(case: AnalyticsCase):
    results = run_case(case)

    for key, document in results.items():
        assert_document_shape(key, document)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_results_every_time_range(case: AnalyticsCase):
    results = run_case(case)

    series = {(user_id, metric_type) for user_id, metric_type, _ in results}
    assert len(results) == len(series) * len(TIME_RANGES), f"{len(results)} results for {len(series)} series"
    for user_id, metric_type in series:
        documents = [results[(user_id, metric_type, time_range)] for time_range in TIME_RANGES]
        streak_fields = [
            {name: document["analytics"][name] for name in ("streakDays", "longestStreak", "streakStartDate")}
            for document in documents
        ]
        assert all(fields == streak_fields[0] for fields in streak_fields), (
            f"{user_id} {metric_type}: streak fields differ between time ranges: {streak_fields}"
        )
        as_of_dates = {document["asOfDate"] for document in documents}
        assert len(as_of_dates) == 1, f"{user_id} {metric_type}: asOfDate differs: {as_of_dates}"


def test_detected_anomaly_time_and_message():
    case = next(case for case in CASES if case.name == "anomaly_medium")
    details = run_case(case)[case.key]["analytics"]["anomalyDetails"]

    assert details["detectedAt"] == CALCULATED_AT
    assert "steps" in details["message"]
    assert len(details["message"]) <= 500


# --- daily_from_documents -----------------------------------------------------------------------


USER = ObjectId("66f0c3a9e4b0f3a1d2c50001")


def raw_document(day: datetime, metrics: dict, document_id: str, updated_at: datetime | None) -> dict:
    raw = {"_id": ObjectId(document_id), "userId": USER, "date": day, "metrics": metrics}
    if updated_at is not None:
        raw["updatedAt"] = updated_at

    return raw


def test_daily_dates_read_as_utc():
    naive = raw_document(datetime(2024, 3, 1), {"steps": 100}, "66f0c3a9e4b0f3a1d2c60001", None)
    offset = raw_document(
        datetime(2024, 3, 2, 1, 0, tzinfo=timezone(timedelta(hours=1))),
        {"steps": 200},
        "66f0c3a9e4b0f3a1d2c60002",
        None,
    )

    rows = daily_from_documents([naive, offset])

    assert rows == [
        (str(USER), "steps", date(2024, 3, 1), 100.0),
        (str(USER), "steps", date(2024, 3, 2), 200.0),
    ]


def test_daily_missing_updated_at_loses():
    day = datetime(2024, 3, 1, tzinfo=timezone.utc)
    updated_at = datetime(2024, 3, 2, tzinfo=timezone.utc)
    with_update = raw_document(day, {"steps": 100}, "66f0c3a9e4b0f3a1d2c60001", updated_at)
    without_update = raw_document(day, {"steps": 200}, "66f0c3a9e4b0f3a1d2c600ff", None)

    rows = daily_from_documents([with_update, without_update])

    assert rows == [(str(USER), "steps", date(2024, 3, 1), 100.0)]


def test_daily_naive_and_aware_updated_at_compare():
    day = datetime(2024, 3, 1, tzinfo=timezone.utc)
    earlier = raw_document(day, {"steps": 100}, "66f0c3a9e4b0f3a1d2c600ff", datetime(2024, 3, 2, 10, 0))
    later = raw_document(
        day, {"steps": 200}, "66f0c3a9e4b0f3a1d2c60001", datetime(2024, 3, 2, 10, 1, tzinfo=timezone.utc)
    )

    rows = daily_from_documents([later, earlier])

    assert rows == [(str(USER), "steps", date(2024, 3, 1), 200.0)]


def test_daily_int64_and_float_kept():
    day = datetime(2024, 3, 1, tzinfo=timezone.utc)
    metrics = {"steps": Int64(12000), "weight": 30.0, "hydration": 10, "sleepHours": 24.5}

    rows = daily_from_documents([raw_document(day, metrics, "66f0c3a9e4b0f3a1d2c60001", None)])

    assert rows == [
        (str(USER), "hydration", date(2024, 3, 1), 10.0),
        (str(USER), "steps", date(2024, 3, 1), 12000.0),
        (str(USER), "weight", date(2024, 3, 1), 30.0),
    ]
    assert all(type(value) is float for *_, value in rows)


def test_daily_weight_below_range_dropped():
    day = datetime(2024, 3, 1, tzinfo=timezone.utc)

    rows = daily_from_documents([raw_document(day, {"weight": 29.9}, "66f0c3a9e4b0f3a1d2c60001", None)])

    assert rows == []


def test_daily_document_order_irrelevant():
    case = next(case for case in CASES if case.name == "duplicate_day_keeps_streak")
    expected = daily_from_documents(case.documents)
    shuffled = list(case.documents)

    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert daily_from_documents(shuffled) == expected, f"different rows for shuffle seed {seed}"


def test_daily_skips_missing_date():
    document = {"_id": ObjectId(), "userId": USER, "metrics": {"steps": 100}}

    assert daily_from_documents([document]) == []


# --- compute_reference input checks -------------------------------------------------------------


def test_reference_rejects_repeated_day():
    daily = [("66f0c3a9e4b0f3a1d2c50001", "steps", date(2024, 3, 1), 1.0)] * 2

    with pytest.raises(ValueError, match="repeated steps value"):
        compute_reference(daily, {}, CALCULATED_AT)


def test_reference_rejects_unknown_metric():
    daily = [("66f0c3a9e4b0f3a1d2c50001", "floors", date(2024, 3, 1), 1.0)]

    with pytest.raises(ValueError, match="invalid metricType 'floors'"):
        compute_reference(daily, {}, CALCULATED_AT)


def test_reference_rejects_nan_value():
    daily = [("66f0c3a9e4b0f3a1d2c50001", "steps", date(2024, 3, 1), float("nan"))]

    with pytest.raises(ValueError, match="expected a finite number"):
        compute_reference(daily, {}, CALCULATED_AT)


def test_reference_rejects_datetime_day():
    daily = [("66f0c3a9e4b0f3a1d2c50001", "steps", datetime(2024, 3, 1), 1.0)]

    with pytest.raises(TypeError, match="expected a datetime.date"):
        compute_reference(daily, {}, CALCULATED_AT)


def test_reference_empty_input():
    assert compute_reference([], {}, CALCULATED_AT) == {}


# --- Real Fitbit data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitbit_results(fitbit_dir) -> dict:
    """Compute the reference on the Fitbit export, as `load_fitbit` would store it in `healthmetrics`."""

    export = parse_fitbit_export(fitbit_dir)
    loaded_at = datetime(2024, 5, 1, tzinfo=timezone.utc)
    documents = [
        {
            "_id": ObjectId(),
            "userId": fitbit_user_id(day.fitbit_id),
            "date": datetime(day.day.year, day.day.month, day.day.day, tzinfo=timezone.utc),
            "updatedAt": loaded_at,
            "metrics": day.metrics,
        }
        for day in export.days
    ]
    goals = {str(fitbit_user_id(fitbit_id)): dict(DEFAULT_GOALS) for fitbit_id in export.fitbit_ids}
    return compute_reference(daily_from_documents(documents), goals, CALCULATED_AT)


def test_fitbit_user_steps_7day(fitbit_results):
    document = fitbit_results[(str(fitbit_user_id(FITBIT_USER)), "steps", "7day")]
    analytics = document["analytics"]
    statistics = analytics["statistics"]
    summary = f"computed for {FITBIT_USER} steps 7day: {document}"

    # 2016-05-12 is a non-wear day (0 steps, 1440 sedentary minutes), so the as-of day is May 11.
    assert document["asOfDate"] == date(2016, 5, 11), summary
    assert document["windowStartDate"] == date(2016, 5, 5), summary

    # May 5-11: 14070, 12159, 11992, 10060, 12022, 12207, 12770, sum 85280.
    assert analytics["rollingAverage"] == pytest.approx(85280 / 7, rel=RELATIVE_TOLERANCE), summary
    assert statistics["minValue"] == 10060, summary
    assert statistics["maxValue"] == 14070, summary
    assert statistics["medianValue"] == 12159, summary
    assert statistics["dataPointsCount"] == 7, summary
    assert statistics["completenessPercentage"] == pytest.approx(100.0), summary

    # April 28 - May 4: 13154, 11181, 14673, 10602, 14727, 15103, 11100, sum 90540.
    assert analytics["trend"] == "down", summary
    expected_change = (85280 - 90540) / 90540 * 100
    assert analytics["trendPercentage"] == pytest.approx(expected_change, rel=RELATIVE_TOLERANCE), summary
    assert analytics["comparisonToPrevious"]["isImprovement"] is False, summary

    # Every day from April 22 (April 21 has 9819) to May 11 has at least 10000 steps: 20 days.
    # The longest run is March 25 - April 14 = 21 days, with 13162 steps on April 12 from the
    # later export (the earlier export's partial day has 224).
    assert analytics["streakDays"] == 20, summary
    assert analytics["streakStartDate"] == date(2016, 4, 22), summary
    assert analytics["longestStreak"] == 21, summary

    # May 4-10 sorted: 10060, 11100, 11992, 12022, 12159, 12207, 14070. Q1 = 11546, Q3 = 12183,
    # IQR 637, upper 1.5 IQR fence 13138.5 > 12770: no anomaly.
    assert analytics["anomalyDetected"] is False, summary
    assert analytics["anomalyReason"] is None, summary

    # 5 of the other 6 values are below 12770.
    assert analytics["percentile"] == pytest.approx(500 / 6, rel=RELATIVE_TOLERANCE), summary


def test_fitbit_user_steps_longer_ranges(fitbit_results):
    user_id = str(fitbit_user_id(FITBIT_USER))
    month = fitbit_results[(user_id, "steps", "30day")]
    quarter = fitbit_results[(user_id, "steps", "90day")]
    summary = f"computed for {FITBIT_USER} steps: 30day {month}, 90day {quarter}"

    # April 12 - May 11 is 30 days with a value. Its minimum is 9705 on April 17, not the 224
    # of the earlier export's partial April 12.
    assert month["analytics"]["statistics"]["dataPointsCount"] == 30, summary
    assert month["analytics"]["statistics"]["minValue"] == 9705, summary

    # The user's history is March 25 - May 11: 7 + 30 + 11 = 48 days, all inside 90 days.
    assert quarter["analytics"]["statistics"]["dataPointsCount"] == 48, summary
    assert quarter["analytics"]["statistics"]["maxValue"] == 18134, summary
    assert quarter["analytics"]["comparisonToPrevious"] is None, summary


def test_fitbit_results_contract_shape(fitbit_results):
    assert fitbit_results, "no results for the Fitbit export"

    for key, document in fitbit_results.items():
        assert_document_shape(key, document)


def test_fitbit_results_cover_users(fitbit_results):
    users = {user_id for user_id, _, _ in fitbit_results}
    metrics = {metric_type for _, metric_type, _ in fitbit_results}

    assert len(users) >= 33, f"only {len(users)} users have analytics"
    assert metrics <= set(METRIC_TYPES), f"unknown metrics {metrics - set(METRIC_TYPES)}"
    assert {"steps", "distance", "calories", "activeMinutes", "sleepHours", "weight"} <= metrics
