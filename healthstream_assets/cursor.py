"""The incremental watermark over `healthmetrics` and the window planning rules built on it.

The watermark is the pair `(updatedAt, _id)` of the last document whose results were written,
compared lexicographically, so documents sharing one `updatedAt` are split across windows without
loss or repetition. The whole state is a small JSON document stored as the Dagster sensor cursor:

    {"committed": {"updatedAt": "2016-04-12T08:00:00.123Z", "_id": "<24 hex>"},
     "inFlight": {"windowId": "...", "attempt": 1, "start": {...}, "end": {...}, "docCount": 500,
                  "requestedAt": "...", "retryAt": null, "lastFailedRunId": null},
     "windowsCommitted": 3}

Rules: at most one window is in flight; `committed` moves to the window's end only after a run of
that window succeeded; a failed window is requested again under a new run key. Every planned
window gets a fresh random id, and run keys are built from it, so a cursor reset can never reuse a
run key that Dagster has already seen.
"""

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

MIN_OBJECT_ID = ObjectId("0" * 24)


class CursorError(ValueError):
    """The sensor cursor text is not a valid watermark document."""


def to_utc_millis(moment: datetime) -> datetime:
    """Return `moment` in UTC truncated to milliseconds, the precision of a BSON Date."""

    if moment.tzinfo is None:
        raise CursorError(f"timestamp {moment.isoformat()} has no time zone; every timestamp must be UTC-aware")

    in_utc = moment.astimezone(UTC)
    return in_utc.replace(microsecond=in_utc.microsecond // 1000 * 1000)


def format_timestamp(moment: datetime) -> str:
    return to_utc_millis(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise CursorError(f"{field} must be an ISO 8601 timestamp such as 2016-04-12T08:00:00.000Z, got {text!r}") from None

    if moment.tzinfo is None:
        raise CursorError(f"{field} must carry a UTC offset or Z, got {text!r}")

    return to_utc_millis(moment)


def _parse_object_id(text: Any, field: str) -> ObjectId:
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        raise CursorError(f"{field} must be a 24-character hex ObjectId, got {text!r}") from None


@dataclass(frozen=True, order=True)
class Position:
    """A point in the `(updatedAt, _id)` order of `healthmetrics` documents."""

    updated_at: datetime
    doc_id: ObjectId

    @classmethod
    def at_time(cls, moment: datetime) -> "Position":
        """Return the position just before every document stamped at or after `moment`."""

        return cls(to_utc_millis(moment), MIN_OBJECT_ID)

    @classmethod
    def from_document(cls, document: dict) -> "Position":
        return cls(to_utc_millis(document["updatedAt"]), document["_id"])

    def to_json(self) -> dict:
        return {"updatedAt": format_timestamp(self.updated_at), "_id": str(self.doc_id)}

    @classmethod
    def from_json(cls, value: Any, field: str) -> "Position":
        if not isinstance(value, dict):
            raise CursorError(f"{field} must be an object with updatedAt and _id, got {value!r}")

        updated_at = parse_timestamp(value.get("updatedAt"), f"{field}.updatedAt")
        doc_id = _parse_object_id(value.get("_id", str(MIN_OBJECT_ID)), f"{field}._id")
        return cls(updated_at, doc_id)

    def after_filter(self) -> dict:
        """Return the MongoDB filter for documents strictly after this position."""

        return {
            "$or": [
                {"updatedAt": {"$gt": self.updated_at}},
                {"updatedAt": self.updated_at, "_id": {"$gt": self.doc_id}},
            ]
        }

    def at_or_before_filter(self) -> dict:
        """Return the MongoDB filter for documents at or before this position."""

        return {
            "$or": [
                {"updatedAt": {"$lt": self.updated_at}},
                {"updatedAt": self.updated_at, "_id": {"$lte": self.doc_id}},
            ]
        }


@dataclass(frozen=True)
class Window:
    """The documents with `start < (updatedAt, _id) <= end`: start exclusive, end inclusive."""

    start: Position
    end: Position
    doc_count: int

    def mongo_filter(self) -> dict:
        return {"$and": [self.start.after_filter(), self.end.at_or_before_filter()]}

    def describe(self) -> str:
        start = self.start.to_json()
        end = self.end.to_json()
        return f"({start['updatedAt']} {start['_id']}, {end['updatedAt']} {end['_id']}]"


@dataclass(frozen=True)
class InFlight:
    """The one window that has been requested but not yet committed."""

    window_id: str
    attempt: int
    window: Window
    requested_at: datetime
    retry_at: datetime | None = None
    last_failed_run_id: str | None = None

    @property
    def run_key(self) -> str:
        return f"window-{self.window_id}-attempt-{self.attempt}"

    def to_json(self) -> dict:
        return {
            "windowId": self.window_id,
            "attempt": self.attempt,
            "start": self.window.start.to_json(),
            "end": self.window.end.to_json(),
            "docCount": self.window.doc_count,
            "requestedAt": format_timestamp(self.requested_at),
            "retryAt": format_timestamp(self.retry_at) if self.retry_at else None,
            "lastFailedRunId": self.last_failed_run_id,
        }

    @classmethod
    def from_json(cls, value: Any) -> "InFlight":
        if not isinstance(value, dict):
            raise CursorError(f"inFlight must be an object or null, got {value!r}")

        window_id = value.get("windowId")
        if not isinstance(window_id, str) or not window_id:
            raise CursorError(f"inFlight.windowId must be a non-empty string, got {window_id!r}")

        attempt = value.get("attempt")
        if not isinstance(attempt, int) or attempt < 1:
            raise CursorError(f"inFlight.attempt must be a positive integer, got {attempt!r}")

        doc_count = value.get("docCount", 0)
        if not isinstance(doc_count, int) or doc_count < 0:
            raise CursorError(f"inFlight.docCount must be a non-negative integer, got {doc_count!r}")

        window = Window(
            start=Position.from_json(value.get("start"), "inFlight.start"),
            end=Position.from_json(value.get("end"), "inFlight.end"),
            doc_count=doc_count,
        )
        if window.end < window.start:
            raise CursorError("inFlight.end must not be before inFlight.start")

        retry_at = value.get("retryAt")
        return cls(
            window_id=window_id,
            attempt=attempt,
            window=window,
            requested_at=parse_timestamp(value.get("requestedAt"), "inFlight.requestedAt"),
            retry_at=parse_timestamp(retry_at, "inFlight.retryAt") if retry_at else None,
            last_failed_run_id=value.get("lastFailedRunId"),
        )


@dataclass(frozen=True)
class SensorCursor:
    """The committed watermark, the window in flight (if any) and a count of committed windows."""

    committed: Position
    in_flight: InFlight | None = None
    windows_committed: int = 0

    @classmethod
    def initial(cls, now: datetime, lookback_days: int) -> "SensorCursor":
        return cls(committed=Position.at_time(now - timedelta(days=lookback_days)))

    @classmethod
    def parse(cls, text: str | None, now: datetime, lookback_days: int) -> "SensorCursor":
        """Read the stored cursor; no cursor (first run or deleted) starts `lookback_days` before now.

        Besides the JSON document, a bare ISO timestamp is accepted, which is what an operator
        types into `dagster sensor cursor --set`: processing restarts at that instant.
        """

        if text is None or not text.strip():
            return cls.initial(now, lookback_days)

        stripped = text.strip()
        if not stripped.startswith("{"):
            return cls(committed=Position.at_time(parse_timestamp(stripped, "cursor")))

        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise CursorError(f"cursor is not valid JSON: {error}") from None

        in_flight = document.get("inFlight")
        windows_committed = document.get("windowsCommitted", 0)
        if not isinstance(windows_committed, int) or windows_committed < 0:
            raise CursorError(f"windowsCommitted must be a non-negative integer, got {windows_committed!r}")

        return cls(
            committed=Position.from_json(document.get("committed"), "committed"),
            in_flight=InFlight.from_json(in_flight) if in_flight is not None else None,
            windows_committed=windows_committed,
        )

    def to_json(self) -> str:
        document = {
            "committed": self.committed.to_json(),
            "inFlight": self.in_flight.to_json() if self.in_flight else None,
            "windowsCommitted": self.windows_committed,
        }
        return json.dumps(document, sort_keys=True)

    def plan(self, end: Position, doc_count: int, now: datetime) -> "SensorCursor":
        """Put the window from the committed position to `end` in flight, as attempt 1."""

        if self.in_flight is not None:
            raise CursorError(f"window {self.in_flight.window_id} is still in flight; commit or retry it first")

        if end <= self.committed:
            raise CursorError("a window must end after the committed position")

        window = Window(start=self.committed, end=end, doc_count=doc_count)
        in_flight = InFlight(
            window_id=uuid.uuid4().hex[:16],
            attempt=1,
            window=window,
            requested_at=to_utc_millis(now),
        )
        return replace(self, in_flight=in_flight)

    def commit(self) -> "SensorCursor":
        """Move the committed position to the end of the window in flight, whose run succeeded."""

        if self.in_flight is None:
            raise CursorError("there is no window in flight to commit")

        return SensorCursor(
            committed=self.in_flight.window.end,
            in_flight=None,
            windows_committed=self.windows_committed + 1,
        )

    def record_failure(self, run_id: str, now: datetime, backoff_seconds: float) -> "SensorCursor":
        """Schedule the next attempt of the failed window after an exponential backoff.

        Attempt n waits `backoff_seconds * 2 ** (n - 1)` after its failure was seen.
        """

        if self.in_flight is None:
            raise CursorError("there is no window in flight to retry")

        delay = backoff_seconds * 2 ** (self.in_flight.attempt - 1)
        retry_at = to_utc_millis(now + timedelta(seconds=delay))
        in_flight = replace(self.in_flight, retry_at=retry_at, last_failed_run_id=run_id)
        return replace(self, in_flight=in_flight)

    def next_attempt(self, now: datetime) -> "SensorCursor":
        """Request the window in flight again under the next attempt number and run key."""

        if self.in_flight is None:
            raise CursorError("there is no window in flight to retry")

        in_flight = replace(
            self.in_flight,
            attempt=self.in_flight.attempt + 1,
            requested_at=to_utc_millis(now),
            retry_at=None,
        )
        return replace(self, in_flight=in_flight)


def poll_upper_bound(now: datetime, settle_seconds: float) -> datetime:
    """Return the newest `updatedAt` a window may include.

    Application servers stamp `updatedAt` before the write becomes visible, so the newest
    `settle_seconds` are left for a later tick. This also keeps documents stamped in the future
    by a wrong client clock out of the window until their time comes.
    """

    return to_utc_millis(now - timedelta(seconds=settle_seconds))
