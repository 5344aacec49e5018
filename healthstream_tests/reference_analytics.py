"""Reference implementation of the `analytics` documents in plain Python and numpy, for tests.

Tests compare the Spark transforms against this module. It follows the rules below and shares no
code with the Spark transforms, so a mistake there does not repeat here. Inputs are small, so every
user, metric and time range is computed with plain loops over dates.

Rules, for a user, a metric and a time range of N days:
- The as-of day A is the user's latest date with a value of the metric. The window is the N
  calendar days A-N+1 .. A, and the previous window the N days A-2N+1 .. A-N. A day without a value
  is missing, never zero.
- The trend compares the means of the window and the previous window.
- Streaks count consecutive calendar days whose value is at least the user's goal.
- The anomaly check compares the value of A with the quartiles of the N days A-N .. A-1.
"""

import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone

import numpy as np
from bson import ObjectId

from healthstream_assets.contract import DEFAULT_GOALS, METRIC_RANGES, METRIC_TYPES, TIME_RANGES

__all__ = [
    "ANOMALY_MIN_HISTORY",
    "GOAL_FIELDS",
    "MAX_STREAK_DAYS",
    "TREND_THRESHOLD_PERCENT",
    "compute_reference",
    "daily_from_documents",
]

DailyRow = tuple[str, str, date, float]
AnalyticsKey = tuple[str, str, str]

# Goal field of a user's `goals` for each metric that has streaks. Other metrics have no streaks.
GOAL_FIELDS = {
    "steps": "stepGoal",
    "sleepHours": "sleepGoal",
    "calories": "calorieGoal",
    "distance": "distanceGoal",
}

# The metric whose improvement is a smaller distance to the user's weightGoal, not a higher mean.
WEIGHT_METRIC = "weight"

TREND_THRESHOLD_PERCENT = 5.0
TREND_PERCENTAGE_MIN = -100.0
TREND_PERCENTAGE_MAX = 1000.0

MAX_STREAK_DAYS = 3650

# Fewer earlier values than this give anomalyReason "insufficient_history".
ANOMALY_MIN_HISTORY = 7

# IQR multiples beyond the quartiles, from the most to the least severe. Every bound is strict.
ANOMALY_SEVERITIES = (("high", 3.0), ("medium", 2.0), ("low", 1.5))

MAX_MESSAGE_LENGTH = 500

_RANGES = {metric.name: metric for metric in METRIC_RANGES}
_OLDEST_UPDATE = datetime.min.replace(tzinfo=timezone.utc)


# --- Raw documents to daily values ------------------------------------------------------------


def daily_from_documents(documents: Iterable[Mapping]) -> list[DailyRow]:
    """Convert raw `healthmetrics` documents into one (userId hex, metricType, date, value) row per value.

    Documents whose userId is not an ObjectId, or whose `date` is not a datetime, are skipped. Of
    several documents for one user and day, only the one with the latest (updatedAt, _id) is used,
    and its metrics are not merged with the others. A metric value is kept when it is an int or
    float (not a bool), finite and inside the contract's range, inclusive. Rows are sorted by
    user, metric and date.
    """

    latest: dict[tuple[str, date], Mapping] = {}
    for document in documents:
        user_id = document.get("userId")
        day_start = document.get("date")
        if not isinstance(user_id, ObjectId) or not isinstance(day_start, datetime):
            continue

        # NOTE: `date` is expected at 00:00 UTC. Any other time of day is read as its UTC date.
        key = (str(user_id), _as_utc(day_start).date())
        kept = latest.get(key)
        if kept is None or _version_key(document) > _version_key(kept):
            latest[key] = document

    rows = []
    for (user_id, day), document in latest.items():
        metrics = document.get("metrics")
        if not isinstance(metrics, Mapping):
            continue

        for metric_type in METRIC_TYPES:
            value = metrics.get(metric_type)
            if _is_valid_value(metric_type, value):
                rows.append((user_id, metric_type, day, float(value)))

    rows.sort(key=lambda row: (row[0], row[1], row[2]))
    return rows


