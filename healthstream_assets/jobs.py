"""The job the sensor requests: every window asset, in one process so the steps share one SparkSession."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from healthstream_assets.assets import WINDOW_ASSETS
from healthstream_assets.cursor import InFlight

WINDOW_JOB_NAME = "healthmetrics_window_job"

WINDOW_ID_TAG = "healthstream/window_id"
ATTEMPT_TAG = "healthstream/attempt"
WINDOW_START_TAG = "healthstream/window_start"
WINDOW_END_TAG = "healthstream/window_end"

# Runs carrying this tag write `analytics`; dagster.yaml limits them to one at a time, so a
# reconciliation never interleaves with a window run.
ANALYTICS_WRITER_TAG = "healthstream/analytics_writer"
ANALYTICS_WRITER_TAGS = {ANALYTICS_WRITER_TAG: "true"}

window_job = define_asset_job(
    name=WINDOW_JOB_NAME,
    selection=AssetSelection.assets(*WINDOW_ASSETS),
    executor_def=in_process_executor,
    tags=ANALYTICS_WRITER_TAGS,
    description="Process one window of healthmetrics changes into rolling averages and analytics.",
)


def window_run_config(in_flight: InFlight) -> dict:
    window = in_flight.window
    start = window.start.to_json()
    end = window.end.to_json()
    return {
        "ops": {
            "new_health_metrics": {
                "config": {
                    "window_id": in_flight.window_id,
                    "attempt": in_flight.attempt,
                    "start_updated_at": start["updatedAt"],
                    "start_id": start["_id"],
                    "end_updated_at": end["updatedAt"],
                    "end_id": end["_id"],
                    "doc_count": window.doc_count,
                }
            }
        }
    }


def window_run_tags(in_flight: InFlight) -> dict[str, str]:
    window = in_flight.window
    return {
        WINDOW_ID_TAG: in_flight.window_id,
        ATTEMPT_TAG: str(in_flight.attempt),
        WINDOW_START_TAG: f"{window.start.to_json()['updatedAt']} {window.start.doc_id}",
        WINDOW_END_TAG: f"{window.end.to_json()['updatedAt']} {window.end.doc_id}",
    }
