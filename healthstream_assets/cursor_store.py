"""Read and write the sensor's stored cursor in the Dagster instance, for `healthstream run-once`.

NOTE: Dagster has no public API to set a sensor cursor from Python, so an existing sensor state
is read and updated through the instance's scheduling storage (dagster 1.13). When the sensor has
no stored state yet, the `dagster sensor cursor --set` command creates it, as an operator would.
"""

import subprocess
import sys

from dagster import DagsterInstance
from dagster._core.scheduler.instigation import InstigatorState, InstigatorType, SensorInstigatorData

from healthstream_assets.sensors import SENSOR_NAME


def _sensor_state(instance: DagsterInstance) -> InstigatorState | None:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == SENSOR_NAME:
            return state
    return None


def read_cursor(instance: DagsterInstance) -> str | None:
    state = _sensor_state(instance)
    if state is None or state.instigator_data is None:
        return None
    return state.instigator_data.cursor


def write_cursor(instance: DagsterInstance, cursor: str, workspace_file: str = "workspace.yaml") -> None:
    state = _sensor_state(instance)
    if state is None:
        command = [sys.executable, "-m", "dagster", "sensor", "cursor", SENSOR_NAME, "--set", cursor, "-w", workspace_file]
        subprocess.run(command, check=True, capture_output=True, text=True)
        return

    data = state.instigator_data
    instance.update_instigator_state(
        state.with_data(
            SensorInstigatorData(
                last_tick_timestamp=data.last_tick_timestamp if data else None,
                last_run_key=data.last_run_key if data else None,
                min_interval=data.min_interval if data else None,
                cursor=cursor,
                last_tick_start_timestamp=data.last_tick_start_timestamp if data else None,
                last_sensor_start_timestamp=data.last_sensor_start_timestamp if data else None,
                sensor_type=data.sensor_type if data else None,
            )
        )
    )
