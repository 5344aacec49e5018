"""The `analytics` documents: one per user, metric and time range, over calendar-day windows.

Each document describes the N calendar days ending on its as-of day, the user's latest day with a
value for that metric, so a user who stopped syncing keeps the analytics of their last active days.
Days without a value are missing, never zero. Quantiles and medians are exact, with linear
interpolation between the two nearest values (Spark's `percentile`, numpy's default `linear`).
"""

from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from healthstream_assets.contract import ANALYTICS_TTL_DAYS, DEFAULT_GOALS, TIME_RANGES

# Percentage change of the window's mean over the previous window's beyond which the trend is up or down.
TREND_THRESHOLD_PERCENT = 5.0
TREND_PERCENT_MIN = -100.0
TREND_PERCENT_MAX = 1000.0

# Anomaly fences in interquartile ranges beyond the quartiles, from the most severe down.
ANOMALY_FENCES = (("high", 3.0), ("medium", 2.0), ("low", 1.5))
ANOMALY_MIN_HISTORY = 7

STREAK_DAYS_MAX = 3650

# The `users.goals` field each metric's streak is measured against; other metrics have no streak.
GOAL_FIELDS = {
    "steps": "stepGoal",
    "sleepHours": "sleepGoal",
    "calories": "calorieGoal",
    "distance": "distanceGoal",
}

# Weight improves by coming closer to the user's weight goal; every other metric improves by rising.
WEIGHT = "weight"

GOALS_SCHEMA = "stepGoal double, sleepGoal double, calorieGoal double, distanceGoal double, weightGoal double"

# Float fields of the statistics frame that end up in the document; NaN or infinity becomes null.
FLOAT_COLUMNS = (
    "rollingAverage",
    "standardDeviation",
    "minValue",
    "maxValue",
    "medianValue",
    "completenessPercentage",
    "trendPercentage",
    "absoluteChange",
    "percentageChange",
    "percentile",
    "actualValue",
    "expectedValue",
    "deviation",
)


def _time_ranges(daily: DataFrame) -> DataFrame:
    rows = [(name, days) for name, days in TIME_RANGES.items()]
    return daily.sparkSession.createDataFrame(rows, "timeRange string, windowDays int")


def parse_goals(users: DataFrame) -> DataFrame:
    """Return userId and the goal columns from `users` rows of `_id` and `goals` (its JSON text)."""

    goals = F.from_json(F.col("goals"), GOALS_SCHEMA)
    return users.select(F.col("_id").alias("userId"), goals.alias("goal")).select("userId", "goal.*")


def _goal_for_metric(goals: DataFrame) -> DataFrame:
    """Return userId, metricType, goal: the user's goal per metric with the defaults filled in.

    Weight has no default goal; metrics without a goal field are absent.
    """

    rows = []
    for metric_type, field in GOAL_FIELDS.items():
        rows.append(
            goals.select(
                "userId",
                F.lit(metric_type).alias("metricType"),
                F.coalesce(F.col(field), F.lit(float(DEFAULT_GOALS[field]))).alias("goal"),
            )
        )
    rows.append(goals.select("userId", F.lit(WEIGHT).alias("metricType"), F.col("weightGoal").alias("goal")))

    result = rows[0]
    for frame in rows[1:]:
        result = result.unionByName(frame)
    return result


def streaks(daily: DataFrame, goals: DataFrame) -> DataFrame:
    """Return userId, metricType, streakDays, longestStreak, streakStartDate for metrics with a goal.

    A day counts when its value is at least the goal. The current streak is the run of consecutive
    counting days ending on the as-of day; a missing day breaks a run.
    """

    per_metric_goal = _goal_for_metric(goals).filter(F.col("metricType").isin(list(GOAL_FIELDS)))

    as_of = daily.groupBy("userId", "metricType").agg(F.max("date").alias("asOfDate"))

    # Users without a `users` document get the default goals.
    defaults = daily.select("userId").distinct().crossJoin(
        daily.sparkSession.createDataFrame(
            [(metric_type, float(DEFAULT_GOALS[field])) for metric_type, field in GOAL_FIELDS.items()],
            "metricType string, defaultGoal double",
        )
    )
    goal = defaults.join(per_metric_goal, on=["userId", "metricType"], how="left").select(
        "userId", "metricType", F.coalesce(F.col("goal"), F.col("defaultGoal")).alias("goal")
    )

    counting = daily.join(goal, on=["userId", "metricType"]).filter(F.col("value") >= F.col("goal"))

    # Consecutive days share one value of (day number - position among counting days).
    order = Window.partitionBy("userId", "metricType").orderBy("date")
    counting = counting.withColumn("island", F.unix_date(F.col("date")) - F.row_number().over(order))
    runs = counting.groupBy("userId", "metricType", "island").agg(
        F.min("date").alias("runStart"),
        F.max("date").alias("runEnd"),
        F.count("*").alias("runLength"),
    )

    runs = runs.join(as_of, on=["userId", "metricType"])
    summary = runs.groupBy("userId", "metricType").agg(
        F.max("runLength").alias("longestStreak"),
        F.max(F.when(F.col("runEnd") == F.col("asOfDate"), F.col("runLength"))).alias("streakDays"),
        F.max(F.when(F.col("runEnd") == F.col("asOfDate"), F.col("runStart"))).alias("streakStartDate"),
    )

    return summary.select(
        "userId",
        "metricType",
        F.least(F.coalesce(F.col("streakDays"), F.lit(0)), F.lit(STREAK_DAYS_MAX)).alias("streakDays"),
        F.least(F.col("longestStreak"), F.lit(STREAK_DAYS_MAX)).alias("longestStreak"),
        F.col("streakStartDate"),
    )


