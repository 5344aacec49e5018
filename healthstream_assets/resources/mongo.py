"""MongoDB access for the sensor, the assets and the CLI, plus the Spark connector options."""

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pymongo
from bson import ObjectId, json_util
from dagster import ConfigurableResource, get_dagster_logger
from pydantic import PrivateAttr
from pymongo.database import Database
from pymongo.errors import OperationFailure

from healthstream_assets import contract
from healthstream_assets.cursor import Position
from healthstream_assets.settings import DEFAULT_PARTITIONER, mask_uri

# FerretDB 1.x rejects createIndexes with expireAfterSeconds with this error code.
NOT_IMPLEMENTED = 238


class MongoResource(ConfigurableResource):
    """A MongoDB database reached by URI; an empty URI means the embedded server of `state_dir`.

    The client is timezone-aware: every Date read back is a UTC `datetime`.
    """

    uri: str = ""
    database_name: str = "health_metrics"
    state_dir: str = ".state"
    server_selection_timeout_ms: int = 10_000
    spark_partitioner: str = DEFAULT_PARTITIONER

    _client: pymongo.MongoClient | None = PrivateAttr(default=None)

    def resolved_uri(self) -> str:
        """Return the configured URI, or the embedded server's when none is configured."""

        if self.uri:
            return self.uri

        state_file = Path(self.state_dir) / "server.json"
        if not state_file.exists():
            raise RuntimeError(
                "MONGO_URI is not set and the embedded server is not running: "
                "start it with `healthstream server start` or set MONGO_URI"
            )

        return json.loads(state_file.read_text())["uri"]

    def masked_uri(self) -> str:
        return mask_uri(self.resolved_uri())

    def client(self) -> pymongo.MongoClient:
        if self._client is None:
            self._client = pymongo.MongoClient(
                self.resolved_uri(),
                tz_aware=True,
                serverSelectionTimeoutMS=self.server_selection_timeout_ms,
                appname="healthstream",
            )
        return self._client

    def database(self) -> Database:
        return self.client()[self.database_name]

    def teardown_after_execution(self, context) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ensure_indexes(self) -> None:
        ensure_indexes(self.database())

    def find_window_end(self, after: Position, until: datetime, limit: int) -> tuple[Position, int] | None:
        """Return the end position and size of the next window of at most `limit` documents.

        The window contains the documents after `after` and stamped no later than `until`, in
        `(updatedAt, _id)` order. Two index-backed queries with a limit find its last document.
        """

        collection = self.database()[contract.HEALTH_METRICS]
        window_filter = {"$and": [after.after_filter(), {"updatedAt": {"$lte": until}}]}
        order = [("updatedAt", pymongo.ASCENDING), ("_id", pymongo.ASCENDING)]
        projection = {"_id": 1, "updatedAt": 1}

        full_window_end = list(collection.find(window_filter, projection).sort(order).skip(limit - 1).limit(1))
        if full_window_end:
            return Position.from_document(full_window_end[0]), limit

        reverse_order = [("updatedAt", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]
        last = list(collection.find(window_filter, projection).sort(reverse_order).limit(1))
        if not last:
            return None

        return Position.from_document(last[0]), collection.count_documents(window_filter)

    def delete_analytics_documents(self, document_ids: list[str]) -> int:
        """Delete `analytics` documents by `_id` (hex strings); return how many were deleted."""

        collection = self.database()[contract.ANALYTICS]
        deleted = 0
        for start in range(0, len(document_ids), 1000):
            batch = [ObjectId(document_id) for document_id in document_ids[start : start + 1000]]
            deleted += collection.delete_many({"_id": {"$in": batch}}).deleted_count
        return deleted

    def count_stamped_after(self, moment: datetime) -> int:
        """Return how many `healthmetrics` documents are stamped after `moment` (waiting for their time)."""

        return self.database()[contract.HEALTH_METRICS].count_documents({"updatedAt": {"$gt": moment}})

    def delete_analytics_without_values(self, user_ids: list[str], present: dict[str, list[str]]) -> int:
        """Delete the analytics of these users for metrics that no longer have any value; return the count."""

        collection = self.database()[contract.ANALYTICS]
        removed = 0
        for user_id in user_ids:
            metric_types = present.get(user_id, [])
            result = collection.delete_many({"userId": ObjectId(user_id), "metricType": {"$nin": metric_types}})
            removed += result.deleted_count
        return removed

    def spark_read_options(self, collection: str, pipeline: list[dict[str, Any]]) -> dict[str, str]:
        """Return MongoDB Spark Connector options that read `collection` through `pipeline`."""

        return {
            "connection.uri": self.resolved_uri(),
            "database": self.database_name,
            "collection": collection,
            "aggregation.pipeline": json_util.dumps(pipeline, json_options=json_util.CANONICAL_JSON_OPTIONS),
            "partitioner": self.spark_partitioner,
        }

    def spark_upsert_options(self, collection: str, key_fields: list[str]) -> dict[str, str]:
        """Return connector options for an idempotent upsert keyed on `key_fields`.

        Strings holding extended JSON objects such as `{"$oid": ...}` are written as the BSON
        type they describe, which is how ObjectId values travel through Spark.
        """

        return {
            "connection.uri": self.resolved_uri(),
            "database": self.database_name,
            "collection": collection,
            "operationType": "update",
            "idFieldList": ",".join(key_fields),
            "upsertDocument": "true",
            "convertJson": "objectOrArrayOnly",
            "ordered": "false",
            # FerretDB 1.24 holds one pooled connection per matched statement of an update command
            # until the command ends, with 100 per database; a batch of 100 updates of existing
            # documents hangs that database. Batches of 50 stay clear of it.
            "maxBatchSize": "50",
        }


def ensure_indexes(db: Database) -> None:
    """Create the indexes the pipeline relies on; creating an existing index is a no-op."""

    log = get_dagster_logger()

    metrics = db[contract.HEALTH_METRICS]
    metrics.create_index([("updatedAt", 1), ("_id", 1)], name="updatedAt_1__id_1")
    try:
        metrics.create_index([("userId", 1), ("date", 1)], unique=True, name="userId_1_date_1")
    except OperationFailure as error:
        # Existing duplicate days block the unique index; the pipeline keeps the latest of them.
        log.warning(f"unique index on {contract.HEALTH_METRICS}.{{userId, date}} not created: {error}")

    analytics = db[contract.ANALYTICS]
    analytics.create_index(
        [("userId", 1), ("metricType", 1), ("timeRange", 1)],
        unique=True,
        name="userId_1_metricType_1_timeRange_1",
    )
    try:
        analytics.create_index("expiresAt", expireAfterSeconds=0, name="expiresAt_ttl")
    except OperationFailure as error:
        if error.code != NOT_IMPLEMENTED:
            raise
        log.warning("this server does not implement TTL indexes; analytics documents will not expire")

    db[contract.QUARANTINE].create_index(
        [("sourceId", 1), ("reason", 1), ("metricType", 1)], unique=True, name="sourceId_1_reason_1_metricType_1"
    )
