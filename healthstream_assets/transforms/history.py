"""Daily metric history: one value per user, metric and calendar day."""

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


def latest_per_day(accepted: DataFrame) -> DataFrame:
    """Keep, for each user and day, only the rows of the document with the latest `(updatedAt, _id)`.

    The health app keeps one document per user and day, but a collection without the unique
    index can hold several; the latest write wins, as it would for an in-place edit. The other
    documents' metrics are dropped whole, not merged.
    """

    newest_first = Window.partitionBy("userId", "date").orderBy(F.col("updatedAt").desc(), F.col("sourceId").desc())

    ranked = accepted.withColumn("documentRank", F.dense_rank().over(newest_first))
    return ranked.filter(F.col("documentRank") == 1).drop("documentRank")


def daily_values(accepted: DataFrame) -> DataFrame:
    """Return userId, metricType, date, value for days that have a value, after de-duplication."""

    latest = latest_per_day(accepted)
    return latest.filter(F.col("value").isNotNull()).select("userId", "metricType", "date", "value")


def touched_days(window_rows: DataFrame) -> DataFrame:
    """Return the distinct (userId, date) pairs whose documents changed in the window."""

    return window_rows.select("userId", "date").distinct()