def window_statistics(daily: DataFrame, rolling: DataFrame, goals: DataFrame) -> DataFrame:
    """Return one row per (userId, metricType, timeRange) with every computed field of the document.

    `daily` holds the users' whole history (userId, metricType, date, value; one value per day),
    `rolling` the rolling averages (at least on each as-of day), `goals` the output of `parse_goals`.
    """

    per_metric = daily.groupBy("userId", "metricType").agg(
        F.max("date").alias("asOfDate"),
        F.count("value").alias("dataPointsProcessed"),
    )
    as_of_value = daily.select("userId", "metricType", F.col("date").alias("asOfDate"), F.col("value").alias("actualValue"))
    per_metric = per_metric.join(as_of_value, on=["userId", "metricType", "asOfDate"])

    windows = per_metric.crossJoin(F.broadcast(_time_ranges(daily)))
    windows = windows.withColumn("windowStartDate", F.date_sub(F.col("asOfDate"), F.col("windowDays") - 1))

    rows = windows.join(daily, on=["userId", "metricType"])
    day = F.col("date")
    as_of_day = F.col("asOfDate")
    window_days = F.col("windowDays")

    in_window = day.between(F.col("windowStartDate"), as_of_day)
    in_previous = day.between(F.date_sub(as_of_day, 2 * window_days - 1), F.date_sub(as_of_day, window_days))
    in_baseline = day.between(F.date_sub(as_of_day, window_days), F.date_sub(as_of_day, 1))

    current_value = F.when(in_window, F.col("value"))
    previous_value = F.when(in_previous, F.col("value"))
    baseline_value = F.when(in_baseline, F.col("value"))

    keys = [
        "userId",
        "metricType",
        "timeRange",
        "windowDays",
        "asOfDate",
        "windowStartDate",
        "dataPointsProcessed",
        "actualValue",
    ]
    statistics = rows.groupBy(*keys).agg(
        F.stddev_pop(current_value).alias("standardDeviation"),
        F.min(current_value).alias("minValue"),
        F.max(current_value).alias("maxValue"),
        F.percentile(current_value, F.lit(0.5)).alias("medianValue"),
        F.count(current_value).alias("dataPointsCount"),
        F.count(F.when(in_window & (F.col("value") < F.col("actualValue")), True)).alias("valuesBelowActual"),
        F.avg(current_value).alias("windowAverage"),
        F.avg(previous_value).alias("previousAverage"),
        F.count(previous_value).alias("previousCount"),
        F.count(baseline_value).alias("baselineCount"),
        F.percentile(baseline_value, F.array(F.lit(0.25), F.lit(0.5), F.lit(0.75))).alias("baselineQuartiles"),
    )

    statistics = statistics.withColumn(
        "completenessPercentage", F.col("dataPointsCount") / F.col("windowDays") * 100.0
    )
    statistics = _with_rolling_average(statistics, rolling)
    statistics = _with_trend(statistics, goals)
    statistics = _with_percentile(statistics)
    statistics = _with_anomaly(statistics)

    streak_columns = streaks(daily, goals)
    statistics = statistics.join(streak_columns, on=["userId", "metricType"], how="left")
    statistics = statistics.withColumn("streakDays", F.coalesce(F.col("streakDays"), F.lit(0)))
    statistics = statistics.withColumn("longestStreak", F.coalesce(F.col("longestStreak"), F.lit(0)))

    return statistics