def _as_utc(moment: datetime) -> datetime:
    """Read a stored datetime as UTC, whether the client returned it tz-aware or naive UTC."""

    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=timezone.utc)

    return moment.astimezone(timezone.utc)


def _version_key(document: Mapping) -> tuple[datetime, str]:
    """Order documents of one day by (updatedAt, _id). A missing updatedAt sorts first.

    The hex string of an ObjectId sorts like its 12 bytes, which is how MongoDB orders ObjectIds.
    """

    updated_at = document.get("updatedAt")
    if isinstance(updated_at, datetime):
        updated_at = _as_utc(updated_at)
    else:
        updated_at = _OLDEST_UPDATE

    return updated_at, str(document.get("_id"))


def _is_valid_value(metric_type: str, value: object) -> bool:
    # The app may send a number as a plain decimal string ("9727"); "8,253" is not a number.
    if isinstance(value, str):
        if re.fullmatch(r"-?\d+(\.\d+)?", value.strip()) is None:
            return False
        value = float(value)

    if isinstance(value, bool) or not isinstance(value, int | float):
        return False

    bounds = _RANGES[metric_type]
    # NaN fails both comparisons, and infinity fails the upper one.
    return bounds.minimum <= value <= bounds.maximum


# --- Analytics --------------------------------------------------------------------------------


def compute_reference(
    daily: Iterable[DailyRow],
    goals: Mapping[str, Mapping | None],
    calculated_at: datetime,
) -> dict[AnalyticsKey, dict]:
    """Compute the `analytics` fields for every user, metric with a value, and time range.

    `daily` has at most one value per user, metric and day. `goals` maps a userId to that user's
    `goals` object, and a missing user or goal field takes the default goal. Returns
    (userId, metricType, timeRange) -> {"asOfDate", "windowStartDate", "analytics"}, where a NaN
    or infinite float anywhere becomes None. Raises ValueError for an unknown metric, a repeated
    (user, metric, day) or a value that is not a finite number, and TypeError for a date that is
    not a `datetime.date`.
    """

    series = _group_series(daily)

    results: dict[AnalyticsKey, dict] = {}
    for (user_id, metric_type), values_by_day in sorted(series.items()):
        user_goals = goals.get(user_id) or {}
        as_of = max(values_by_day)
        streaks = _streaks(metric_type, values_by_day, user_goals, as_of)

        for time_range, days in TIME_RANGES.items():
            analytics = _window_analytics(
                metric_type, values_by_day, as_of, days, user_goals, calculated_at
            )
            analytics.update(streaks)
            results[(user_id, metric_type, time_range)] = _replace_non_finite(
                {
                    "asOfDate": as_of,
                    "windowStartDate": as_of - timedelta(days=days - 1),
                    "analytics": analytics,
                }
            )

    return results


def _group_series(daily: Iterable[DailyRow]) -> dict[tuple[str, str], dict[date, float]]:
    """Group daily rows into {(userId, metricType): {date: value}}, checking each row."""

    series: dict[tuple[str, str], dict[date, float]] = {}
    for user_id, metric_type, day, value in daily:
        if metric_type not in _RANGES:
            raise ValueError(
                f"invalid metricType {metric_type!r} for user {user_id}: expected one of {METRIC_TYPES}"
            )

        # datetime is a subclass of date, and mixing the two would make day arithmetic wrong.
        if not isinstance(day, date) or isinstance(day, datetime):
            raise TypeError(f"invalid day {day!r} for user {user_id}: expected a datetime.date")

        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(
                f"invalid {metric_type} value {value!r} for user {user_id} on {day}: "
                "expected a finite number"
            )

        values_by_day = series.setdefault((user_id, metric_type), {})
        if day in values_by_day:
            raise ValueError(
                f"repeated {metric_type} value for user {user_id} on {day}: "
                "expected one value per user, metric and day (use daily_from_documents)"
            )

        values_by_day[day] = float(value)

    return series


