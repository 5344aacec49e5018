"""Hand-computed edge cases of the `analytics` documents, as plain data for any test to import.

Each case gives the input as daily rows, raw `healthmetrics` documents or both, one
(userId, metricType, timeRange) key, and expected values by dotted path into the document of that
key, such as "analytics.streakDays". The comment beside each case shows the arithmetic. The
input of a case is its `daily` rows plus the rows that `daily_from_documents` makes of its
`documents`. Only the listed fields are checked. Floats are meant to be compared with a relative
tolerance of 1e-9, and None, bools, ints, strings and dates exactly.

Dates are in 2024, a leap year, so windows that reach back from March cross February 29.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from math import sqrt

from bson import ObjectId

__all__ = ["CALCULATED_AT", "CASES", "AnalyticsCase", "value_at"]

CALCULATED_AT = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)

# Time of the first write of every document. Later versions of a day add hours to it.
WRITTEN_AT = datetime(2024, 3, 20, 8, 0, tzinfo=timezone.utc)

# 2024-03-01. The cases name days as offsets from it, so MARCH[8] is 2024-03-08.
MARCH = {offset: date(2024, 3, offset) for offset in range(1, 32)}
FEBRUARY_29 = date(2024, 2, 29)


@dataclass(frozen=True)
class AnalyticsCase:
    """One edge case: input rows or documents, goals, the key to check and its expected fields."""

    name: str
    key: tuple[str, str, str]
    expected: dict[str, object]
    daily: tuple[tuple[str, str, date, float], ...] = ()
    documents: tuple[dict, ...] = ()
    goals: dict[str, dict] = field(default_factory=dict)
    calculated_at: datetime = CALCULATED_AT


def value_at(document: dict, path: str) -> object:
    """Return the value at a dotted path such as "analytics.statistics.minValue".

    Raises KeyError naming the path when a part is missing, and TypeError when a part before the
    last is None or not a dict.
    """

    value = document
    for part in path.split("."):
        if not isinstance(value, dict):
            raise TypeError(f"cannot read {path!r}: the part before {part!r} is {value!r}, not a dict")

        if part not in value:
            raise KeyError(f"{path!r}: no field {part!r} in {sorted(value)}")

        value = value[part]

    return value


def rows(user_id: str, metric_type: str, first_day: date, values: list[float | None]) -> tuple:
    """Build daily rows for consecutive days from `first_day`. A None value is a day without a row."""

    return tuple(
        (user_id, metric_type, first_day + timedelta(days=offset), float(value))
        for offset, value in enumerate(values)
        if value is not None
    )


def document(
    user_id: str | ObjectId,
    day: date,
    metrics: dict | None,
    id_suffix: int,
    updated_hours: int = 0,
) -> dict:
    """Build a raw `healthmetrics` document as pymongo returns it with tz_aware=True.

    `id_suffix` sets the last digits of the _id, and updatedAt is WRITTEN_AT plus `updated_hours`.
    A `user_id` given as a str stays a str, which `daily_from_documents` must skip. A `metrics` of
    None leaves the field out.
    """

    raw = {
        "_id": ObjectId(document_id(id_suffix)),
        "userId": user_id,
        "date": datetime(day.year, day.month, day.day, tzinfo=timezone.utc),
        "source": "manual",
        "createdAt": WRITTEN_AT,
        "updatedAt": WRITTEN_AT + timedelta(hours=updated_hours),
    }
    if metrics is not None:
        raw["metrics"] = metrics

    return raw


def user(suffix: int) -> str:
    """Return a distinct ObjectId hex string for one case's user."""

    return f"6650a1c2e4b0f3a1d2c3{suffix:04x}"


def document_id(suffix: int) -> str:
    """Return a distinct ObjectId hex string for one raw document."""

    return f"6650b7d9e4b0f3a1d2c4{suffix:04x}"


# --- Duplicate, skipped and invalid documents ---------------------------------------------------

USER_DUPLICATE = user(0x0101)
USER_DUPLICATE_ID = ObjectId(USER_DUPLICATE)
DUPLICATE_DOCUMENTS = (
    document(USER_DUPLICATE_ID, MARCH[1], {"steps": 11000, "calories": 2100}, 0x0101),
    document(USER_DUPLICATE_ID, MARCH[2], {"steps": 11000, "calories": 2100}, 0x0102),
    # Two documents for March 3. The later updatedAt wins although its _id is smaller, and only
    # its metrics count, so March 3 has steps 12000 and no calories.
    document(USER_DUPLICATE_ID, MARCH[3], {"steps": 3000, "calories": 2500}, 0x01FF, updated_hours=1),
    document(USER_DUPLICATE_ID, MARCH[3], {"steps": 12000}, 0x0103, updated_hours=2),
    document(USER_DUPLICATE_ID, MARCH[4], {"steps": 11000, "calories": 2100}, 0x0104),
    document(USER_DUPLICATE_ID, MARCH[5], {"steps": 11000, "calories": 2100}, 0x0105),
    # userId as a string, not an ObjectId: skipped, so March 6 is not the as-of day.
    document(USER_DUPLICATE, MARCH[6], {"steps": 50000, "calories": 2100}, 0x0106),
)

USER_SAME_UPDATE = user(0x0102)
USER_SAME_UPDATE_ID = ObjectId(USER_SAME_UPDATE)
SAME_UPDATE_DOCUMENTS = (
    document(USER_SAME_UPDATE_ID, MARCH[1], {"steps": 11000}, 0x0201),
    # Equal updatedAt on March 2 and on March 3, so the larger _id wins. It comes first on
    # March 2 and second on March 3, so keeping the first or the last document read fails.
    document(USER_SAME_UPDATE_ID, MARCH[2], {"steps": 12000}, 0x0203),
    document(USER_SAME_UPDATE_ID, MARCH[2], {"steps": 4000}, 0x0202),
    document(USER_SAME_UPDATE_ID, MARCH[3], {"steps": 4000}, 0x0204),
    document(USER_SAME_UPDATE_ID, MARCH[3], {"steps": 13000}, 0x0205),
)

