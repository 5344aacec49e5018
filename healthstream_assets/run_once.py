"""One sensor evaluation and, when it requests a run, that run, in this process.

This is the non-interactive form of what `dagster dev` does on each tick, for scripts and tests.
The caller owns the cursor text: the CLI reads and writes the sensor's stored cursor, tests keep
it in a variable.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import DagsterInstance, Definitions, build_sensor_context

from healthstream_assets.cursor import SensorCursor
from healthstream_assets.jobs import WINDOW_JOB_NAME
from healthstream_assets.sensors import SENSOR_NAME, WindowPolicy


@dataclass(frozen=True)
class RunOnceOutcome:
    """The cursor after the tick (and its run), with what happened."""

    cursor: str
    skip_reason: str | None
    run_id: str | None
    run_succeeded: bool | None
    run_config: dict | None


def run_once(defs: Definitions, instance: DagsterInstance, cursor: str | None, policy: WindowPolicy) -> RunOnceOutcome:
    """Evaluate the sensor once with `cursor`; run the requested window in-process and settle it.

    A succeeded run is committed at once, as the next tick would; a failed one is recorded, and
    the next evaluation retries it after the backoff.
    """

    sensor_def = defs.resolve_sensor_def(SENSOR_NAME)
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"mongo": defs.resources["mongo"]},
        definitions=defs,
    ) as context:
        tick = sensor_def.evaluate_tick(context)

    if not tick.run_requests:
        return RunOnceOutcome(
            cursor=tick.cursor if tick.cursor is not None else cursor,
            skip_reason=tick.skip_message,
            run_id=None,
            run_succeeded=None,
            run_config=None,
        )

    request = tick.run_requests[0]
    job = defs.resolve_job_def(WINDOW_JOB_NAME)
    result = job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key},
        raise_on_error=False,
    )

    now = datetime.now(UTC)
    state = SensorCursor.parse(tick.cursor, now, policy.lookback_days)
    if result.success:
        settled = state.commit()
    else:
        settled = state.record_failure(result.run_id, now, policy.retry_backoff_seconds)

    return RunOnceOutcome(
        cursor=settled.to_json(),
        skip_reason=None,
        run_id=result.run_id,
        run_succeeded=result.success,
        run_config=request.run_config,
    )