def _with_rolling_average(statistics: DataFrame, rolling: DataFrame) -> DataFrame:
    average_on_as_of = rolling.select(
        "userId",
        "metricType",
        F.col("date").alias("asOfDate"),
        *[F.col(f"avg_{name}") for name in TIME_RANGES],
    )
    statistics = statistics.join(average_on_as_of, on=["userId", "metricType", "asOfDate"], how="left")

    rolling_average = None
    for name in TIME_RANGES:
        branch = F.col(f"avg_{name}")
        if rolling_average is None:
            rolling_average = F.when(F.col("timeRange") == name, branch)
        else:
            rolling_average = rolling_average.when(F.col("timeRange") == name, branch)

    statistics = statistics.withColumn("rollingAverage", rolling_average)
    return statistics.drop(*[f"avg_{name}" for name in TIME_RANGES])


def _with_trend(statistics: DataFrame, goals: DataFrame) -> DataFrame:
    """Add trend, trendPercentage and the comparisonToPrevious fields.

    The percentage compares the window's mean with the previous N days' mean. With a previous mean
    of 0 it is 0 when the current mean is 0 too, else the clamped maximum; percentageChange is then
    null. Without any previous value the trend is stable at 0 and the comparison is null.
    """

    current = F.col("windowAverage")
    previous = F.col("previousAverage")
    has_previous = F.col("previousCount") > 0

    raw_percentage = F.when(previous != 0, (current - previous) / previous * 100.0)
    percentage = (
        F.when(~has_previous, F.lit(0.0))
        .when(previous != 0, raw_percentage)
        .when(current == 0, F.lit(0.0))
        .otherwise(F.lit(TREND_PERCENT_MAX))
    )
    clamped = F.greatest(F.lit(TREND_PERCENT_MIN), F.least(F.lit(TREND_PERCENT_MAX), percentage))

    trend = (
        F.when(percentage > TREND_THRESHOLD_PERCENT, F.lit("up"))
        .when(percentage < -TREND_THRESHOLD_PERCENT, F.lit("down"))
        .otherwise(F.lit("stable"))
    )

    weight_goal = goals.select("userId", F.col("weightGoal"))
    statistics = statistics.join(weight_goal, on="userId", how="left")

    closer_to_goal = F.abs(current - F.col("weightGoal")) < F.abs(previous - F.col("weightGoal"))
    is_improvement = F.when(F.col("metricType") != WEIGHT, current > previous).when(
        F.col("weightGoal").isNotNull(), closer_to_goal
    )

    return (
        statistics.withColumn("trend", trend)
        .withColumn("trendPercentage", clamped)
        .withColumn("hasPrevious", has_previous)
        .withColumn("absoluteChange", F.when(has_previous, current - previous))
        .withColumn("percentageChange", F.when(has_previous, raw_percentage))
        .withColumn("isImprovement", F.when(has_previous, is_improvement))
    )


def _with_percentile(statistics: DataFrame) -> DataFrame:
    """Add the as-of value's percent rank among the window's values, times 100 (0 for one value)."""

    count = F.col("dataPointsCount")
    rank = F.when(count > 1, F.col("valuesBelowActual") / (count - 1) * 100.0).otherwise(F.lit(0.0))
    return statistics.withColumn("percentile", rank)


def _with_anomaly(statistics: DataFrame) -> DataFrame:
    """Add anomalyDetected, anomalyReason, severity, expectedValue and deviation.

    The as-of value is compared with the values of the N days before it, itself excluded.
    """

    first_quartile = F.col("baselineQuartiles")[0]
    median = F.col("baselineQuartiles")[1]
    third_quartile = F.col("baselineQuartiles")[2]
    spread = third_quartile - first_quartile
    actual = F.col("actualValue")

    def outside(fence: float) -> Column:
        return (actual < first_quartile - fence * spread) | (actual > third_quartile + fence * spread)

    enough_history = F.col("baselineCount") >= ANOMALY_MIN_HISTORY
    evaluated = enough_history & (spread > 0)

    severity = None
    for name, fence in ANOMALY_FENCES:
        if severity is None:
            severity = F.when(evaluated & outside(fence), F.lit(name))
        else:
            severity = severity.when(evaluated & outside(fence), F.lit(name))

    reason = (
        F.when(~enough_history, F.lit("insufficient_history"))
        .when(spread == 0, F.lit("zero_spread"))
    )

    return (
        statistics.withColumn("severity", severity)
        .withColumn("anomalyDetected", F.col("severity").isNotNull())
        .withColumn("anomalyReason", reason)
        .withColumn("expectedValue", median)
        .withColumn("deviation", actual - median)
    )