USER_INVALID = user(0x0103)
USER_INVALID_ID = ObjectId(USER_INVALID)
INVALID_DOCUMENTS = (
    document(USER_INVALID_ID, MARCH[1], {"steps": 0}, 0x0301),
    document(USER_INVALID_ID, MARCH[2], {"steps": 100_000}, 0x0302),
    document(USER_INVALID_ID, MARCH[3], {"steps": True}, 0x0303),
    document(USER_INVALID_ID, MARCH[4], {"steps": 100_001}, 0x0304),
    document(USER_INVALID_ID, MARCH[5], {"steps": None}, 0x0305),
    document(USER_INVALID_ID, MARCH[6], {"steps": float("nan")}, 0x0306),
    document(USER_INVALID_ID, MARCH[7], {"steps": "12,000"}, 0x0307),
    document(USER_INVALID_ID, MARCH[8], {"steps": -1}, 0x0308),
    document(USER_INVALID_ID, MARCH[9], {}, 0x0309),
    document(USER_INVALID_ID, MARCH[10], None, 0x030A),
    document(USER_INVALID_ID, MARCH[11], {"steps": float("inf")}, 0x030B),
)

USER_NUMERIC_STRING = user(0x0108)
NUMERIC_STRING_DOCUMENTS = (
    document(ObjectId(USER_NUMERIC_STRING), MARCH[1], {"steps": "9727"}, 0x0380),
    document(ObjectId(USER_NUMERIC_STRING), MARCH[2], {"steps": 10273}, 0x0381),
)

USER_NON_WEAR = user(0x0104)
USER_NON_WEAR_ID = ObjectId(USER_NON_WEAR)
NON_WEAR_METRICS = {
    "steps": None,
    "distance": None,
    "calories": None,
    "activeMinutes": None,
    "sleepHours": 7.5,
}
# March 1-6 with 12000 steps, except the non-wear day March 4.
NON_WEAR_DOCUMENTS = tuple(
    document(
        USER_NON_WEAR_ID,
        MARCH[offset],
        NON_WEAR_METRICS if offset == 4 else {"steps": 12000},
        0x0400 + offset,
    )
    for offset in range(1, 7)
)

# --- Daily rows ---------------------------------------------------------------------------------

USER_GAP = user(0x0201)
USER_FLAT = user(0x0202)
USER_SHORT_HISTORY = user(0x0203)
USER_ONE_DAY = user(0x0204)
USER_EXACT_GOAL = user(0x0205)
USER_NONE_GOAL = user(0x0206)
USER_SLEEP_GOAL = user(0x0207)
USER_DISTANCE = user(0x0208)
USER_ACTIVE_MINUTES = user(0x0209)
USER_LONG_STREAK = user(0x020A)
USER_LONGEST_IN_PAST = user(0x020B)
USER_CAPPED_STREAK = user(0x020C)

USER_WEIGHT_CLOSER = user(0x0301)
USER_WEIGHT_AWAY = user(0x0302)
USER_WEIGHT_GAIN = user(0x0303)
USER_WEIGHT_NO_GOAL = user(0x0304)
USER_WEIGHT_NO_USER = user(0x0305)

USER_TREND_PLUS_5 = user(0x0401)
USER_TREND_ABOVE_5 = user(0x0402)
USER_TREND_MINUS_5 = user(0x0403)
USER_TREND_BELOW_MINUS_5 = user(0x0404)
USER_PREVIOUS_ZERO = user(0x0405)
USER_BOTH_ZERO = user(0x0406)
USER_SPARSE = user(0x0407)
USER_PREVIOUS_EDGE = user(0x0408)
USER_NO_PREVIOUS = user(0x0409)
USER_90_DAY_EDGE = user(0x040A)
USER_OTHER_LATER = user(0x040B)
USER_SHORTER = user(0x040C)

USER_ANOMALY_LOW = user(0x0501)
USER_ANOMALY_MEDIUM = user(0x0502)
USER_ANOMALY_HIGH = user(0x0503)
USER_ANOMALY_AT_FENCE = user(0x0504)
USER_ANOMALY_AT_HIGH_FENCE = user(0x0505)
USER_ANOMALY_BELOW = user(0x0506)

USER_TIES = user(0x0601)
USER_TIE_AT_MAX = user(0x0602)
USER_EVEN_MEDIAN = user(0x0603)

# Steps from Feb 29 to March 8 of the cases on fewer than 7 earlier values. None is no row.
SHORT_HISTORY_VALUES = [10000, None, 10000, 11000, 12000, 13000, 14000, 15000, 50000]

# Earlier values of the anomaly cases on March 1-7, sorted: 1000 .. 7000.
# Q1 at position 0.25 * 6 = 1.5 is 2000 + 0.5 * 1000 = 2500. Q3 at position 4.5 is 5500.
# IQR = 3000 and the median is 4000. Upper fences: 1.5 IQR 10000, 2 IQR 11500, 3 IQR 14500.
ANOMALY_HISTORY = [1000, 2000, 3000, 4000, 5000, 6000, 7000]

# Earlier values of the low-side anomaly case, in date order, sorted 10000 .. 11200 by 200.
# Q1 = 10200 + 0.5 * 200 = 10300, Q3 = 10800 + 0.5 * 200 = 10900, IQR = 600, median 10600.
# Lower fences: 1.5 IQR 9400, 2 IQR 9100, 3 IQR 8500.
ANOMALY_LOW_SIDE_HISTORY = [10600, 10000, 11200, 10400, 10800, 10200, 11000]

# The streak cap case has 3652 consecutive days ending 2024-03-01, so its first day is 3651 days
# before March 1.
CAPPED_STREAK_DAYS = 3652
CAPPED_STREAK_FIRST_DAY = MARCH[1] - timedelta(days=CAPPED_STREAK_DAYS - 1)


