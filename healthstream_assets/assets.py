"""Assets of one window: the window's metrics, the affected users' history, rolling averages, analytics."""

import time
from datetime import UTC, datetime

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from dagster_pyspark import PySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from healthstream_assets import contract, spark_io
from healthstream_assets.cursor import Position, Window, format_timestamp, to_utc_millis
from healthstream_assets.resources.mongo import MongoResource
from healthstream_assets.transforms import analytics as analytics_transforms
from healthstream_assets.transforms.history import daily_values, touched_days
from healthstream_assets.transforms.rolling import rolling_averages as compute_rolling_averages
from healthstream_assets.transforms.validation import accepted_rows, rejected_rows, validate_documents


class WindowConfig(Config):
    """The window a run processes: documents with start < (updatedAt, _id) <= end."""

    window_id: str
    attempt: int = 1
    start_updated_at: str
    start_id: str
    end_updated_at: str
    end_id: str
    doc_count: int = 0

    def to_window(self) -> Window:
        start = Position.from_json({"updatedAt": self.start_updated_at, "_id": self.start_id}, "start")
        end = Position.from_json({"updatedAt": self.end_updated_at, "_id": self.end_id}, "end")
        return Window(start=start, end=end, doc_count=self.doc_count)


BAD_INPUT_CHECK = "no_rejected_input"


def window_user_ids(window_rows: DataFrame) -> list[str]:
    """Return the distinct user ids of a window's rows.

    A window contains at most MAX_BATCH_DOCS documents, so its user ids fit in the driver.
    """

    return [row["userId"] for row in window_rows.select("userId").distinct().collect()]


@asset(
    kinds={"spark", "mongodb"},
    description="The window's healthmetrics documents in long format: userId, date, metricType, value, updatedAt.",
    check_specs=[
        AssetCheckSpec(
            BAD_INPUT_CHECK,
            asset="new_health_metrics",
            description="Warns when documents were skipped or values rejected; they are in the quarantine collection.",
        )
    ],
)
def new_health_metrics(
    context: AssetExecutionContext, config: WindowConfig, pyspark: PySparkResource, mongo: MongoResource
) -> Iterator[Output[DataFrame] | AssetCheckResult]:
    window = config.to_window()
    spark = pyspark.spark_session
    context.log.info(f"window {config.window_id} attempt {config.attempt}: reading {window.describe()} from {mongo.masked_uri()}")

    mongo.ensure_indexes()

    # Spark matches cached DataFrames by plan, and a MongoDB read with the same options has the
    # same plan; a cache left by an earlier run in this process would return that run's documents.
    spark.catalog.clearCache()

    raw = spark_io.read_health_metrics(spark, mongo, window.mongo_filter())
    validated = validate_documents(raw).cache()

    documents_read = validated.select("sourceId").distinct().count()
    rejections = rejected_rows(validated).cache()
    skipped_by_reason = {
        row["reason"]: row["count"]
        for row in rejections.filter(F.col("metricType").isNull()).groupBy("reason").count().collect()
    }
    rejected_values_by_reason = {
        row["reason"]: row["count"]
        for row in rejections.filter(F.col("metricType").isNotNull()).groupBy("reason").count().collect()
    }

    if skipped_by_reason or rejected_values_by_reason:
        spark_io.upsert_quarantine(rejections, mongo, context.run_id, datetime.now(UTC))
        context.log.warning(
            f"window {config.window_id}: skipped documents {skipped_by_reason}, "
            f"rejected values {rejected_values_by_reason}; recorded in {contract.QUARANTINE}"
        )

    accepted = accepted_rows(validated)
    documents_accepted = accepted.select("sourceId").distinct().count()
    lag_seconds = (datetime.now(UTC) - window.end.updated_at).total_seconds()

    context.log.info(
        f"window {config.window_id}: {documents_read} documents read, {documents_accepted} accepted, "
        f"{sum(skipped_by_reason.values())} skipped"
    )

    now = datetime.now(UTC)
    future_documents = mongo.count_stamped_after(now)

    yield Output(
        accepted,
        metadata={
            "window_id": config.window_id,
            "attempt": config.attempt,
            "window_start": MetadataValue.json(window.start.to_json()),
            "window_end": MetadataValue.json(window.end.to_json()),
            "documents_planned": config.doc_count,
            "documents_read": documents_read,
            "documents_accepted": documents_accepted,
            "documents_skipped": sum(skipped_by_reason.values()),
            "documents_skipped_by_reason": MetadataValue.json(skipped_by_reason),
            "values_rejected_by_reason": MetadataValue.json(rejected_values_by_reason),
            "lag_seconds": round(lag_seconds, 3),
            "documents_stamped_in_future": future_documents,
        },
    )

    rejected_total = sum(skipped_by_reason.values()) + sum(rejected_values_by_reason.values())
    yield AssetCheckResult(
        check_name=BAD_INPUT_CHECK,
        passed=rejected_total == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "documents_skipped_by_reason": MetadataValue.json(skipped_by_reason),
            "values_rejected_by_reason": MetadataValue.json(rejected_values_by_reason),
            "quarantine_collection": contract.QUARANTINE,
        },
    )


