"""The data contract shared with the health app's backend: collections, enums, units and ranges.

The backend validates what it reads, so these names and bounds are copied exactly from its schema.
"""

from dataclasses import dataclass

HEALTH_METRICS = "healthmetrics"
ANALYTICS = "analytics"
USERS = "users"
QUARANTINE = "quarantine"

SOURCES = ("googlefit", "manual", "import")


@dataclass(frozen=True)
class MetricRange:
    """Inclusive bounds of one metric as the backend accepts it, in the unit named."""

    name: str
    unit: str
    minimum: float
    maximum: float


# Metrics that `analytics` documents are computed for, in the backend's `metricType` enum order.
METRIC_RANGES = (
    MetricRange("steps", "steps", 0, 100_000),
    MetricRange("distance", "km", 0, 500),
    MetricRange("calories", "kcal", 0, 10_000),
    MetricRange("activeMinutes", "min", 0, 1440),
    MetricRange("weight", "kg", 30, 300),
    MetricRange("sleepHours", "h", 0, 24),
    MetricRange("heartPoints", "points", 0, 500),
    MetricRange("hydration", "L", 0, 10),
)

METRIC_TYPES = tuple(metric.name for metric in METRIC_RANGES)

# `timeRange` enum value and its window length in calendar days.
TIME_RANGES = {"7day": 7, "30day": 30, "90day": 90}

# `analytics.expiresAt` is `calculatedAt` plus this many days; a TTL index removes the document then.
ANALYTICS_TTL_DAYS = 90

# Default goals of a user document, used when the user or the goal field is missing.
DEFAULT_GOALS = {
    "stepGoal": 10_000,
    "sleepGoal": 8,
    "calorieGoal": 2000,
    "distanceGoal": 5,
    "weightGoal": None,
}
