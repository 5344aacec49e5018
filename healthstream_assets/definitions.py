"""The Dagster definitions of healthstream, built from the settings in the environment."""

from dagster import Definitions, EnvVar

from healthstream_assets.assets import WINDOW_ASSETS
from healthstream_assets.jobs import window_job
from healthstream_assets.reconciliation import analytics_reconciliation, build_reconciliation_schedule, reconciliation_job
from healthstream_assets.resources.mongo import MongoResource
from healthstream_assets.resources.parquet_io_manager import ParquetIOManager
from healthstream_assets.resources.spark import build_pyspark_resource
from healthstream_assets.sensors import WindowPolicy, build_window_sensor
from healthstream_assets.settings import Settings


def build_mongo_resource(settings: Settings) -> MongoResource:
    # An EnvVar keeps the URI, and any password in it, out of the configuration shown in the UI.
    uri = EnvVar("MONGO_URI") if settings.mongo_uri_in_environment else settings.mongo_uri or ""
    return MongoResource(
        uri=uri,
        database_name=settings.mongo_db_name,
        state_dir=str(settings.state_dir),
        spark_partitioner=settings.spark_partitioner,
    )


def policy_from_settings(settings: Settings) -> WindowPolicy:
    return WindowPolicy(
        lookback_days=settings.lookback_days,
        max_batch_docs=settings.max_batch_docs,
        settle_seconds=settings.settle_seconds,
        max_run_attempts=settings.max_run_attempts,
        retry_backoff_seconds=settings.retry_backoff_seconds,
    )


def build_definitions(settings: Settings) -> Definitions:
    policy = policy_from_settings(settings)
    pyspark = build_pyspark_resource(settings)

    return Definitions(
        assets=[*WINDOW_ASSETS, analytics_reconciliation],
        jobs=[window_job, reconciliation_job],
        sensors=[build_window_sensor(policy, settings.batch_interval_seconds)],
        schedules=[build_reconciliation_schedule(settings.reconcile_cron)],
        resources={
            "mongo": build_mongo_resource(settings),
            "pyspark": pyspark,
            "io_manager": ParquetIOManager(pyspark=pyspark, base_path=settings.parquet_base_path),
        },
    )


defs = build_definitions(Settings.from_env())
