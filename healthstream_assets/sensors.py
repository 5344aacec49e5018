"""The sensor that polls `healthmetrics` and requests one run per window of changes."""

from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.storage.dagster_run import DagsterRun
from pymongo.errors import PyMongoError

from healthstream_assets.cursor import CursorError, SensorCursor, format_timestamp, poll_upper_bound
from healthstream_assets.jobs import ATTEMPT_TAG, WINDOW_ID_TAG, window_job, window_run_config, window_run_tags
from healthstream_assets.resources.mongo import MongoResource

SENSOR_NAME = "healthmetrics_window_sensor"

FINISHED_UNSUCCESSFULLY = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)

# Set by Dagster on a run re-executed from another run.
PARENT_RUN_ID_TAG = "dagster/parent_run_id"


@dataclass(frozen=True)
class WindowPolicy:
    """Window sizing and retry limits of the sensor."""

    lookback_days: int = 30
    max_batch_docs: int = 5000
    settle_seconds: float = 5.0
    max_run_attempts: int = 5
    retry_backoff_seconds: float = 30.0


@dataclass(frozen=True)
class TickDecision:
    """Outcome of one evaluation: the new cursor, and either a run request or the skip reason."""

    cursor: SensorCursor
    run_request: RunRequest | None = None
    skip_reason: str | None = None
    committed: bool = False
    failed: bool = False


def latest_window_run(context_instance, window_id: str) -> DagsterRun | None:
    """Return the newest run of the window, including re-executions launched from the UI."""

    runs = context_instance.get_runs(filters=RunsFilter(tags={WINDOW_ID_TAG: window_id}), limit=1)
    return runs[0] if runs else None


def _request(state: SensorCursor) -> RunRequest:
    in_flight = state.in_flight
    return RunRequest(
        run_key=in_flight.run_key,
        run_config=window_run_config(in_flight),
        tags=window_run_tags(in_flight),
    )


def _is_earlier_failed_attempt(run: DagsterRun, current_attempt: int) -> bool:
    """Return True for a failed run of an earlier attempt that is not an operator's re-execution.

    A re-execution from the UI copies the tags of the run it repeats, attempt number included, so
    its status counts for the window whatever attempt it names.
    """

    if run.status not in FINISHED_UNSUCCESSFULLY or PARENT_RUN_ID_TAG in run.tags:
        return False

    try:
        run_attempt = int(run.tags.get(ATTEMPT_TAG, "0"))
    except ValueError:
        run_attempt = 0
    return run_attempt < current_attempt


def settle_in_flight(state: SensorCursor, run: DagsterRun | None, now: datetime, policy: WindowPolicy) -> TickDecision:
    """Apply the rules for the window in flight given its newest run.

    Succeeded: commit the window. Failed or canceled: retry after a backoff under a new run key,
    up to `max_run_attempts`, then hold the watermark until an operator acts. Not finished: wait.
    """

    in_flight = state.in_flight

    if run is None or _is_earlier_failed_attempt(run, in_flight.attempt):
        # The current attempt has no run: its record was deleted, the instance was wiped, or the
        # attempt was planned outside the daemon. Request the window again under a new run key.
        next_state = state.next_attempt(now)
        return TickDecision(cursor=next_state, run_request=_request(next_state))

    if run.status == DagsterRunStatus.SUCCESS:
        return TickDecision(cursor=state.commit(), committed=True)

    if run.status in FINISHED_UNSUCCESSFULLY:
        if in_flight.last_failed_run_id != run.run_id:
            state = state.record_failure(run.run_id, now, policy.retry_backoff_seconds)
            in_flight = state.in_flight

        if in_flight.attempt >= policy.max_run_attempts:
            reason = (
                f"window {in_flight.window_id} {in_flight.window.describe()} failed {in_flight.attempt} times, "
                f"last in run {run.run_id}; the watermark stays before it. Fix the cause, then re-execute "
                f"that run from the UI or reset the sensor cursor"
            )
            return TickDecision(cursor=state, skip_reason=reason, failed=True)

        if now < in_flight.retry_at:
            reason = (
                f"window {in_flight.window_id} failed in run {run.run_id} (attempt {in_flight.attempt}); "
                f"retrying after {format_timestamp(in_flight.retry_at)}"
            )
            return TickDecision(cursor=state, skip_reason=reason, failed=True)

        next_state = state.next_attempt(now)
        return TickDecision(cursor=next_state, run_request=_request(next_state), failed=True)

    reason = f"window {in_flight.window_id} is still in run {run.run_id} ({run.status.value})"
    return TickDecision(cursor=state, skip_reason=reason)