def _finite_or_null(column: str) -> Column:
    """Return the column with NaN and infinity replaced by null; the backend rejects both."""

    value = F.col(column)
    return F.when(F.isnan(value) | (F.abs(value) == float("inf")), F.lit(None).cast("double")).otherwise(value)


def count_non_finite(statistics: DataFrame) -> int:
    """Return how many float fields are NaN or infinite and will be stored as null."""

    checks = [F.sum((F.isnan(F.col(name)) | (F.abs(F.col(name)) == float("inf"))).cast("int")) for name in FLOAT_COLUMNS]
    total = statistics.select(sum(checks, F.lit(0)).alias("nonFinite")).first()["nonFinite"]
    return int(total or 0)


def _anomaly_message() -> Column:
    direction = F.when(F.col("deviation") > 0, F.lit("above")).otherwise(F.lit("below"))
    return F.substring(
        F.format_string(
            "%s on %s was %.2f, %s the expected %.2f (median of the previous %d days with data); severity %s.",
            F.col("metricType"),
            F.date_format(F.col("asOfDate"), "yyyy-MM-dd"),
            F.col("actualValue"),
            direction,
            F.col("expectedValue"),
            F.col("baselineCount"),
            F.col("severity"),
        ),
        1,
        500,
    )


def to_analytics_documents(
    statistics: DataFrame,
    run_id: str,
    calculated_at: datetime,
    processing_duration_ms: int,
    spark_version: str,
) -> DataFrame:
    """Shape window statistics as `analytics` documents, ready for an upsert keyed on userId, metricType, timeRange.

    `userId` is an extended-JSON ObjectId string, written as a BSON ObjectId by the connector.
    """

    expires_at = calculated_at + timedelta(days=ANALYTICS_TTL_DAYS)
    detected_at = F.lit(calculated_at).cast("timestamp")

    comparison = F.when(
        F.col("hasPrevious"),
        F.struct(
            _finite_or_null("absoluteChange").alias("absoluteChange"),
            _finite_or_null("percentageChange").alias("percentageChange"),
            F.col("isImprovement").alias("isImprovement"),
        ),
    )

    anomaly_details = F.when(
        F.col("anomalyDetected"),
        F.struct(
            F.col("severity").alias("severity"),
            _finite_or_null("actualValue").alias("actualValue"),
            _finite_or_null("expectedValue").alias("expectedValue"),
            _finite_or_null("deviation").alias("deviation"),
            _anomaly_message().alias("message"),
            detected_at.alias("detectedAt"),
        ),
    )

    return statistics.select(
        F.to_json(F.struct(F.col("userId").alias("$oid"))).alias("userId"),
        F.col("metricType"),
        F.col("timeRange"),
        F.col("asOfDate"),
        F.col("windowStartDate"),
        F.struct(
            _finite_or_null("rollingAverage").alias("rollingAverage"),
            F.col("trend").alias("trend"),
            _finite_or_null("trendPercentage").alias("trendPercentage"),
            comparison.alias("comparisonToPrevious"),
            F.col("streakDays").cast("int").alias("streakDays"),
            F.col("longestStreak").cast("int").alias("longestStreak"),
            F.col("streakStartDate").alias("streakStartDate"),
            F.col("anomalyDetected").alias("anomalyDetected"),
            F.col("anomalyReason").alias("anomalyReason"),
            anomaly_details.alias("anomalyDetails"),
            _finite_or_null("percentile").alias("percentile"),
            F.struct(
                _finite_or_null("standardDeviation").alias("standardDeviation"),
                _finite_or_null("minValue").alias("minValue"),
                _finite_or_null("maxValue").alias("maxValue"),
                _finite_or_null("medianValue").alias("medianValue"),
                F.col("dataPointsCount").cast("int").alias("dataPointsCount"),
                _finite_or_null("completenessPercentage").alias("completenessPercentage"),
            ).alias("statistics"),
        ).alias("analytics"),
        F.lit(calculated_at).cast("timestamp").alias("calculatedAt"),
        F.lit(expires_at).cast("timestamp").alias("expiresAt"),
        F.struct(
            F.lit(run_id).alias("sparkJobId"),
            F.lit(processing_duration_ms).cast("long").alias("processingDurationMs"),
            F.col("dataPointsProcessed").cast("long").alias("dataPointsProcessed"),
            F.lit(spark_version).alias("sparkVersion"),
        ).alias("metadata"),
    )