@asset(
    kinds={"spark", "mongodb"},
    description="The whole daily history (one value per user, metric and day) of the users the window touched.",
)
def metric_history(
    context: AssetExecutionContext, new_health_metrics: DataFrame, pyspark: PySparkResource, mongo: MongoResource
) -> Output[DataFrame]:
    user_ids = window_user_ids(new_health_metrics)

    raw = spark_io.read_user_histories(pyspark.spark_session, mongo, user_ids)
    daily = daily_values(accepted_rows(validate_documents(raw))).cache()
    value_count = daily.count()

    context.log.info(f"history of {len(user_ids)} users: {value_count} daily values")
    return Output(daily, metadata={"users": len(user_ids), "daily_values": value_count})


@asset(
    kinds={"spark", "mongodb"},
    description="Goals of the users the window touched, from the users collection; missing goals use the defaults later.",
)
def user_goals(
    context: AssetExecutionContext, new_health_metrics: DataFrame, pyspark: PySparkResource, mongo: MongoResource
) -> Output[DataFrame]:
    user_ids = window_user_ids(new_health_metrics)

    users = spark_io.read_user_goals(pyspark.spark_session, mongo, user_ids)
    goals = analytics_transforms.parse_goals(users).cache()
    found = goals.count()

    context.log.info(f"goals of {found} of {len(user_ids)} users found in {contract.USERS}")
    return Output(goals, metadata={"users_requested": len(user_ids), "users_found": found})


@asset(
    kinds={"spark"},
    description="7, 30 and 90-day calendar rolling averages and data-point counts for every day the window's changes reach.",
)
def rolling_averages(
    context: AssetExecutionContext, new_health_metrics: DataFrame, metric_history: DataFrame
) -> Output[DataFrame]:
    result = compute_rolling_averages(metric_history, touched_days(new_health_metrics)).cache()
    day_count = result.count()

    context.log.info(f"rolling averages recomputed for {day_count} user-metric-days")
    return Output(result, metadata={"user_metric_days": day_count})


def milliseconds_since_run_start(context: AssetExecutionContext) -> int:
    """Return the run's processing time so far: from its start to the analytics being computed."""

    record = context.instance.get_run_record_by_id(context.run_id)
    if record is None or record.start_time is None:
        return 0
    return int((time.time() - record.start_time) * 1000)


@asset(
    kinds={"spark", "mongodb"},
    description="Upserts one analytics document per (userId, metricType, timeRange) of the touched users.",
)
def analytics(
    context: AssetExecutionContext,
    new_health_metrics: DataFrame,
    metric_history: DataFrame,
    rolling_averages: DataFrame,
    user_goals: DataFrame,
    pyspark: PySparkResource,
    mongo: MongoResource,
) -> MaterializeResult:
    spark = pyspark.spark_session
    calculated_at = to_utc_millis(datetime.now(UTC))

    statistics = analytics_transforms.window_statistics(metric_history, rolling_averages, user_goals).cache()
    document_count = statistics.count()
    non_finite = analytics_transforms.count_non_finite(statistics)
    anomalies = statistics.filter("anomalyDetected").count()

    duration_ms = milliseconds_since_run_start(context)
    documents = analytics_transforms.to_analytics_documents(
        statistics, context.run_id, calculated_at, duration_ms, spark.version
    )

    spark_io.upsert_analytics(documents, mongo)

    # A user whose edits removed every value of a metric keeps no analytics for that metric.
    present = {}
    for row in statistics.select("userId", "metricType").distinct().collect():
        present.setdefault(row["userId"], []).append(row["metricType"])
    user_ids = window_user_ids(new_health_metrics)
    removed = mongo.delete_analytics_without_values(user_ids, present)

    context.log.info(
        f"analytics: {document_count} documents upserted, {removed} removed, for {len(user_ids)} users "
        f"at {format_timestamp(calculated_at)}"
    )
    return MaterializeResult(
        metadata={
            "documents_upserted": document_count,
            "documents_removed": removed,
            "anomalies_detected": anomalies,
            "non_finite_values_stored_as_null": non_finite,
            "users": len(user_ids),
            "calculated_at": format_timestamp(calculated_at),
        }
    )


WINDOW_ASSETS = [new_health_metrics, metric_history, user_goals, rolling_averages, analytics]
