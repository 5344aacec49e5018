"""The `analytics` documents: one per user, metric and time range, over calendar-day windows.

Each document describes the N calendar days ending on its as-of day, the user's latest day with a
value for that metric, so a user who stopped syncing keeps the analytics of their last active days.
"""

from datetime import datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from healthstream_assets.contract import ANALYTICS_TTL_DAYS, TIME_RANGES


def _time_ranges(daily: DataFrame) -> DataFrame:
    rows = [(name, days) for name, days in TIME_RANGES.items()]
    return daily.sparkSession.createDataFrame(rows, "timeRange string, windowDays int")


def window_statistics(daily: DataFrame, rolling: DataFrame) -> DataFrame:
    """Return one row per (userId, metricType, timeRange) with the window's statistics.

    Columns: asOfDate, windowStartDate, windowDays, rollingAverage (from `rolling` on the as-of
    day), standardDeviation (population), minValue, maxValue, medianValue (exact, linear
    interpolation), dataPointsCount, completenessPercentage (days with a value / N * 100) and
    dataPointsProcessed (the user's daily values of that metric up to the as-of day).
    """

    per_metric = daily.groupBy("userId", "metricType").agg(
        F.max("date").alias("asOfDate"),
        F.count("value").alias("dataPointsProcessed"),
    )

    windows = per_metric.crossJoin(F.broadcast(_time_ranges(daily)))
    windows = windows.withColumn("windowStartDate", F.date_sub(F.col("asOfDate"), F.col("windowDays") - 1))

    in_window = windows.join(daily, on=["userId", "metricType"]).filter(
        F.col("date").between(F.col("windowStartDate"), F.col("asOfDate"))
    )

    keys = ["userId", "metricType", "timeRange", "windowDays", "asOfDate", "windowStartDate", "dataPointsProcessed"]
    statistics = in_window.groupBy(*keys).agg(
        F.stddev_pop("value").alias("standardDeviation"),
        F.min("value").alias("minValue"),
        F.max("value").alias("maxValue"),
        F.percentile("value", F.lit(0.5)).alias("medianValue"),
        F.count("value").alias("dataPointsCount"),
    )
    statistics = statistics.withColumn(
        "completenessPercentage", F.col("dataPointsCount") / F.col("windowDays") * 100.0
    )

    average_on_as_of = rolling.select(
        "userId",
        "metricType",
        F.col("date").alias("asOfDate"),
        *[F.col(f"avg_{name}").alias(f"avg_{name}") for name in TIME_RANGES],
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


def _finite_or_null(column: str) -> F.Column:
    """Return the column with NaN and infinity replaced by null; the backend rejects both."""

    value = F.col(column)
    return F.when(F.isnan(value) | (F.abs(value) == float("inf")), F.lit(None).cast("double")).otherwise(value)


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

    return statistics.select(
        F.to_json(F.struct(F.col("userId").alias("$oid"))).alias("userId"),
        F.col("metricType"),
        F.col("timeRange"),
        F.col("asOfDate"),
        F.col("windowStartDate"),
        F.struct(
            _finite_or_null("rollingAverage").alias("rollingAverage"),
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
