"""Rolling averages over calendar-day windows.

A window of N days ending on day d holds the values dated d-N+1 .. d. Days without a value are
missing, never zero, so the average is taken over the days present and the count says how many.
Windows are ranges over a day number, not over rows: with gaps, N rows can span far more than N days.
"""

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from healthstream_assets.contract import TIME_RANGES


def _day_number(column: str) -> F.Column:
    """Return the days since 1970-01-01, the axis the calendar windows range over."""

    return F.unix_date(F.col(column))


def days_to_recompute(daily: DataFrame, touched: DataFrame) -> DataFrame:
    """Return userId, metricType, date for every day whose windows contain a touched day.

    A change on day t reaches the windows ending on t .. t + (longest window - 1); days after the
    user's as-of day for that metric are left out. Each metric's as-of day is always included.
    """

    longest = max(TIME_RANGES.values())

    as_of = daily.groupBy("userId", "metricType").agg(F.max("date").alias("asOfDate"))

    reach = touched.join(as_of, on="userId").filter(F.col("date") <= F.col("asOfDate"))
    reached_days = reach.select(
        "userId",
        "metricType",
        F.explode(
            F.sequence(
                F.col("date"),
                F.least(F.date_add(F.col("date"), longest - 1), F.col("asOfDate")),
            )
        ).alias("date"),
    )

    as_of_days = as_of.select("userId", "metricType", F.col("asOfDate").alias("date"))

    return reached_days.unionByName(as_of_days).distinct()


def rolling_averages(daily: DataFrame, touched: DataFrame) -> DataFrame:
    """Return, per user, metric and recomputed day, the average and data-point count of each time range.

    Columns: userId, metricType, date, then `avg_7day`, `count_7day` and likewise for 30 and 90 days.
    `daily` must hold the users' whole history (one value per user, metric and day).
    """

    targets = days_to_recompute(daily, touched).withColumn("isTarget", F.lit(True))

    rows = daily.join(targets, on=["userId", "metricType", "date"], how="full_outer")
    rows = rows.withColumn("dayNumber", _day_number("date"))

    for time_range, days in TIME_RANGES.items():
        calendar_window = (
            Window.partitionBy("userId", "metricType").orderBy("dayNumber").rangeBetween(-(days - 1), 0)
        )
        rows = rows.withColumn(f"avg_{time_range}", F.avg("value").over(calendar_window))
        rows = rows.withColumn(f"count_{time_range}", F.count("value").over(calendar_window))

    result_columns = ["userId", "metricType", "date"]
    for time_range in TIME_RANGES:
        result_columns += [f"avg_{time_range}", f"count_{time_range}"]

    return rows.filter(F.col("isTarget")).select(*result_columns)
