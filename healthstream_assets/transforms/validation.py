"""Validation of raw `healthmetrics` documents into one typed row per document and metric.

The rules are plain Python so they read like the data contract; `validate_documents` applies them
to a Spark DataFrame of raw documents as read by `spark_io.read_health_metrics`.
"""

import json
import math
import re
from datetime import UTC, datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from healthstream_assets.contract import METRIC_RANGES

# Metrics that a non-wear day of an import reports as 0 although nothing was measured.
NOT_MEASURED_METRICS = ("steps", "distance", "calories", "activeMinutes")

# A metric sent as a string is accepted when it is a plain decimal number ("9727", "7.5");
# anything else, such as the thousands separator in "8,253", is rejected rather than guessed.
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")

ROW_SCHEMA = StructType(
    [
        StructField("metricType", StringType()),
        StructField("value", DoubleType()),
        StructField("reason", StringType()),
        StructField("detail", StringType()),
    ]
)

VALIDATED_SCHEMA = StructType(
    [
        StructField("sourceId", StringType(), False),
        StructField("userId", StringType()),
        StructField("date", DateType()),
        StructField("updatedAt", TimestampType()),
        StructField("metricType", StringType()),
        StructField("value", DoubleType()),
        StructField("reason", StringType()),
        StructField("detail", StringType()),
    ]
)


def parse_bson_date(text: str | None) -> datetime | None:
    """Parse the connector's string form of a BSON Date (`2016-04-12T00:00:00Z`, optional ms)."""

    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone(UTC)


def _document_reason(user_id_type: str, date_type: str, updated_at_type: str, metrics_type: str) -> str | None:
    if user_id_type in ("missing", "null"):
        return "missing_user_id"
    if user_id_type != "objectId":
        return "invalid_user_id"
    if updated_at_type in ("missing", "null"):
        return "missing_updated_at"
    if updated_at_type != "date":
        return "invalid_updated_at"
    if date_type in ("missing", "null"):
        return "missing_date"
    if date_type != "date":
        return "invalid_date"
    if metrics_type in ("missing", "null"):
        return "missing_metrics"
    if metrics_type != "object":
        return "invalid_metrics"
    return None


def _metric_value(name: str, raw: object, minimum: float, maximum: float) -> tuple[float | None, str | None]:
    """Return `(value, None)` for a usable value, `(None, None)` for no value, or `(None, reason)`."""

    if raw is None:
        return None, None

    if isinstance(raw, bool):
        return None, "invalid_value_type"

    if isinstance(raw, str):
        if not _DECIMAL.match(raw.strip()):
            return None, "non_numeric_string"
        raw = float(raw)

    if not isinstance(raw, (int, float)):
        return None, "invalid_value_type"

    value = float(raw)
    if not math.isfinite(value):
        return None, "non_finite_value"

    if value < minimum or value > maximum:
        return None, "out_of_range"

    return value, None


def validate_document_fields(
    user_id_type: str,
    date_text: str | None,
    date_type: str,
    updated_at_type: str,
    metrics_json: str | None,
    metrics_type: str,
    source: str | None = None,
) -> list[tuple[str | None, float | None, str | None, str | None]]:
    """Return `(metricType, value, reason, detail)` rows for one document.

    A rejected document gives one row with no metricType and the reason. An accepted document
    gives one row per metric of the contract: value None means no value that day, and a value that
    breaks the contract keeps value None and carries the reason, so the rest of the day survives.
    """

    reason = _document_reason(user_id_type, date_type, updated_at_type, metrics_type)
    if reason is not None:
        return [(None, None, reason, None)]

    day = parse_bson_date(date_text)
    if (day.hour, day.minute, day.second, day.microsecond) != (0, 0, 0, 0):
        return [(None, None, "date_not_midnight_utc", date_text)]

    try:
        metrics = json.loads(metrics_json)
    except (TypeError, ValueError):
        return [(None, None, "invalid_metrics", None)]

    if not isinstance(metrics, dict):
        return [(None, None, "invalid_metrics", None)]

    not_measured = is_not_measured_import(source, metrics)

    rows = []
    for metric in METRIC_RANGES:
        raw = metrics.get(metric.name)
        value, metric_reason = _metric_value(metric.name, raw, metric.minimum, metric.maximum)
        if not_measured and metric.name in NOT_MEASURED_METRICS and raw is not None:
            value, metric_reason = None, "not_measured_sentinel"
        detail = None if metric_reason is None else json.dumps(raw)[:200]
        rows.append((metric.name, value, metric_reason, detail))

    return rows


def _is_zero_or_absent(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


def is_not_measured_import(source: str | None, metrics: dict) -> bool:
    """Return True for an imported day whose zeros mean the device was not worn.

    Fitbit exports a non-wear day as 0 steps with 1440 sedentary minutes; an import that keeps
    `sedentaryMinutes` shows it. Without that field a 0 is kept, since 0 steps alone can be real.
    """

    steps = metrics.get("steps")
    if source != "import" or steps is None or not _is_zero_or_absent(steps):
        return False

    return metrics.get("sedentaryMinutes") == 1440


def _validate_columns(user_id_type, date_text, date_type, updated_at_type, metrics_json, metrics_type, source):
    # Without type hints, so Spark treats it as a plain row-at-a-time Python UDF.
    return validate_document_fields(
        user_id_type, date_text, date_type, updated_at_type, metrics_json, metrics_type, source
    )


_validate_udf = F.udf(_validate_columns, ArrayType(ROW_SCHEMA))


def validate_documents(raw: DataFrame) -> DataFrame:
    """Turn raw documents into rows of `VALIDATED_SCHEMA`: one per metric, or one per rejected document.

    `reason` is null on accepted rows. `date` is the calendar day in UTC.
    """

    rows = raw.withColumn(
        "row",
        F.explode(
            _validate_udf(
                F.col("userIdType"),
                F.col("date"),
                F.col("dateType"),
                F.col("updatedAtType"),
                F.col("metrics"),
                F.col("metricsType"),
                F.col("source"),
            )
        ),
    )

    is_date = F.col("dateType") == "date"
    is_updated_at = F.col("updatedAtType") == "date"

    return rows.select(
        F.col("_id").alias("sourceId"),
        F.when(F.col("userIdType") == "objectId", F.col("userId")).alias("userId"),
        F.when(is_date, F.to_date(F.to_timestamp(F.col("date")))).alias("date"),
        F.when(is_updated_at, F.to_timestamp(F.col("updatedAt"))).alias("updatedAt"),
        F.col("row.metricType").alias("metricType"),
        F.col("row.value").alias("value"),
        F.col("row.reason").alias("reason"),
        F.col("row.detail").alias("detail"),
    )


def accepted_rows(validated: DataFrame) -> DataFrame:
    """Return the accepted rows in long format: userId, date, metricType, value (null: no value), updatedAt, sourceId."""

    return validated.filter(F.col("reason").isNull()).select(
        "userId", "date", "metricType", "value", "updatedAt", "sourceId"
    )


def rejected_rows(validated: DataFrame) -> DataFrame:
    return validated.filter(F.col("reason").isNotNull())
