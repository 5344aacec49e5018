"""Rolling averages over calendar days, checked against values computed by hand."""

from datetime import date

import pytest
from pyspark.sql import functions as F

from healthstream_assets.transforms.history import daily_values
from healthstream_assets.transforms.rolling import days_to_recompute, rolling_averages

USER = "6b132d443b705cb98ddfbdfd"
OTHER_USER = "6b132d443b705cb98ddfbdfe"


def _daily(spark, rows):
    return spark.createDataFrame(rows, "userId string, metricType string, date date, value double")


def _by_day(result, metric_type="steps", user=USER):
    rows = result.filter(f"userId = '{user}' and metricType = '{metric_type}'").collect()
    return {row["date"]: row for row in rows}


def test_rolling_gap_days_are_missing_not_zero(spark):
    daily = _daily(
        spark,
        [
            (USER, "steps", date(2026, 1, 1), 1000.0),
            (USER, "steps", date(2026, 1, 2), 2000.0),
            (USER, "steps", date(2026, 1, 9), 9000.0),
        ],
    )
    touched = spark.createDataFrame([(USER, date(2026, 1, 1))], "userId string, date date")

    result = _by_day(rolling_averages(daily, touched))

    day_9 = result[date(2026, 1, 9)]
    assert day_9["avg_7day"] == 9000.0
    assert day_9["count_7day"] == 1
    assert day_9["avg_30day"] == pytest.approx(4000.0)
    assert day_9["count_30day"] == 3


def test_rolling_covers_days_without_values(spark):
    daily = _daily(
        spark,
        [
            (USER, "steps", date(2026, 1, 1), 1000.0),
            (USER, "steps", date(2026, 1, 2), 2000.0),
            (USER, "steps", date(2026, 1, 9), 9000.0),
        ],
    )
    touched = spark.createDataFrame([(USER, date(2026, 1, 2))], "userId string, date date")

    result = _by_day(rolling_averages(daily, touched))

    # Day 5 has no value of its own, but its 7-day window (Dec 30 - Jan 5) contains days 1 and 2.
    assert result[date(2026, 1, 5)]["avg_7day"] == pytest.approx(1500.0)
    assert result[date(2026, 1, 5)]["count_7day"] == 2
    # Day 8's window (Jan 2 - Jan 8) holds only day 2.
    assert result[date(2026, 1, 8)]["avg_7day"] == pytest.approx(2000.0)
    assert result[date(2026, 1, 8)]["count_7day"] == 1
    # Day 1 was not touched and is not the as-of day, so it is not recomputed.
    assert date(2026, 1, 1) not in result


def test_rolling_reach_stops_at_as_of_day(spark):
    daily = _daily(
        spark,
        [
            (USER, "steps", date(2026, 1, 1), 1000.0),
            (USER, "steps", date(2026, 1, 20), 3000.0),
            (USER, "weight", date(2026, 1, 3), 70.0),
        ],
    )
    touched = spark.createDataFrame([(USER, date(2026, 1, 1))], "userId string, date date")

    days = days_to_recompute(daily, touched)
    steps_days = sorted(row["date"] for row in days.filter("metricType = 'steps'").collect())
    weight_days = sorted(row["date"] for row in days.filter("metricType = 'weight'").collect())

    assert steps_days[0] == date(2026, 1, 1)
    assert steps_days[-1] == date(2026, 1, 20)
    assert len(steps_days) == 20
    assert weight_days == [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]


def test_rolling_keeps_users_apart(spark):
    daily = _daily(
        spark,
        [
            (USER, "steps", date(2026, 1, 1), 1000.0),
            (OTHER_USER, "steps", date(2026, 1, 1), 5000.0),
        ],
    )
    touched = spark.createDataFrame(
        [(USER, date(2026, 1, 1)), (OTHER_USER, date(2026, 1, 1))], "userId string, date date"
    )

    result = rolling_averages(daily, touched)

    assert _by_day(result)[date(2026, 1, 1)]["avg_90day"] == 1000.0
    assert _by_day(result, user=OTHER_USER)[date(2026, 1, 1)]["avg_90day"] == 5000.0


def test_duplicate_day_keeps_latest_document(spark):
    accepted = spark.createDataFrame(
        [
            ("a1", USER, date(2026, 1, 1), "steps", 1000.0, "2026-01-01 10:00:00"),
            ("a1", USER, date(2026, 1, 1), "calories", 1800.0, "2026-01-01 10:00:00"),
            ("a2", USER, date(2026, 1, 1), "steps", 4000.0, "2026-01-01 12:00:00"),
            ("a2", USER, date(2026, 1, 1), "calories", None, "2026-01-01 12:00:00"),
            ("a3", USER, date(2026, 1, 2), "steps", 2000.0, "2026-01-02 09:00:00"),
        ],
        "sourceId string, userId string, date date, metricType string, value double, updatedAt string",
    ).withColumn("updatedAt", F.to_timestamp("updatedAt"))

    daily = daily_values(accepted)
    values = {(row["date"], row["metricType"]): row["value"] for row in daily.collect()}

    assert values[(date(2026, 1, 1), "steps")] == 4000.0
    # The latest document has no calories that day, and the older document's value is not merged in.
    assert (date(2026, 1, 1), "calories") not in values
    assert values[(date(2026, 1, 2), "steps")] == 2000.0

    touched = spark.createDataFrame([(USER, date(2026, 1, 1))], "userId string, date date")
    day_2 = _by_day(rolling_averages(daily, touched))[date(2026, 1, 2)]
    assert day_2["avg_7day"] == pytest.approx(3000.0)
    assert day_2["count_7day"] == 2