def _values_between(values_by_day: Mapping[date, float], first: date, last: date) -> list[float]:
    """Return the values of the days first .. last, both included, in date order."""

    return [values_by_day[day] for day in sorted(values_by_day) if first <= day <= last]


def _window_analytics(
    metric_type: str,
    values_by_day: Mapping[date, float],
    as_of: date,
    days: int,
    user_goals: Mapping,
    calculated_at: datetime,
) -> dict:
    """Compute the analytics of one time range, except the streak fields."""

    window_start = as_of - timedelta(days=days - 1)
    window = _values_between(values_by_day, window_start, as_of)
    previous = _values_between(
        values_by_day, as_of - timedelta(days=2 * days - 1), as_of - timedelta(days=days)
    )
    history = _values_between(values_by_day, as_of - timedelta(days=days), as_of - timedelta(days=1))
    actual = values_by_day[as_of]

    current_mean = _mean(window)
    analytics = {"rollingAverage": current_mean}
    analytics.update(_trend(metric_type, current_mean, previous, user_goals))
    analytics.update(_anomaly(metric_type, as_of, actual, history, days, calculated_at))
    analytics["percentile"] = _percent_rank(actual, window)
    analytics["statistics"] = _statistics(window, days)
    return analytics


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _statistics(window: list[float], days: int) -> dict:
    mean = _mean(window)
    # Population variance in two passes, so equal values give exactly 0.
    variance = math.fsum((value - mean) ** 2 for value in window) / len(window)
    return {
        "standardDeviation": math.sqrt(variance),
        "minValue": min(window),
        "maxValue": max(window),
        "medianValue": _quantile(window, 0.5),
        "dataPointsCount": len(window),
        "completenessPercentage": len(window) / days * 100,
    }


def _quantile(values: list[float], fraction: float) -> float:
    """Return numpy's default `linear` quantile, which equals Spark's exact `percentile`."""

    return float(np.quantile(np.asarray(values, dtype=float), fraction, method="linear"))


def _trend(metric_type: str, current_mean: float, previous: list[float], user_goals: Mapping) -> dict:
    """Compute trend, trendPercentage and comparisonToPrevious from the two windows' means."""

    if not previous:
        return {"trend": "stable", "trendPercentage": 0.0, "comparisonToPrevious": None}

    previous_mean = _mean(previous)
    if previous_mean == 0:
        # Contract ranges start at 0 or above, so a nonzero current mean here is positive.
        percentage_change = None
        trend_percentage = 0.0 if current_mean == 0 else TREND_PERCENTAGE_MAX
    else:
        percentage_change = (current_mean - previous_mean) / previous_mean * 100
        trend_percentage = min(max(percentage_change, TREND_PERCENTAGE_MIN), TREND_PERCENTAGE_MAX)

    if trend_percentage > TREND_THRESHOLD_PERCENT:
        trend = "up"
    elif trend_percentage < -TREND_THRESHOLD_PERCENT:
        trend = "down"
    else:
        trend = "stable"

    comparison = {
        "absoluteChange": current_mean - previous_mean,
        "percentageChange": percentage_change,
        "isImprovement": _is_improvement(metric_type, current_mean, previous_mean, user_goals),
    }
    return {"trend": trend, "trendPercentage": trend_percentage, "comparisonToPrevious": comparison}


def _is_improvement(
    metric_type: str, current_mean: float, previous_mean: float, user_goals: Mapping
) -> bool | None:
    """Return whether the current mean is better: closer to the weight goal, or else higher."""

    if metric_type != WEIGHT_METRIC:
        return current_mean > previous_mean

    weight_goal = _goal_value(user_goals, "weightGoal")
    if weight_goal is None:
        return None

    return abs(current_mean - weight_goal) < abs(previous_mean - weight_goal)