CASES: list[AnalyticsCase] = [
    # --- Duplicates and documents ---
    AnalyticsCase(
        # March 1-5, with March 3 from the later document: 11000, 11000, 12000, 11000, 11000.
        # Window Feb 28 .. Mar 5 has 5 values, mean 56000 / 5 = 11200. All >= 10000, so the
        # streak runs March 1-5. The skipped string userId would have made March 6 the as-of day.
        name="duplicate_day_keeps_streak",
        documents=DUPLICATE_DOCUMENTS,
        key=(USER_DUPLICATE, "steps", "7day"),
        expected={
            "asOfDate": MARCH[5],
            "windowStartDate": date(2024, 2, 28),
            "analytics.rollingAverage": 11200.0,
            "analytics.statistics.dataPointsCount": 5,
            "analytics.statistics.minValue": 11000.0,
            "analytics.statistics.maxValue": 12000.0,
            "analytics.streakDays": 5,
            "analytics.streakStartDate": MARCH[1],
            "analytics.longestStreak": 5,
        },
    ),
    AnalyticsCase(
        # Calories on March 1, 2, 4, 5 = 2100. The winning March 3 document has no calories and
        # the older one's 2500 is not merged in, so March 3 is missing and breaks the streak.
        # Streak March 4-5 = 2 days, longest 2 (March 1-2 is also 2).
        name="duplicate_day_no_merge",
        documents=DUPLICATE_DOCUMENTS,
        key=(USER_DUPLICATE, "calories", "7day"),
        expected={
            "asOfDate": MARCH[5],
            "analytics.rollingAverage": 2100.0,
            "analytics.statistics.dataPointsCount": 4,
            "analytics.statistics.maxValue": 2100.0,
            "analytics.streakDays": 2,
            "analytics.streakStartDate": MARCH[4],
            "analytics.longestStreak": 2,
        },
    ),
    AnalyticsCase(
        # March 1 = 11000, then 12000 and 13000 from the larger _id on March 2 and 3.
        # Mean 36000 / 3 = 12000, min 11000, streak 3 from March 1.
        name="duplicate_same_updated_at_uses_id",
        documents=SAME_UPDATE_DOCUMENTS,
        key=(USER_SAME_UPDATE, "steps", "7day"),
        expected={
            "asOfDate": MARCH[3],
            "analytics.rollingAverage": 12000.0,
            "analytics.statistics.minValue": 11000.0,
            "analytics.statistics.dataPointsCount": 3,
            "analytics.streakDays": 3,
            "analytics.streakStartDate": MARCH[1],
        },
    ),
    AnalyticsCase(
        # Kept: 0 on March 1 and 100000 on March 2 (range bounds are inclusive). Dropped: True,
        # 100001, None, NaN, "12,000", -1, an empty metrics object, no metrics field and infinity.
        # Window Feb 25 .. Mar 2: mean 50000, population std |100000 - 0| / 2 = 50000,
        # median 50000. Percentile of 100000: 1 value below / (2 - 1) * 100 = 100.
        # Streak: 100000 >= 10000 on March 2 only, so 1.
        name="invalid_values_dropped",
        documents=INVALID_DOCUMENTS,
        key=(USER_INVALID, "steps", "7day"),
        expected={
            "asOfDate": MARCH[2],
            "windowStartDate": date(2024, 2, 25),
            "analytics.rollingAverage": 50000.0,
            "analytics.statistics.dataPointsCount": 2,
            "analytics.statistics.minValue": 0.0,
            "analytics.statistics.maxValue": 100000.0,
            "analytics.statistics.medianValue": 50000.0,
            "analytics.statistics.standardDeviation": 50000.0,
            "analytics.percentile": 100.0,
            "analytics.streakDays": 1,
            "analytics.streakStartDate": MARCH[2],
            "analytics.longestStreak": 1,
        },
    ),
    AnalyticsCase(
        # A plain decimal string is a number: "9727" counts as 9727. Mean (9727 + 10273) / 2 = 10000.
        # Only March 2 meets the 10000 goal, so the streak is 1 from March 2.
        name="numeric_string_accepted",
        documents=NUMERIC_STRING_DOCUMENTS,
        key=(USER_NUMERIC_STRING, "steps", "7day"),
        expected={
            "asOfDate": MARCH[2],
            "analytics.rollingAverage": 10000.0,
            "analytics.statistics.minValue": 9727.0,
            "analytics.statistics.dataPointsCount": 2,
            "analytics.streakDays": 1,
            "analytics.streakStartDate": MARCH[2],
        },
    ),
    # --- Streaks ---
    AnalyticsCase(
        # 12000 on March 1-3 and 5-6, no row on March 4. The streak restarts on March 5: 2 days.
        # Longest: March 1-3 = 3. Window Feb 29 .. Mar 6 has 5 values: 5 / 7 * 100 percent.
        name="streak_across_missing_day",
        daily=rows(USER_GAP, "steps", MARCH[1], [12000, 12000, 12000, None, 12000, 12000]),
        key=(USER_GAP, "steps", "7day"),
        expected={
            "asOfDate": MARCH[6],
            "windowStartDate": FEBRUARY_29,
            "analytics.streakDays": 2,
            "analytics.streakStartDate": MARCH[5],
            "analytics.longestStreak": 3,
            "analytics.statistics.dataPointsCount": 5,
            "analytics.statistics.completenessPercentage": 5 / 7 * 100,
        },
    ),
    AnalyticsCase(
        # March 4 has a document whose steps are None (a non-wear day), so it is missing, not 0.
        # The same streak as a missing day: 2 from March 5, longest 3, 5 values in the window.
        name="streak_across_non_wear_day",
        documents=NON_WEAR_DOCUMENTS,
        key=(USER_NON_WEAR, "steps", "7day"),
        expected={
            "asOfDate": MARCH[6],
            "analytics.streakDays": 2,
            "analytics.streakStartDate": MARCH[5],
            "analytics.longestStreak": 3,
            "analytics.rollingAverage": 12000.0,
            "analytics.statistics.minValue": 12000.0,
            "analytics.statistics.dataPointsCount": 5,
        },
    ),
    AnalyticsCase(
        # Exactly the default step goal 10000 counts, and the user is missing from goals.
        name="exactly_goal_counts",
        daily=rows(USER_EXACT_GOAL, "steps", MARCH[1], [10000, 10000, 10000]),
        key=(USER_EXACT_GOAL, "steps", "7day"),
        expected={
            "analytics.streakDays": 3,
            "analytics.streakStartDate": MARCH[1],
            "analytics.longestStreak": 3,
        },
    ),
    AnalyticsCase(
        # stepGoal None takes the default 10000: 10000 counts, 9999 does not. Streak 1 on March 3.
        name="goal_none_uses_default",
        daily=rows(USER_NONE_GOAL, "steps", MARCH[1], [10000, 9999, 10000]),
        goals={USER_NONE_GOAL: {"stepGoal": None, "sleepGoal": 6}},
        key=(USER_NONE_GOAL, "steps", "30day"),
        expected={
            "analytics.streakDays": 1,
            "analytics.streakStartDate": MARCH[3],
            "analytics.longestStreak": 1,
        },
    ),
    AnalyticsCase(
        # sleepGoal 7: 7.0 counts, 6.99 does not, 7.0 and 7.5 count. Streak March 3-4 = 2.
        name="custom_sleep_goal",
        daily=rows(USER_SLEEP_GOAL, "sleepHours", MARCH[1], [7.0, 6.99, 7.0, 7.5]),
        goals={USER_SLEEP_GOAL: {"stepGoal": 10000, "sleepGoal": 7}},
        key=(USER_SLEEP_GOAL, "sleepHours", "90day"),
        expected={
            "analytics.streakDays": 2,
            "analytics.streakStartDate": MARCH[3],
            "analytics.longestStreak": 2,
        },
    ),
    AnalyticsCase(
        # Default distance goal 5 km: 5.0 and 5.5 count, 4.99 on the as-of day does not.
        # streakDays 0 and no start date, but the longest run is March 1-2 = 2.
        name="as_of_day_below_goal",
        daily=rows(USER_DISTANCE, "distance", MARCH[1], [5.0, 5.5, 4.99]),
        key=(USER_DISTANCE, "distance", "7day"),
        expected={
            "analytics.streakDays": 0,
            "analytics.streakStartDate": None,
            "analytics.longestStreak": 2,
        },
    ),
    AnalyticsCase(
        # activeMinutes has no goal, so no streaks however high the values.
        name="metric_without_goal_no_streak",
        daily=rows(USER_ACTIVE_MINUTES, "activeMinutes", MARCH[1], [600, 600, 600, 600, 600]),
        goals={USER_ACTIVE_MINUTES: {"stepGoal": 1}},
        key=(USER_ACTIVE_MINUTES, "activeMinutes", "7day"),
        expected={
            "analytics.streakDays": 0,
            "analytics.streakStartDate": None,
            "analytics.longestStreak": 0,
        },
    ),
    AnalyticsCase(
        # 10 counting days March 1-10: the streak is 10 in the 7-day document too.
        name="streak_longer_than_window",
        daily=rows(USER_LONG_STREAK, "steps", MARCH[1], [12000] * 10),
        key=(USER_LONG_STREAK, "steps", "7day"),
        expected={
            "analytics.streakDays": 10,
            "analytics.streakStartDate": MARCH[1],
            "analytics.longestStreak": 10,
            "analytics.statistics.dataPointsCount": 7,
        },
    ),
    AnalyticsCase(
        # Counting March 1-5, 5000 on March 6, counting March 7-8: streak 2, longest 5.
        name="longest_streak_in_past",
        daily=rows(USER_LONGEST_IN_PAST, "steps", MARCH[1], [12000] * 5 + [5000] + [12000] * 2),
        key=(USER_LONGEST_IN_PAST, "steps", "30day"),
        expected={
            "analytics.streakDays": 2,
            "analytics.streakStartDate": MARCH[7],
            "analytics.longestStreak": 5,
        },
    ),
    AnalyticsCase(
        # 3652 consecutive counting days: both streak fields are capped at 3650.
        name="streak_capped",
        daily=rows(USER_CAPPED_STREAK, "steps", CAPPED_STREAK_FIRST_DAY, [12000] * CAPPED_STREAK_DAYS),
        key=(USER_CAPPED_STREAK, "steps", "90day"),
        expected={
            "asOfDate": MARCH[1],
            "analytics.streakDays": 3650,
            "analytics.longestStreak": 3650,
            "analytics.statistics.dataPointsCount": 90,
        },
    ),
    # --- Anomaly checks without a detection ---
    AnalyticsCase(
        # 10000 on March 1-7 and 50000 on March 8. Earlier values March 1-7 all equal, so
        # Q1 = Q3 = 10000 and IQR = 0. Window March 2-8: mean (6 * 10000 + 50000) / 7,
        # percentile 6 values below / 6 * 100 = 100. Previous window Feb 24 .. Mar 1 has 10000,
        # so the change is +57 %, trend up.
        name="zero_spread",
        daily=rows(USER_FLAT, "steps", MARCH[1], [10000] * 7 + [50000]),
        key=(USER_FLAT, "steps", "7day"),
        expected={
            "asOfDate": MARCH[8],
            "analytics.anomalyDetected": False,
            "analytics.anomalyReason": "zero_spread",
            "analytics.anomalyDetails": None,
            "analytics.rollingAverage": 110000 / 7,
            "analytics.percentile": 100.0,
            "analytics.trend": "up",
            "analytics.streakDays": 8,
        },
    ),
    AnalyticsCase(
        # As-of day March 8 = 50000. Earlier values: Feb 29 = 10000 (8 days before, outside the
        # 7 days March 1-7), March 1 missing, March 2-7 = 10000 .. 15000. Only 6 in March 1-7.
        name="fewer_than_7_earlier_values",
        daily=rows(USER_SHORT_HISTORY, "steps", FEBRUARY_29, SHORT_HISTORY_VALUES),
        key=(USER_SHORT_HISTORY, "steps", "7day"),
        expected={
            "asOfDate": MARCH[8],
            "analytics.anomalyDetected": False,
            "analytics.anomalyReason": "insufficient_history",
            "analytics.anomalyDetails": None,
        },
    ),
    AnalyticsCase(
        # The same input in 30 days: Feb 7 .. Mar 7 contains all 7 earlier values, sorted
        # 10000, 10000, 11000, 12000, 13000, 14000, 15000. Q1 = 10000 + 0.5 * 1000 = 10500,
        # Q3 = 13000 + 0.5 * 1000 = 13500, IQR 3000. 50000 > 13500 + 3 * 3000 = 22500: high.
        # Median 12000, deviation 38000.
        name="seven_earlier_values_in_30_days",
        daily=rows(USER_SHORT_HISTORY, "steps", FEBRUARY_29, SHORT_HISTORY_VALUES),
        key=(USER_SHORT_HISTORY, "steps", "30day"),
        expected={
            "analytics.anomalyDetected": True,
            "analytics.anomalyReason": None,
            "analytics.anomalyDetails.severity": "high",
            "analytics.anomalyDetails.actualValue": 50000.0,
            "analytics.anomalyDetails.expectedValue": 12000.0,
            "analytics.anomalyDetails.deviation": 38000.0,
            "analytics.anomalyDetails.detectedAt": CALCULATED_AT,
        },
    ),
    AnalyticsCase(
        # 10000 on March 8 equals the 1.5 IQR fence Q3 + 4500 = 10000, which is not outside it.
        name="anomaly_at_fence_not_detected",
        daily=rows(USER_ANOMALY_AT_FENCE, "steps", MARCH[1], ANOMALY_HISTORY + [10000]),
        key=(USER_ANOMALY_AT_FENCE, "steps", "7day"),
        expected={
            "analytics.anomalyDetected": False,
            "analytics.anomalyReason": None,
            "analytics.anomalyDetails": None,
        },
    ),
    # --- Anomaly severities, with the quartiles of ANOMALY_HISTORY ---
    AnalyticsCase(
        # 10500 > 10000 (1.5 IQR) and <= 11500 (2 IQR): low. Deviation 10500 - 4000 = 6500.
        # Window March 2-8 = 2000 .. 7000 and 10500: percentile 6 / 6 * 100 = 100.
        name="anomaly_low",
        daily=rows(USER_ANOMALY_LOW, "steps", MARCH[1], ANOMALY_HISTORY + [10500]),
        key=(USER_ANOMALY_LOW, "steps", "7day"),
        expected={
            "analytics.anomalyDetected": True,
            "analytics.anomalyReason": None,
            "analytics.anomalyDetails.severity": "low",
            "analytics.anomalyDetails.actualValue": 10500.0,
            "analytics.anomalyDetails.expectedValue": 4000.0,
            "analytics.anomalyDetails.deviation": 6500.0,
            "analytics.anomalyDetails.detectedAt": CALCULATED_AT,
            "analytics.percentile": 100.0,
        },
    ),
    AnalyticsCase(
        # 12000 > 11500 (2 IQR) and <= 14500 (3 IQR): medium. Deviation 8000.
        name="anomaly_medium",
        daily=rows(USER_ANOMALY_MEDIUM, "steps", MARCH[1], ANOMALY_HISTORY + [12000]),
        key=(USER_ANOMALY_MEDIUM, "steps", "7day"),
        expected={
            "analytics.anomalyDetected": True,
            "analytics.anomalyReason": None,
            "analytics.anomalyDetails.severity": "medium",
            "analytics.anomalyDetails.actualValue": 12000.0,
            "analytics.anomalyDetails.expectedValue": 4000.0,
            "analytics.anomalyDetails.deviation": 8000.0,
        },
    ),
    AnalyticsCase(
        # 15000 > 14500 (3 IQR): high. Deviation 11000. The 90-day document has the same
        # 7 earlier values because there are no others.
        name="anomaly_high",
        daily=rows(USER_ANOMALY_HIGH, "steps", MARCH[1], ANOMALY_HISTORY + [15000]),
        key=(USER_ANOMALY_HIGH, "steps", "90day"),
        expected={
            "analytics.anomalyDetected": True,
            "analytics.anomalyReason": None,
            "analytics.anomalyDetails.severity": "high",
            "analytics.anomalyDetails.actualValue": 15000.0,
            "analytics.anomalyDetails.expectedValue": 4000.0,
            "analytics.anomalyDetails.deviation": 11000.0,
        },
    ),
    AnalyticsCase(
        # 14500 equals the 3 IQR fence, which is not outside it, but it is outside 2 IQR: medium.
        name="anomaly_at_high_fence_medium",
        daily=rows(USER_ANOMALY_AT_HIGH_FENCE, "steps", MARCH[1], ANOMALY_HISTORY + [14500]),
        key=(USER_ANOMALY_AT_HIGH_FENCE, "steps", "7day"),
        expected={
            "analytics.anomalyDetected": True,
            "analytics.anomalyDetails.severity": "medium",
        },
    ),
    AnalyticsCase(
        # Earlier values ANOMALY_LOW_SIDE_HISTORY (unsorted on purpose): Q1 10300, IQR 600,
        # median 10600. 8000 < 10300 - 3 * 600 = 8500: high, deviation 8000 - 10600 = -2600.
        # 8000 is the window's minimum, so its percentile is 0.
        name="anomaly_high_below",
        daily=rows(USER_ANOMALY_BELOW, "steps", MARCH[1], ANOMALY_LOW_SIDE_HISTORY + [8000]),
        key=(USER_ANOMALY_BELOW, "steps", "7day"),
        expected={
            "analytics.anomalyDetected": True,
            "analytics.anomalyReason": None,
            "analytics.anomalyDetails.severity": "high",
            "analytics.anomalyDetails.actualValue": 8000.0,
            "analytics.anomalyDetails.expectedValue": 10600.0,
            "analytics.anomalyDetails.deviation": -2600.0,
            "analytics.percentile": 0.0,
        },
    ),
    # --- One day, sparse windows and window edges ---
    AnalyticsCase(
        # A single value 12000 on March 1: every statistic is that value, std 0, 1 of 7 days,
        # no previous window, no earlier values, percentile 0 for n = 1, streak 1.
        name="user_with_one_day",
        daily=rows(USER_ONE_DAY, "steps", MARCH[1], [12000]),
        key=(USER_ONE_DAY, "steps", "7day"),
        expected={
            "asOfDate": MARCH[1],
            "windowStartDate": date(2024, 2, 24),
            "analytics.rollingAverage": 12000.0,
            "analytics.trend": "stable",
            "analytics.trendPercentage": 0.0,
            "analytics.comparisonToPrevious": None,
            "analytics.streakDays": 1,
            "analytics.streakStartDate": MARCH[1],
            "analytics.longestStreak": 1,
            "analytics.anomalyDetected": False,
            "analytics.anomalyReason": "insufficient_history",
            "analytics.anomalyDetails": None,
            "analytics.percentile": 0.0,
            "analytics.statistics.standardDeviation": 0.0,
            "analytics.statistics.minValue": 12000.0,
            "analytics.statistics.maxValue": 12000.0,
            "analytics.statistics.medianValue": 12000.0,
            "analytics.statistics.dataPointsCount": 1,
            "analytics.statistics.completenessPercentage": 1 / 7 * 100,
        },
    ),
    AnalyticsCase(
        # The same user in 90 days: the window starts 89 days before March 1, on 2023-12-03.
        name="user_with_one_day_90day",
        daily=rows(USER_ONE_DAY, "steps", MARCH[1], [12000]),
        key=(USER_ONE_DAY, "steps", "90day"),
        expected={
            "windowStartDate": date(2023, 12, 3),
            "analytics.statistics.completenessPercentage": 1 / 90 * 100,
            "analytics.comparisonToPrevious": None,
        },
    ),
    AnalyticsCase(
        # 1000 on March 1, 2000 on March 2, 9000 on March 9. The 7-day window March 3-9 contains
        # only 9000: mean 9000 from one value. Previous window Feb 25 .. Mar 2 has mean 1500, so
        # the change is (9000 - 1500) / 1500 * 100 = 500 %. Earlier values March 2-8: only 1.
        name="sparse_7day_mean_from_one_value",
        daily=rows(USER_SPARSE, "steps", MARCH[1], [1000, 2000] + [None] * 6 + [9000]),
        key=(USER_SPARSE, "steps", "7day"),
        expected={
            "asOfDate": MARCH[9],
            "windowStartDate": MARCH[3],
            "analytics.rollingAverage": 9000.0,
            "analytics.statistics.dataPointsCount": 1,
            "analytics.statistics.standardDeviation": 0.0,
            "analytics.statistics.completenessPercentage": 1 / 7 * 100,
            "analytics.percentile": 0.0,
            "analytics.trend": "up",
            "analytics.trendPercentage": 500.0,
            "analytics.comparisonToPrevious.absoluteChange": 7500.0,
            "analytics.comparisonToPrevious.percentageChange": 500.0,
            "analytics.comparisonToPrevious.isImprovement": True,
            "analytics.anomalyReason": "insufficient_history",
        },
    ),
    AnalyticsCase(
        # The same input in 30 days: window Feb 9 .. Mar 9 = 1000, 2000, 9000, mean 4000,
        # median 2000, population variance (3000^2 + 2000^2 + 5000^2) / 3 = 38e6 / 3.
        # Percentile of 9000: 2 below / 2 * 100 = 100. No previous values: stable.
        name="sparse_30day",
        daily=rows(USER_SPARSE, "steps", MARCH[1], [1000, 2000] + [None] * 6 + [9000]),
        key=(USER_SPARSE, "steps", "30day"),
        expected={
            "windowStartDate": date(2024, 2, 9),
            "analytics.rollingAverage": 4000.0,
            "analytics.statistics.medianValue": 2000.0,
            "analytics.statistics.standardDeviation": sqrt(38e6 / 3),
            "analytics.percentile": 100.0,
            "analytics.trend": "stable",
            "analytics.trendPercentage": 0.0,
            "analytics.comparisonToPrevious": None,
        },
    ),
    AnalyticsCase(
        # 1000 on March 1 = A - 13, the first day of the previous 7-day window, and 2000 on
        # March 14 = A. Change (2000 - 1000) / 1000 * 100 = 100 %: up.
        name="previous_window_first_day",
        daily=rows(USER_PREVIOUS_EDGE, "steps", MARCH[1], [1000] + [None] * 12 + [2000]),
        key=(USER_PREVIOUS_EDGE, "steps", "7day"),
        expected={
            "analytics.trend": "up",
            "analytics.trendPercentage": 100.0,
            "analytics.comparisonToPrevious.absoluteChange": 1000.0,
            "analytics.comparisonToPrevious.percentageChange": 100.0,
        },
    ),
    AnalyticsCase(
        # 1000 on Feb 29 = A - 14, one day before the previous window March 1-7, and 2000 on
        # March 14: no previous value, so stable, 0 and no comparison.
        name="value_before_previous_window",
        daily=rows(USER_NO_PREVIOUS, "steps", FEBRUARY_29, [1000] + [None] * 13 + [2000]),
        key=(USER_NO_PREVIOUS, "steps", "7day"),
        expected={
            "asOfDate": MARCH[14],
            "analytics.trend": "stable",
            "analytics.trendPercentage": 0.0,
            "analytics.comparisonToPrevious": None,
        },
    ),
    AnalyticsCase(
        # A = March 14. 5000 on A - 90 = 2023-12-15 (previous window), 7000 on A - 89 =
        # 2023-12-16 (first window day) and 9000 on A. Window mean 8000, previous mean 5000,
        # change 60 %. Earlier values in A - 90 .. A - 1: 2, too few.
        name="window_90day_edges",
        daily=(
            (USER_90_DAY_EDGE, "steps", date(2023, 12, 15), 5000.0),
            (USER_90_DAY_EDGE, "steps", date(2023, 12, 16), 7000.0),
            (USER_90_DAY_EDGE, "steps", MARCH[14], 9000.0),
        ),
        key=(USER_90_DAY_EDGE, "steps", "90day"),
        expected={
            "windowStartDate": date(2023, 12, 16),
            "analytics.rollingAverage": 8000.0,
            "analytics.statistics.dataPointsCount": 2,
            "analytics.trend": "up",
            "analytics.trendPercentage": 60.0,
            "analytics.comparisonToPrevious.absoluteChange": 3000.0,
            "analytics.anomalyReason": "insufficient_history",
        },
    ),
    AnalyticsCase(
        # Each user has their own as-of day: the other user's later rows do not move March 3.
        name="as_of_day_per_user",
        daily=rows(USER_SHORTER, "steps", MARCH[1], [3000, 4000, 5000])
        + rows(USER_OTHER_LATER, "steps", MARCH[1], [12000] * 10),
        key=(USER_SHORTER, "steps", "7day"),
        expected={
            "asOfDate": MARCH[3],
            "analytics.rollingAverage": 4000.0,
            "analytics.statistics.dataPointsCount": 3,
        },
    ),
    # --- Trend thresholds: 10000 on March 1-7, then the listed value on March 8-14 ---
    AnalyticsCase(
        # (10500 - 10000) / 10000 * 100 = 5.0 exactly in floating point: stable, not up.
        name="trend_exactly_plus_5_stable",
        daily=rows(USER_TREND_PLUS_5, "steps", MARCH[1], [10000] * 7 + [10500] * 7),
        key=(USER_TREND_PLUS_5, "steps", "7day"),
        expected={
            "analytics.rollingAverage": 10500.0,
            "analytics.trend": "stable",
            "analytics.trendPercentage": 5.0,
            "analytics.comparisonToPrevious.absoluteChange": 500.0,
            "analytics.comparisonToPrevious.percentageChange": 5.0,
            "analytics.comparisonToPrevious.isImprovement": True,
        },
    ),
    AnalyticsCase(
        # (10501 - 10000) / 10000 * 100 = 5.01: up.
        name="trend_just_above_plus_5_up",
        daily=rows(USER_TREND_ABOVE_5, "steps", MARCH[1], [10000] * 7 + [10501] * 7),
        key=(USER_TREND_ABOVE_5, "steps", "7day"),
        expected={
            "analytics.trend": "up",
            "analytics.trendPercentage": 5.01,
        },
    ),
    AnalyticsCase(
        # (9500 - 10000) / 10000 * 100 = -5.0: stable. A lower mean of steps is no improvement.
        name="trend_exactly_minus_5_stable",
        daily=rows(USER_TREND_MINUS_5, "steps", MARCH[1], [10000] * 7 + [9500] * 7),
        key=(USER_TREND_MINUS_5, "steps", "7day"),
        expected={
            "analytics.trend": "stable",
            "analytics.trendPercentage": -5.0,
            "analytics.comparisonToPrevious.absoluteChange": -500.0,
            "analytics.comparisonToPrevious.isImprovement": False,
        },
    ),
    AnalyticsCase(
        # (9499 - 10000) / 10000 * 100 = -5.01: down.
        name="trend_just_below_minus_5_down",
        daily=rows(USER_TREND_BELOW_MINUS_5, "steps", MARCH[1], [10000] * 7 + [9499] * 7),
        key=(USER_TREND_BELOW_MINUS_5, "steps", "7day"),
        expected={
            "analytics.trend": "down",
            "analytics.trendPercentage": -5.01,
        },
    ),
    AnalyticsCase(
        # 0 on March 1-7, 100 on March 8-14: previous mean 0, so trendPercentage is the clamped
        # infinity 1000, trend up, and percentageChange None.
        name="previous_mean_zero",
        daily=rows(USER_PREVIOUS_ZERO, "steps", MARCH[1], [0] * 7 + [100] * 7),
        key=(USER_PREVIOUS_ZERO, "steps", "7day"),
        expected={
            "analytics.trend": "up",
            "analytics.trendPercentage": 1000.0,
            "analytics.comparisonToPrevious.absoluteChange": 100.0,
            "analytics.comparisonToPrevious.percentageChange": None,
            "analytics.comparisonToPrevious.isImprovement": True,
        },
    ),
    AnalyticsCase(
        # 0 on March 1-14: both means 0, so 0 %, stable, and percentageChange None. Earlier
        # values all 0 give zero spread. Percentile of 0 among zeros: none below, so 0.
        name="both_means_zero",
        daily=rows(USER_BOTH_ZERO, "steps", MARCH[1], [0] * 14),
        key=(USER_BOTH_ZERO, "steps", "7day"),
        expected={
            "analytics.trend": "stable",
            "analytics.trendPercentage": 0.0,
            "analytics.comparisonToPrevious.absoluteChange": 0.0,
            "analytics.comparisonToPrevious.percentageChange": None,
            "analytics.comparisonToPrevious.isImprovement": False,
            "analytics.anomalyReason": "zero_spread",
            "analytics.percentile": 0.0,
            "analytics.streakDays": 0,
            "analytics.longestStreak": 0,
        },
    ),
    # --- Weight: the improvement is the distance to weightGoal ---
    AnalyticsCase(
        # weightGoal 70, 80 kg on March 1-7, 78 kg on March 8-14. |78 - 70| = 8 < |80 - 70| = 10:
        # improvement. Change -2 kg, -2 / 80 * 100 = -2.5 %: stable. Weight has no streaks.
        name="weight_closer_to_goal",
        daily=rows(USER_WEIGHT_CLOSER, "weight", MARCH[1], [80] * 7 + [78] * 7),
        goals={USER_WEIGHT_CLOSER: {"stepGoal": 10000, "weightGoal": 70}},
        key=(USER_WEIGHT_CLOSER, "weight", "7day"),
        expected={
            "analytics.rollingAverage": 78.0,
            "analytics.trend": "stable",
            "analytics.trendPercentage": -2.5,
            "analytics.comparisonToPrevious.absoluteChange": -2.0,
            "analytics.comparisonToPrevious.percentageChange": -2.5,
            "analytics.comparisonToPrevious.isImprovement": True,
            "analytics.streakDays": 0,
            "analytics.longestStreak": 0,
            "analytics.streakStartDate": None,
        },
    ),
    AnalyticsCase(
        # weightGoal 70, 72 kg then 75 kg: |75 - 70| = 5 is not < |72 - 70| = 2, no improvement.
        # Change 3 / 72 * 100 = 4.17 %: stable.
        name="weight_away_from_goal",
        daily=rows(USER_WEIGHT_AWAY, "weight", MARCH[1], [72] * 7 + [75] * 7),
        goals={USER_WEIGHT_AWAY: {"weightGoal": 70}},
        key=(USER_WEIGHT_AWAY, "weight", "7day"),
        expected={
            "analytics.trend": "stable",
            "analytics.comparisonToPrevious.absoluteChange": 3.0,
            "analytics.comparisonToPrevious.percentageChange": 3 / 72 * 100,
            "analytics.comparisonToPrevious.isImprovement": False,
        },
    ),
    AnalyticsCase(
        # weightGoal 70, 60 kg then 65 kg: a higher mean that is closer to the goal (5 < 10) is an
        # improvement. Change 5 / 60 * 100 = 8.33 %: up.
        name="weight_gain_toward_goal",
        daily=rows(USER_WEIGHT_GAIN, "weight", MARCH[1], [60] * 7 + [65] * 7),
        goals={USER_WEIGHT_GAIN: {"weightGoal": 70.0}},
        key=(USER_WEIGHT_GAIN, "weight", "7day"),
        expected={
            "analytics.trend": "up",
            "analytics.trendPercentage": 5 / 60 * 100,
            "analytics.comparisonToPrevious.isImprovement": True,
        },
    ),
    AnalyticsCase(
        # weightGoal None: isImprovement is None, the rest as in weight_closer_to_goal.
        name="weight_goal_none",
        daily=rows(USER_WEIGHT_NO_GOAL, "weight", MARCH[1], [80] * 7 + [78] * 7),
        goals={USER_WEIGHT_NO_GOAL: {"stepGoal": 8000, "weightGoal": None}},
        key=(USER_WEIGHT_NO_GOAL, "weight", "7day"),
        expected={
            "analytics.comparisonToPrevious.absoluteChange": -2.0,
            "analytics.comparisonToPrevious.percentageChange": -2.5,
            "analytics.comparisonToPrevious.isImprovement": None,
        },
    ),
    AnalyticsCase(
        # A user missing from goals has no weightGoal either: isImprovement None.
        name="weight_user_without_goals",
        daily=rows(USER_WEIGHT_NO_USER, "weight", MARCH[1], [80] * 7 + [78] * 7),
        key=(USER_WEIGHT_NO_USER, "weight", "7day"),
        expected={
            "analytics.comparisonToPrevious.absoluteChange": -2.0,
            "analytics.comparisonToPrevious.isImprovement": None,
        },
    ),
    AnalyticsCase(
        # In 30 days all 14 values are in the window and the previous window is empty.
        name="weight_30day_no_previous",
        daily=rows(USER_WEIGHT_NO_USER, "weight", MARCH[1], [80] * 7 + [78] * 7),
        key=(USER_WEIGHT_NO_USER, "weight", "30day"),
        expected={
            "analytics.rollingAverage": 79.0,
            "analytics.comparisonToPrevious": None,
        },
    ),
    # --- Percentile and median ---
    AnalyticsCase(
        # Window 100, 200, 300, 200, 200 with x = 200 on March 5. Values strictly below 200: one,
        # so 1 / (5 - 1) * 100 = 25. Mean 200, median 200, population variance
        # (100^2 + 0 + 100^2 + 0 + 0) / 5 = 4000.
        name="percentile_with_ties",
        daily=rows(USER_TIES, "steps", MARCH[1], [100, 200, 300, 200, 200]),
        key=(USER_TIES, "steps", "7day"),
        expected={
            "analytics.percentile": 25.0,
            "analytics.rollingAverage": 200.0,
            "analytics.statistics.medianValue": 200.0,
            "analytics.statistics.standardDeviation": sqrt(4000),
        },
    ),
    AnalyticsCase(
        # Window 300, 100, 300 with x = 300: one value below, 1 / 2 * 100 = 50.
        name="percentile_tie_at_max",
        daily=rows(USER_TIE_AT_MAX, "steps", MARCH[1], [300, 100, 300]),
        key=(USER_TIE_AT_MAX, "steps", "7day"),
        expected={
            "analytics.percentile": 50.0,
            "analytics.statistics.medianValue": 300.0,
        },
    ),
    AnalyticsCase(
        # Window 1000, 8000, 2000, 4000: sorted middle values 2000 and 4000, median 3000. Mean
        # 3750, population variance (2750^2 + 4250^2 + 1750^2 + 250^2) / 4 = 7187500.
        # x = 4000 has 1000 and 2000 below: 2 / 3 * 100.
        name="median_of_even_count",
        daily=rows(USER_EVEN_MEDIAN, "steps", MARCH[1], [1000, 8000, 2000, 4000]),
        key=(USER_EVEN_MEDIAN, "steps", "7day"),
        expected={
            "analytics.statistics.medianValue": 3000.0,
            "analytics.rollingAverage": 3750.0,
            "analytics.statistics.standardDeviation": sqrt(7187500),
            "analytics.percentile": 2 / 3 * 100,
        },
    ),
]
