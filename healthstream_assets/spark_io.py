"""Reads and writes between Spark and MongoDB through the MongoDB Spark Connector."""

from datetime import datetime

from bson import ObjectId
from dagster import get_dagster_logger
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from healthstream_assets import contract
from healthstream_assets.resources.mongo import MongoResource

# Every field is read as a string, with its BSON type beside it from `$type`: a typed schema
# makes the connector fail the whole read on the first document whose field has another type,
# and bad input must be counted and quarantined instead. A sub-document arrives as its JSON text.
RAW_SCHEMA = (
    "_id string, userId string, userIdType string, date string, dateType string, "
    "updatedAt string, updatedAtType string, metrics string, metricsType string, source string"
)

_RAW_PROJECTION = {
    "$project": {
        "userId": 1,
        "userIdType": {"$type": "$userId"},
        "date": 1,
        "dateType": {"$type": "$date"},
        "updatedAt": 1,
        "updatedAtType": {"$type": "$updatedAt"},
        "metrics": 1,
        "metricsType": {"$type": "$metrics"},
        "source": 1,
    }
}


def read_health_metrics(spark: SparkSession, mongo: MongoResource, match: dict) -> DataFrame:
    """Read the `healthmetrics` documents matching `match` as rows of `RAW_SCHEMA`."""

    pipeline = [{"$match": match}, _RAW_PROJECTION]
    options = mongo.spark_read_options(contract.HEALTH_METRICS, pipeline)
    return spark.read.format("mongodb").options(**options).schema(RAW_SCHEMA).load()


def read_user_histories(spark: SparkSession, mongo: MongoResource, user_ids: list[str]) -> DataFrame:
    """Read every `healthmetrics` document of the given users (hex ObjectId strings)."""

    match = {"userId": {"$in": [ObjectId(user_id) for user_id in user_ids]}}
    return read_health_metrics(spark, mongo, match)


def read_user_goals(spark: SparkSession, mongo: MongoResource, user_ids: list[str]) -> DataFrame:
    """Read `_id` and the `goals` sub-document (as JSON text) of the given users."""

    pipeline = [
        {"$match": {"_id": {"$in": [ObjectId(user_id) for user_id in user_ids]}}},
        {"$project": {"goals": 1}},
    ]
    options = mongo.spark_read_options(contract.USERS, pipeline)
    return spark.read.format("mongodb").options(**options).schema("_id string, goals string").load()


def is_duplicate_key_error(error: Exception) -> bool:
    """Return True when a write failed on a unique index (MongoDB error E11000).

    FerretDB 1.24 replies to a failed update without the `n` field, so the Java driver reports
    "Document does not contain key n" in place of the E11000 write error. That text counts too,
    because retrying an idempotent upsert once is harmless whatever the cause.
    """

    text = str(error)
    return "E11000" in text or "duplicate key" in text.lower() or "does not contain key n" in text


def read_all_user_goals(spark: SparkSession, mongo: MongoResource) -> DataFrame:
    """Read `_id` and the `goals` sub-document (as JSON text) of every user."""

    options = mongo.spark_read_options(contract.USERS, [{"$project": {"goals": 1}}])
    return spark.read.format("mongodb").options(**options).schema("_id string, goals string").load()


def read_analytics_keys(spark: SparkSession, mongo: MongoResource) -> DataFrame:
    """Read the (userId, metricType, timeRange) key of every `analytics` document."""

    pipeline = [{"$project": {"userId": 1, "metricType": 1, "timeRange": 1}}]
    options = mongo.spark_read_options(contract.ANALYTICS, pipeline)
    schema = "_id string, userId string, metricType string, timeRange string"
    return spark.read.format("mongodb").options(**options).schema(schema).load()


def upsert_analytics(documents: DataFrame, mongo: MongoResource) -> None:
    """Upsert `analytics` documents on (userId, metricType, timeRange); re-running writes the same values.

    Two writers upserting one new key at the same moment can both try to insert it. The unique
    index rejects the second with a duplicate-key error, and one retry then finds the document and
    updates it.
    """

    options = mongo.spark_upsert_options(contract.ANALYTICS, ["userId", "metricType", "timeRange"])
    try:
        documents.write.format("mongodb").mode("append").options(**options).save()
    except Exception as error:  # Py4J wraps the driver's exception; its text carries the error code.
        if not is_duplicate_key_error(error):
            raise
        get_dagster_logger().warning("analytics upsert hit a duplicate key from a concurrent writer; retrying once")
        documents.write.format("mongodb").mode("append").options(**options).save()


def upsert_quarantine(rejected: DataFrame, mongo: MongoResource, run_id: str, quarantined_at: datetime) -> None:
    """Record rejected documents and values in the quarantine collection, once per (document, reason, metric)."""

    records = rejected.select(
        F.to_json(F.struct(F.col("sourceId").alias("$oid"))).alias("sourceId"),
        F.lit(contract.HEALTH_METRICS).alias("collection"),
        F.col("reason"),
        F.coalesce(F.col("metricType"), F.lit("")).alias("metricType"),
        F.col("detail"),
        F.col("userId"),
        F.lit(run_id).alias("runId"),
        F.lit(quarantined_at).cast("timestamp").alias("quarantinedAt"),
    )

    options = mongo.spark_upsert_options(contract.QUARANTINE, ["sourceId", "reason", "metricType"])
    records.write.format("mongodb").mode("append").options(**options).save()
