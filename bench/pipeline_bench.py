"""Benchmark the pipeline on the real Fitbit exports and print its figures.

Loads the exports into a fresh database, then times one sensor tick on its own, one tick plus the
run of the whole backlog, one edit of an old day and its run, and a reconciliation run.

    MONGO_URI=mongodb://127.0.0.1:27017/ python bench/pipeline_bench.py [FITBIT_DIR]

Without MONGO_URI it starts the embedded server in a temporary folder. The database it creates,
`hs_bench_<random>`, is dropped at the end.
"""

import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pymongo
from dagster import DagsterInstance, build_sensor_context

from healthstream_assets import contract
from healthstream_assets.definitions import build_definitions, policy_from_settings
from healthstream_assets.embedded_server import EmbeddedServer
from healthstream_assets.fitbit import fitbit_user_id, load_fitbit
from healthstream_assets.reconciliation import RECONCILIATION_JOB_NAME
from healthstream_assets.resources.mongo import ensure_indexes
from healthstream_assets.run_once import run_once
from healthstream_assets.sensors import SENSOR_NAME
from healthstream_assets.settings import Settings, mask_uri

REPO_ROOT = Path(__file__).resolve().parents[1]


def timed(label: str, action):
    started = time.perf_counter()
    result = action()
    print(f"{label:<44} {time.perf_counter() - started:8.2f} s")
    return result


def main() -> None:
    fitbit_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT.parent / "shared" / "data" / "fitbit"
    scratch = Path(tempfile.mkdtemp(prefix="hs-bench-"))

    server = None
    uri = os.environ.get("MONGO_URI")
    if not uri:
        server = EmbeddedServer(scratch / "server", REPO_ROOT / ".tools")
        uri = server.start()

    db_name = f"hs_bench_{uuid.uuid4().hex[:8]}"
    client = pymongo.MongoClient(uri, tz_aware=True)
    db = client[db_name]
    print(f"server {mask_uri(uri)}, database {db_name}, {os.cpu_count()} cores")

    try:
        ensure_indexes(db)
        report = timed("load Fitbit exports", lambda: load_fitbit(fitbit_dir, db))
        print(f"  {report.documents_inserted} documents, {report.users} users")

        settings = Settings.from_env(
            {
                "MONGO_URI": uri,
                "MONGO_DB_NAME": db_name,
                "HEALTHSTREAM_STATE_DIR": str(scratch / "state"),
                "HEALTHSTREAM_TOOLS_DIR": str(REPO_ROOT / ".tools"),
                "SETTLE_SECONDS": "0",
            }
        )
        defs = build_definitions(settings)
        policy = policy_from_settings(settings)
        instance = DagsterInstance.ephemeral()

        sensor_def = defs.resolve_sensor_def(SENSOR_NAME)

        def tick_only():
            with build_sensor_context(instance=instance, resources={"mongo": defs.resources["mongo"]}) as context:
                return sensor_def.evaluate_tick(context)

        timed("sensor tick (plans the backlog window)", tick_only)

        first = timed("tick + run of the whole backlog", lambda: run_once(defs, instance, None, policy))
        print(f"  run succeeded: {first.run_succeeded}, analytics: {db[contract.ANALYTICS].count_documents({})}")

        db[contract.HEALTH_METRICS].update_one(
            {"userId": fitbit_user_id("1503960366"), "date": datetime(2016, 5, 1, tzinfo=UTC)},
            {"$set": {"metrics.steps": 30000, "updatedAt": datetime.now(UTC)}},
        )
        second = timed("tick + run of one edited old day", lambda: run_once(defs, instance, first.cursor, policy))
        print(f"  run succeeded: {second.run_succeeded}")

        job = defs.resolve_job_def(RECONCILIATION_JOB_NAME)
        reconciled = timed("reconciliation run", lambda: job.execute_in_process(instance=instance))
        print(f"  run succeeded: {reconciled.success}")
    finally:
        client.drop_database(db_name)
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
