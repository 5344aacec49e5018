"""Reconciliation: recompute every `analytics` document from `healthmetrics` as it is now.

Polling on `updatedAt` cannot see a deleted document, so analytics of deleted days (or deleted
users) would otherwise live on. This job recomputes all users from the whole collection, upserts the
results and deletes the analytics documents whose user and metric no longer have any value.
"""

from datetime import UTC, datetime

from dagster import (
    AssetExecutionContext,
    AssetSelection,
    DefaultScheduleStatus,
    MaterializeResult,
    ScheduleDefinition,
    asset,
    define_asset_job,
    in_process_executor,
)
from dagster_pyspark import PySparkResource
from pyspark.sql import functions as F

from healthstream_assets import spark_io
from healthstream_assets.assets import milliseconds_since_run_start
from healthstream_assets.cursor import format_timestamp, to_utc_millis
from healthstream_assets.jobs import ANALYTICS_WRITER_TAGS
from healthstream_assets.resources.mongo import MongoResource
from healthstream_assets.transforms import analytics as analytics_transforms
from healthstream_assets.transforms.history import daily_values
from healthstream_assets.transforms.rolling import rolling_averages
from healthstream_assets.transforms.validation import accepted_rows, validate_documents

RECONCILIATION_JOB_NAME = "analytics_reconciliation_job"


@asset(
    kinds={"spark", "mongodb"},
    description=(
        "Recomputes every analytics document from the whole healthmetrics collection and deletes "
        "analytics whose data was deleted."
    ),
)
def analytics_reconciliation(
    context: AssetExecutionContext, pyspark: PySparkResource, mongo: MongoResource
) -> MaterializeResult:
    spark = pyspark.spark_session
    calculated_at = to_utc_millis(datetime.now(UTC))
    mongo.ensure_indexes()

    # A cache left by an earlier run in this process would match this read's plan and return
    # that run's documents.
    spark.catalog.clearCache()

    raw = spark_io.read_health_metrics(spark, mongo, {})
    daily = daily_values(accepted_rows(validate_documents(raw))).cache()
    no_touched_days = spark.createDataFrame([], "userId string, date date")
    rolling = rolling_averages(daily, no_touched_days)
    goals = analytics_transforms.parse_goals(spark_io.read_all_user_goals(spark, mongo))

    statistics = analytics_transforms.window_statistics(daily, rolling, goals).cache()
    document_count = statistics.count()
    duration_ms = milliseconds_since_run_start(context)

    documents = analytics_transforms.to_analytics_documents(
        statistics, context.run_id, calculated_at, duration_ms, spark.version
    )
    spark_io.upsert_analytics(documents, mongo)

    computed_keys = statistics.select("userId", "metricType", "timeRange")
    stored = spark_io.read_analytics_keys(spark, mongo)
    stale = stored.join(computed_keys, on=["userId", "metricType", "timeRange"], how="left_anti")

    # Stale documents are the analytics of deleted data, normally few, so their ids fit the driver.
    stale_ids = [row["_id"] for row in stale.select("_id").collect()]
    deleted = mongo.delete_analytics_documents(stale_ids)

    users = statistics.select(F.countDistinct("userId")).first()[0]
    context.log.info(
        f"reconciliation: {document_count} analytics documents upserted for {users} users, "
        f"{deleted} stale documents deleted, at {format_timestamp(calculated_at)}"
    )
    return MaterializeResult(
        metadata={
            "documents_upserted": document_count,
            "stale_documents_deleted": deleted,
            "users": users,
            "calculated_at": format_timestamp(calculated_at),
        }
    )


reconciliation_job = define_asset_job(
    name=RECONCILIATION_JOB_NAME,
    selection=AssetSelection.assets(analytics_reconciliation),
    executor_def=in_process_executor,
    tags=ANALYTICS_WRITER_TAGS,
    description="Recompute all analytics from healthmetrics as it is and delete analytics of deleted data.",
)


def build_reconciliation_schedule(cron_schedule: str) -> ScheduleDefinition:
    return ScheduleDefinition(
        name="analytics_reconciliation_schedule",
        job=reconciliation_job,
        cron_schedule=cron_schedule,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=f"Reconcile analytics with healthmetrics ({cron_schedule} UTC).",
    )