def plan_next_window(state: SensorCursor, mongo: MongoResource, now: datetime, policy: WindowPolicy) -> TickDecision:
    """Request a run for the documents after the watermark, or skip when there are none."""

    until = poll_upper_bound(now, policy.settle_seconds)
    found = mongo.find_window_end(state.committed, until, policy.max_batch_docs)
    if found is None:
        committed = state.committed.to_json()
        reason = (
            f"no documents updated after {committed['updatedAt']} {committed['_id']} "
            f"up to {format_timestamp(until)}"
        )
        return TickDecision(cursor=state, skip_reason=reason)

    end, doc_count = found
    next_state = state.plan(end, doc_count, now)
    return TickDecision(cursor=next_state, run_request=_request(next_state))


def evaluate_tick(
    cursor_text: str | None, instance, mongo: MongoResource, policy: WindowPolicy, now: datetime | None = None
) -> TickDecision:
    """Decide one tick: settle the window in flight, then plan the next one if none is left in flight."""

    now = now or datetime.now(UTC)
    try:
        state = SensorCursor.parse(cursor_text, now, policy.lookback_days)
    except CursorError as error:
        raise CursorError(
            f"{error}. Set a valid cursor with `dagster sensor cursor {SENSOR_NAME} --set <ISO timestamp>` "
            f"or clear it with `--delete`"
        ) from None

    committed = False
    if state.in_flight is not None:
        run = latest_window_run(instance, state.in_flight.window_id)
        decision = settle_in_flight(state, run, now, policy)
        if not decision.committed:
            return decision
        state = decision.cursor
        committed = True

    decision = plan_next_window(state, mongo, now, policy)
    return TickDecision(
        cursor=decision.cursor,
        run_request=decision.run_request,
        skip_reason=decision.skip_reason,
        committed=committed,
    )


def build_window_sensor(policy: WindowPolicy, minimum_interval_seconds: int) -> SensorDefinition:
    @sensor(
        name=SENSOR_NAME,
        job=window_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Polls healthmetrics for documents past the (updatedAt, _id) watermark kept in this cursor "
            "and requests one run per window; the watermark moves only after the window's run succeeded."
        ),
    )
    def healthmetrics_window_sensor(context: SensorEvaluationContext, mongo: MongoResource) -> SensorResult:
        previous = context.cursor
        try:
            decision = evaluate_tick(previous, context.instance, mongo, policy)
        except PyMongoError as error:
            # pymongo messages name the host and port, never the password.
            message = f"MongoDB at {mongo.masked_uri()} could not be queried, cursor unchanged: {error}"
            context.log.warning(message)
            return SensorResult(skip_reason=SkipReason(message), cursor=previous)

        if decision.committed:
            context.log.info(f"committed watermark {decision.cursor.committed.to_json()}")

        if decision.failed:
            context.log.error(decision.skip_reason or f"retrying window {decision.cursor.in_flight.window_id}")

        if decision.run_request is not None:
            in_flight = decision.cursor.in_flight
            context.log.info(
                f"requesting window {in_flight.window_id} attempt {in_flight.attempt}: "
                f"{in_flight.window.describe()}, {in_flight.window.doc_count} documents"
            )
            return SensorResult(run_requests=[decision.run_request], cursor=decision.cursor.to_json())

        return SensorResult(skip_reason=SkipReason(decision.skip_reason), cursor=decision.cursor.to_json())

    return healthmetrics_window_sensor
