"""One sensor evaluation and, when it requests a run, that run, in this process.

This is the non-interactive form of what `dagster dev` does on each tick, for scripts and tests.
The caller owns the cursor text: the CLI reads and writes the sensor's stored cursor, tests keep
it in a variable.
"""

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import DagsterInstance, DagsterRunStatus, Definitions, RunsFilter, build_sensor_context

from healthstream_assets.cursor import SensorCursor
from healthstream_assets.embedded_server import process_alive
from healthstream_assets.jobs import WINDOW_JOB_NAME
from healthstream_assets.sensors import SENSOR_NAME, WindowPolicy


# Tags recording which process executes an in-process run, so a later call can tell a run whose
# process was killed from one still going.
PID_TAG = "healthstream/pid"
HOST_TAG = "healthstream/host"


def _process_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_dead_in_process_runs(instance: DagsterInstance) -> list[str]:
    """Mark as failed the in-process runs of this host that are STARTED but whose process is gone.

    Such a run (its process killed mid-write) would otherwise stay STARTED for good: the sensor
    would wait for it, and the writer concurrency slot of `dagster dev` would stay taken.
    Returns the ids of the runs marked failed.
    """

    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED], tags={HOST_TAG: host})):
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and pid != os.getpid() and not process_alive(pid):
            instance.report_run_failed(run, message=f"the process {pid} running it on {host} is gone")
            failed.append(run.run_id)
    return failed


@dataclass(frozen=True)
class RunOnceOutcome:
    """The cursor after the tick (and its run), with what happened."""

    cursor: str
    skip_reason: str | None
    run_id: str | None
    run_succeeded: bool | None
    run_config: dict | None
    window_failed: bool = False


def run_once(defs: Definitions, instance: DagsterInstance, cursor: str | None, policy: WindowPolicy) -> RunOnceOutcome:
    """Evaluate the sensor once with `cursor`; run the requested window in-process and settle it.

    A succeeded run is committed at once, as the next tick would; a failed one is recorded, and
    the next evaluation retries it after the backoff.
    """

    fail_dead_in_process_runs(instance)

    sensor_def = defs.resolve_sensor_def(SENSOR_NAME)
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"mongo": defs.resources["mongo"]},
        definitions=defs,
    ) as context:
        tick = sensor_def.evaluate_tick(context)

    if not tick.run_requests:
        stored = tick.cursor if tick.cursor is not None else cursor
        in_flight = SensorCursor.parse(stored, datetime.now(UTC), policy.lookback_days).in_flight if stored else None
        return RunOnceOutcome(
            cursor=stored,
            skip_reason=tick.skip_message,
            run_id=None,
            run_succeeded=None,
            run_config=None,
            window_failed=in_flight is not None and in_flight.last_failed_run_id is not None,
        )

    request = tick.run_requests[0]
    job = defs.resolve_job_def(WINDOW_JOB_NAME)
    result = job.execute_in_process(
        run_config=request.run_config,
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key, **_process_tags()},
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
