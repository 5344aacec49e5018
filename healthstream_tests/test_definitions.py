"""Every definition loads, and `dagster definitions validate` accepts the code location."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions

from healthstream_assets.definitions import build_definitions
from healthstream_assets.jobs import WINDOW_JOB_NAME
from healthstream_assets.sensors import SENSOR_NAME
from healthstream_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate(tmp_path):
    settings = Settings.from_env({"MONGO_URI": "mongodb://user:placeholder@127.0.0.1:1/", "HEALTHSTREAM_STATE_DIR": str(tmp_path)})

    defs = build_definitions(settings)

    Definitions.validate_loadable(defs)
    assert defs.resolve_job_def(WINDOW_JOB_NAME).executor_def.name == "in_process"
    assert defs.resolve_sensor_def(SENSOR_NAME).job_name == WINDOW_JOB_NAME
    assert {key.to_user_string() for key in defs.resolve_all_asset_keys()} == {
        "new_health_metrics",
        "metric_history",
        "user_goals",
        "rolling_averages",
        "analytics",
        "analytics_reconciliation",
    }
    assert defs.resolve_schedule_def("analytics_reconciliation_schedule").cron_schedule == "0 3 * * *"


def test_dagster_definitions_validate_command(tmp_path):
    env = {
        **os.environ,
        "MONGO_URI": "mongodb://user:placeholder@127.0.0.1:1/",
        "DAGSTER_HOME": str(tmp_path),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "placeholder" not in result.stdout + result.stderr