def _goal_value(user_goals: Mapping, field: str) -> float | None:
    """Return the user's goal, or the default goal when the field is missing or None.

    NOTE: a goal that is not a number, such as a string or a bool, is treated as missing too.
    The written rules name only missing and None fields.
    """

    value = user_goals.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        value = DEFAULT_GOALS.get(field)

    return None if value is None else float(value)


def _streaks(
    metric_type: str, values_by_day: Mapping[date, float], user_goals: Mapping, as_of: date
) -> dict:
    """Compute streakDays, longestStreak and streakStartDate over the user's history up to `as_of`.

    A day counts when its value is at least the goal. A missing day ends a run.
    """

    no_streak = {"streakDays": 0, "longestStreak": 0, "streakStartDate": None}
    goal_field = GOAL_FIELDS.get(metric_type)
    if goal_field is None:
        return no_streak

    goal = _goal_value(user_goals, goal_field)
    counting_days = sorted(
        day for day, value in values_by_day.items() if day <= as_of and value >= goal
    )

    longest = 0
    run_start = None
    run_length = 0
    previous_day = None
    for day in counting_days:
        if previous_day is not None and day - previous_day == timedelta(days=1):
            run_length += 1
        else:
            run_start = day
            run_length = 1

        longest = max(longest, run_length)
        previous_day = day

    if previous_day != as_of:
        return {**no_streak, "longestStreak": min(longest, MAX_STREAK_DAYS)}

    # NOTE: streakStartDate is the true first day of the run even when streakDays is capped.
    return {
        "streakDays": min(run_length, MAX_STREAK_DAYS),
        "longestStreak": min(longest, MAX_STREAK_DAYS),
        "streakStartDate": run_start,
    }


def _anomaly(
    metric_type: str,
    as_of: date,
    actual: float,
    history: list[float],
    days: int,
    calculated_at: datetime,
) -> dict:
    """Classify the as-of value against the IQR fences of the `days` earlier days' values."""

    not_detected = {"anomalyDetected": False, "anomalyDetails": None}
    if len(history) < ANOMALY_MIN_HISTORY:
        return {**not_detected, "anomalyReason": "insufficient_history"}

    first_quartile = _quantile(history, 0.25)
    third_quartile = _quantile(history, 0.75)
    spread = third_quartile - first_quartile
    if spread == 0:
        return {**not_detected, "anomalyReason": "zero_spread"}

    severity = None
    for name, multiple in ANOMALY_SEVERITIES:
        if actual < first_quartile - multiple * spread or actual > third_quartile + multiple * spread:
            severity = name
            break

    if severity is None:
        return {**not_detected, "anomalyReason": None}

    expected = _quantile(history, 0.5)
    direction = "above" if actual > expected else "below"
    message = (
        f"{metric_type} on {as_of.isoformat()} was {actual:g}, {direction} the median {expected:g} "
        f"of the {len(history)} values in the previous {days} days ({severity} severity)."
    )
    details = {
        "severity": severity,
        "actualValue": actual,
        "expectedValue": expected,
        "deviation": actual - expected,
        "message": message[:MAX_MESSAGE_LENGTH],
        "detectedAt": calculated_at,
    }
    return {"anomalyDetected": True, "anomalyReason": None, "anomalyDetails": details}


def _percent_rank(actual: float, window: list[float]) -> float:
    """Return the percent rank of `actual` in the window: the share of the other values below it."""

    if len(window) == 1:
        return 0.0

    below = sum(1 for value in window if value < actual)
    return below / (len(window) - 1) * 100


def _replace_non_finite(value):
    """Return a copy of nested dicts and lists where every NaN or infinite float is None."""

    if isinstance(value, dict):
        return {key: _replace_non_finite(item) for key, item in value.items()}

    if isinstance(value, list):
        return [_replace_non_finite(item) for item in value]

    if isinstance(value, float) and not math.isfinite(value):
        return None

    return value
