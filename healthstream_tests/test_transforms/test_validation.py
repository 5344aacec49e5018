"""Validation of raw healthmetrics documents, table-driven over the rules of the data contract."""

import json

import pytest

from healthstream_assets.transforms.validation import validate_document_fields

MIDNIGHT = "2026-01-05T00:00:00Z"


def _metric_rows(metrics: dict) -> dict:
    rows = validate_document_fields("objectId", MIDNIGHT, "date", "date", json.dumps(metrics), "object")
    return {metric_type: (value, reason) for metric_type, value, reason, _ in rows}


@pytest.mark.parametrize(
    ("user_id_type", "date_type", "updated_at_type", "metrics_type", "reason"),
    [
        ("missing", "date", "date", "object", "missing_user_id"),
        ("null", "date", "date", "object", "missing_user_id"),
        ("string", "date", "date", "object", "invalid_user_id"),
        ("objectId", "date", "missing", "object", "missing_updated_at"),
        ("objectId", "date", "string", "object", "invalid_updated_at"),
        ("objectId", "missing", "date", "object", "missing_date"),
        ("objectId", "string", "date", "object", "invalid_date"),
        ("objectId", "date", "date", "missing", "missing_metrics"),
        ("objectId", "date", "date", "int", "invalid_metrics"),
    ],
)
def test_document_rejected_with_reason(user_id_type, date_type, updated_at_type, metrics_type, reason):
    rows = validate_document_fields(user_id_type, MIDNIGHT, date_type, updated_at_type, "{}", metrics_type)

    assert rows == [(None, None, reason, None)]


def test_date_not_at_midnight_rejected():
    rows = validate_document_fields("objectId", "2026-01-05T13:00:00Z", "date", "date", "{}", "object")

    assert rows[0][2] == "date_not_midnight_utc"


@pytest.mark.parametrize(
    ("metric", "raw", "value", "reason"),
    [
        ("steps", 9727, 9727.0, None),
        ("steps", "9727", 9727.0, None),
        ("steps", "8,253", None, "non_numeric_string"),
        ("steps", True, None, "invalid_value_type"),
        ("steps", -1, None, "out_of_range"),
        ("steps", 100_001, None, "out_of_range"),
        ("steps", 100_000, 100_000.0, None),
        ("steps", None, None, None),
        ("weight", 29.9, None, "out_of_range"),
        ("weight", 30, 30.0, None),
        ("sleepHours", 24.5, None, "out_of_range"),
        ("distance", 7.110000134, 7.110000134, None),
        ("hydration", {"litres": 2}, None, "invalid_value_type"),
    ],
)
def test_metric_value_rules(metric, raw, value, reason):
    rows = _metric_rows({metric: raw})

    assert rows[metric] == (value, reason)


def test_non_finite_values_rejected():
    # The connector renders BSON NaN and infinity as bare NaN / Infinity tokens in the JSON text.
    rows = validate_document_fields(
        "objectId", MIDNIGHT, "date", "date", '{"steps": NaN, "calories": Infinity}', "object"
    )
    by_metric = {metric_type: (value, reason) for metric_type, value, reason, _ in rows}

    assert by_metric["steps"] == (None, "non_finite_value")
    assert by_metric["calories"] == (None, "non_finite_value")


def test_absent_metric_has_no_value_not_zero():
    rows = _metric_rows({"steps": 5000})

    assert rows["calories"] == (None, None)
    assert rows["weight"] == (None, None)
    assert rows["steps"] == (5000.0, None)


def _rows_for_source(source: str, metrics: dict) -> dict:
    rows = validate_document_fields("objectId", MIDNIGHT, "date", "date", json.dumps(metrics), "object", source)
    return {metric_type: (value, reason) for metric_type, value, reason, _ in rows}


NON_WEAR_DAY = {"steps": 0, "distance": 0, "calories": 1347, "activeMinutes": 0, "sedentaryMinutes": 1440, "weight": 61.5}


def test_import_non_wear_sentinel_rejected():
    rows = _rows_for_source("import", NON_WEAR_DAY)

    assert rows["steps"] == (None, "not_measured_sentinel")
    assert rows["distance"] == (None, "not_measured_sentinel")
    assert rows["calories"] == (None, "not_measured_sentinel")
    assert rows["activeMinutes"] == (None, "not_measured_sentinel")
    assert rows["weight"] == (61.5, None)


def test_manual_zero_steps_kept():
    rows = _rows_for_source("manual", NON_WEAR_DAY)

    assert rows["steps"] == (0.0, None)
    assert rows["calories"] == (1347.0, None)


def test_import_zero_steps_without_sedentary_kept():
    rows = _rows_for_source("import", {"steps": 0, "distance": 0, "activeMinutes": 0})

    assert rows["steps"] == (0.0, None)
    assert rows["distance"] == (0.0, None)
