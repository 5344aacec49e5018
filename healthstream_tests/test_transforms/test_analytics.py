"""The Spark analytics against hand-computed edge cases, all cases computed in one Spark job.

Each case's users and documents get a prefix of their own, so the cases cannot meet in a window.
Cases given as raw documents go through MongoDB and the connector, as a window run reads them.
"""

import copy
import json
import math
from datetime import UTC, datetime

import pytest
from analytics_cases import CASES, value_at
from bson import ObjectId

from healthstream_assets import contract, spark_io
from healthstream_assets.resources.mongo import MongoResource
from healthstream_assets.transforms.analytics import parse_goals, to_analytics_documents, window_statistics
from healthstream_assets.transforms.history import daily_values
from healthstream_assets.transforms.rolling import rolling_averages
from healthstream_assets.transforms.validation import accepted_rows, validate_documents

DAILY_SCHEMA = "userId string, metricType string, date date, value double"




def _prefixed(hex_id: str, case_index: int) -> str:
    return f"{case_index:04x}{hex_id[4:]}"


def _case_inputs(case_index: int, case) -> tuple[list, list, dict]:
    daily = [(_prefixed(user, case_index), metric, day, value) for user, metric, day, value in case.daily]

    documents = []
    for original in case.documents:
        document = copy.deepcopy(original)
        document["_id"] = ObjectId(_prefixed(str(document["_id"]), case_index))
        if isinstance(document.get("userId"), ObjectId):
            document["userId"] = ObjectId(_prefixed(str(document["userId"]), case_index))
        documents.append(document)

    goals = {_prefixed(user, case_index): user_goals for user, user_goals in case.goals.items()}
    return daily, documents, goals


def _as_document(row) -> dict:
    document = row.asDict(recursive=True)
    document["userId"] = json.loads(document["userId"])["$oid"]
    return document


def _matches(actual, expected) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return actual == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if isinstance(expected, datetime) and isinstance(actual, datetime) and actual.tzinfo is None:
        return actual.replace(tzinfo=UTC) == expected
    return actual == expected


def _has_non_finite_metric(document: dict) -> bool:
    metrics = document.get("metrics")
    if not isinstance(metrics, dict):
        return False
    return any(isinstance(value, float) and not math.isfinite(value) for value in metrics.values())


def _insert_each(collection, documents: list[dict], server_is_ferretdb: bool) -> None:
    """Insert the documents; on FerretDB skip those with NaN or infinity, which it rejects.

    Skipped there, they never reach a window, which leaves the expected analytics the same as when
    the pipeline drops them on MongoDB.
    """

    for document in documents:
        if _has_non_finite_metric(document) and server_is_ferretdb:
            continue
        collection.insert_one(document)


@pytest.fixture(scope="module")
def case_documents(spark, mongo_client, mongo_uri, server_is_ferretdb):
    """Compute the analytics documents of every case at once; return them by (userId, metric, range)."""

    db = mongo_client[f"hs_test_cases_{ObjectId()}"]
    daily_rows = []
    raw_documents = []
    goal_rows = []

    for index, case in enumerate(CASES, start=1):
        daily, documents, goals = _case_inputs(index, case)
        daily_rows += daily
        raw_documents += documents
        goal_rows += [(user, json.dumps(user_goals)) for user, user_goals in goals.items()]

    daily = spark.createDataFrame(daily_rows, DAILY_SCHEMA)
    if raw_documents:
        _insert_each(db[contract.HEALTH_METRICS], raw_documents, server_is_ferretdb)
        resource = MongoResource(uri=mongo_uri, database_name=db.name)
        raw = spark_io.read_health_metrics(spark, resource, {})
        daily = daily.unionByName(daily_values(accepted_rows(validate_documents(raw))))

    goals = parse_goals(spark.createDataFrame(goal_rows or [("0" * 24, "{}")], "_id string, goals string"))
    no_touched_days = spark.createDataFrame([], "userId string, date date")
    statistics = window_statistics(daily, rolling_averages(daily, no_touched_days), goals)

    calculated_at = CASES[0].calculated_at
    documents = to_analytics_documents(statistics, "case-run", calculated_at, 0, spark.version).collect()
    mongo_client.drop_database(db.name)

    by_key = {}
    for row in documents:
        document = _as_document(row)
        by_key[(document["userId"], document["metricType"], document["timeRange"])] = document
    return by_key


@pytest.mark.parametrize("case_index", range(1, len(CASES) + 1), ids=[case.name for case in CASES])
def test_analytics_case(case_index, case_documents):
    case = CASES[case_index - 1]
    user, metric_type, time_range = case.key
    key = (_prefixed(user, case_index), metric_type, time_range)

    assert key in case_documents, f"no analytics document for {case.name}"
    document = case_documents[key]

    for path, expected in case.expected.items():
        actual = value_at(document, path)
        assert _matches(actual, expected), f"{case.name}: {path} is {actual!r}, expected {expected!r}"
