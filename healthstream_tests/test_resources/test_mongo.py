"""MongoDB access: indexes, window ends and idempotent analytics upserts through the Spark connector."""

from datetime import UTC, date, datetime

from bson import ObjectId

from healthstream_assets import contract, spark_io
from healthstream_assets.resources.mongo import MongoResource
from healthstream_assets.transforms.analytics import GOALS_SCHEMA, to_analytics_documents, window_statistics

USER = ObjectId("6b132d443b705cb98ddfbdfd")
GOALS_SCHEMA_WITH_USER = "userId string, " + GOALS_SCHEMA


def _statistics(spark, steps_on_day_3: float):
    daily = spark.createDataFrame(
        [
            (str(USER), "steps", date(2026, 1, 1), 1000.0),
            (str(USER), "steps", date(2026, 1, 3), steps_on_day_3),
        ],
        "userId string, metricType string, date date, value double",
    )
    rolling = spark.createDataFrame(
        [(str(USER), "steps", date(2026, 1, 3), (1000.0 + steps_on_day_3) / 2, 2, (1000.0 + steps_on_day_3) / 2, 2, (1000.0 + steps_on_day_3) / 2, 2)],
        "userId string, metricType string, date date, avg_7day double, count_7day long, "
        "avg_30day double, count_30day long, avg_90day double, count_90day long",
    )
    goals = spark.createDataFrame([(str(USER), None, None, None, None, None)], GOALS_SCHEMA_WITH_USER)
    return window_statistics(daily, rolling, goals)


def test_ensure_indexes_creates_unique_keys(mongo_db, mongo_uri):
    resource = MongoResource(uri=mongo_uri, database_name=mongo_db.name)

    resource.ensure_indexes()

    analytics_indexes = mongo_db[contract.ANALYTICS].index_information()
    assert analytics_indexes["userId_1_metricType_1_timeRange_1"]["unique"] is True
    metrics_indexes = mongo_db[contract.HEALTH_METRICS].index_information()
    assert metrics_indexes["updatedAt_1__id_1"]["key"] == [("updatedAt", 1), ("_id", 1)]


def test_analytics_upsert_idempotent(spark, mongo_db, mongo_uri):
    resource = MongoResource(uri=mongo_uri, database_name=mongo_db.name)
    resource.ensure_indexes()
    calculated_at = datetime(2026, 1, 4, 12, 0, 0, 123000, tzinfo=UTC)

    documents = to_analytics_documents(_statistics(spark, 3000.0), "run-1", calculated_at, 10, spark.version)
    spark_io.upsert_analytics(documents, resource)
    spark_io.upsert_analytics(documents, resource)

    stored = list(mongo_db[contract.ANALYTICS].find({"metricType": "steps"}))
    assert len(stored) == 3
    assert {doc["timeRange"] for doc in stored} == {"7day", "30day", "90day"}

    seven_day = mongo_db[contract.ANALYTICS].find_one({"timeRange": "7day"})
    assert seven_day["userId"] == USER
    assert seven_day["analytics"]["rollingAverage"] == 2000.0
    assert seven_day["analytics"]["statistics"]["dataPointsCount"] == 2
    assert seven_day["analytics"]["statistics"]["medianValue"] == 2000.0
    assert seven_day["analytics"]["statistics"]["standardDeviation"] == 1000.0
    assert seven_day["analytics"]["statistics"]["completenessPercentage"] == 2 / 7 * 100
    assert seven_day["asOfDate"] == datetime(2026, 1, 3, tzinfo=UTC)
    assert seven_day["windowStartDate"] == datetime(2025, 12, 28, tzinfo=UTC)
    assert seven_day["calculatedAt"] == calculated_at
    assert seven_day["expiresAt"] == datetime(2026, 4, 4, 12, 0, 0, 123000, tzinfo=UTC)
    assert seven_day["metadata"]["sparkJobId"] == "run-1"


def test_analytics_upsert_replaces_values(spark, mongo_db, mongo_uri):
    resource = MongoResource(uri=mongo_uri, database_name=mongo_db.name)
    resource.ensure_indexes()
    calculated_at = datetime(2026, 1, 4, tzinfo=UTC)

    first = to_analytics_documents(_statistics(spark, 3000.0), "run-1", calculated_at, 10, spark.version)
    spark_io.upsert_analytics(first, resource)
    first_id = mongo_db[contract.ANALYTICS].find_one({"timeRange": "7day"})["_id"]

    second = to_analytics_documents(_statistics(spark, 5000.0), "run-2", calculated_at, 10, spark.version)
    spark_io.upsert_analytics(second, resource)

    stored = list(mongo_db[contract.ANALYTICS].find({"timeRange": "7day"}))
    assert len(stored) == 1
    assert stored[0]["_id"] == first_id
    assert stored[0]["analytics"]["rollingAverage"] == 3000.0
    assert stored[0]["metadata"]["sparkJobId"] == "run-2"


def test_analytics_reupsert_of_many_existing_documents(spark, mongo_db, mongo_uri):
    # 40 users x 3 time ranges = 120 documents that all exist on the second write: one update
    # command matching 100 or more of them hangs a FerretDB 1.24 database, so writes are batched.
    resource = MongoResource(uri=mongo_uri, database_name=mongo_db.name)
    resource.ensure_indexes()
    users = [str(ObjectId()) for _ in range(40)]
    daily = spark.createDataFrame(
        [(user, "steps", date(2026, 1, 1), 1000.0 + index) for index, user in enumerate(users)],
        "userId string, metricType string, date date, value double",
    )
    rolling = spark.createDataFrame(
        [(user, "steps", date(2026, 1, 1), 1000.0 + index, 1, 1000.0 + index, 1, 1000.0 + index, 1) for index, user in enumerate(users)],
        "userId string, metricType string, date date, avg_7day double, count_7day long, "
        "avg_30day double, count_30day long, avg_90day double, count_90day long",
    )
    goals = spark.createDataFrame([], GOALS_SCHEMA_WITH_USER)
    statistics = window_statistics(daily, rolling, goals)
    calculated_at = datetime(2026, 1, 2, tzinfo=UTC)

    documents = to_analytics_documents(statistics, "run-1", calculated_at, 10, spark.version)
    spark_io.upsert_analytics(documents, resource)
    spark_io.upsert_analytics(documents, resource)

    assert mongo_db[contract.ANALYTICS].count_documents({}) == 120
