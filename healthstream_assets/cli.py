"""The `healthstream` command line: the embedded server, data loading, one-off runs and `dagster dev`."""

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import PyMongoError

from healthstream_assets import contract
from healthstream_assets.embedded_server import EmbeddedServer, EmbeddedServerError
from healthstream_assets.settings import Settings, SettingsError, mask_uri

DAGSTER_YAML = """\
# Written by healthstream. Telemetry is off because these machines reach no outside host.
telemetry:
  enabled: false
# Runs that write analytics (window runs and reconciliation) go one at a time.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    tag_concurrency_limits:
      - key: healthstream/analytics_writer
        limit: 1
# A run whose worker died (killed, out of memory) would stay STARTED and, holding the writer slot,
# block every later window; the monitoring daemon fails runs older than the maximum runtime.
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  max_runtime_seconds: 7200
  poll_interval_seconds: 60
"""


# Exit code of run-once when the window's run failed, or a failed window waits for its retry or is
# held after its last attempt.
EXIT_WINDOW_FAILED = 2


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _embedded(settings: Settings) -> EmbeddedServer:
    return EmbeddedServer(settings.state_dir, settings.tools_dir, settings.embedded_port)


def _mongo_uri(settings: Settings) -> str:
    """Return MONGO_URI, or the running embedded server's URI."""

    if settings.mongo_uri:
        return settings.mongo_uri

    status = _embedded(settings).status()
    if not status.running:
        raise click.ClickException("MONGO_URI is not set and the embedded server is not running: run `healthstream server start`")
    return status.uri


def _database(settings: Settings) -> pymongo.database.Database:
    """Return the configured database after checking that the server responds."""

    uri = _mongo_uri(settings)
    try:
        client = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10_000)
        client.admin.command("ping")
    except (PyMongoError, ValueError) as error:
        raise click.ClickException(f"MongoDB at {mask_uri(uri)} is unreachable or the URI is invalid: {error}") from None
    return client[settings.mongo_db_name]


def prepare_dagster_home(settings: Settings) -> Path:
    """Create DAGSTER_HOME with a dagster.yaml that turns telemetry off, unless one exists."""

    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def default_fitbit_dir() -> Path:
    return Path(os.environ.get("HEALTHSTREAM_FITBIT_DIR") or Path.cwd().parent / "shared" / "data" / "fitbit")


@click.group()
def main() -> None:
    """healthstream: analytics for the health app's MongoDB metrics, as a Dagster pipeline."""


@main.group()
def server() -> None:
    """Start, stop or inspect the embedded MongoDB-compatible server (FerretDB)."""


@server.command("start")
def server_start() -> None:
    """Start the embedded server (building it once) and print its URI."""

    settings = _settings()
    try:
        uri = _embedded(settings).start()
    except EmbeddedServerError as error:
        raise click.ClickException(str(error)) from None
    click.echo(uri)


@server.command("stop")
def server_stop() -> None:
    """Stop the embedded server."""

    stopped = _embedded(_settings()).stop()
    click.echo("stopped" if stopped else "not running")


@server.command("status")
def server_status() -> None:
    """Print whether the embedded server runs, with its URI and pid."""

    status = _embedded(_settings()).status()
    if status.running:
        click.echo(f"running: {status.uri} (pid {status.pid})")
    else:
        click.echo("not running")
        sys.exit(1)


@main.command("load-fitbit")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False)
def load_fitbit_command(path: Path | None) -> None:
    """Load the Fitbit exports under PATH into healthmetrics and users; loading twice changes nothing."""

    from healthstream_assets.fitbit import FitbitDataError, load_fitbit
    from healthstream_assets.resources.mongo import ensure_indexes

    settings = _settings()
    db = _database(settings)
    ensure_indexes(db)

    try:
        report = load_fitbit(path or default_fitbit_dir(), db)
    except FitbitDataError as error:
        raise click.ClickException(str(error)) from None

    click.echo(
        f"users {report.users}, days {report.days}: {report.documents_inserted} inserted, "
        f"{report.documents_updated} updated, {report.documents_unchanged} unchanged "
        f"(non-wear days {report.non_wear_days}, duplicate sleep rows {report.duplicate_sleep_rows})"
    )


def _parse_user(value: str) -> ObjectId:
    if re.fullmatch(r"\d+", value):
        from healthstream_assets.fitbit import fitbit_user_id

        return fitbit_user_id(value)

    try:
        return ObjectId(value)
    except InvalidId:
        raise click.BadParameter(
            f"expected a 24-character hex ObjectId or a numeric Fitbit Id, got {value!r}", param_hint="--user"
        ) from None


_METRIC_OPTIONS = {
    "steps": "steps",
    "distance": "distance",
    "calories": "calories",
    "active_minutes": "activeMinutes",
    "weight": "weight",
    "sleep_hours": "sleepHours",
    "heart_points": "heartPoints",
    "hydration": "hydration",
}


@main.command("put-metric")
@click.option("--user", "user", required=True, help="The user's ObjectId (24 hex characters) or Fitbit Id.")
@click.option("--date", "day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="Calendar day, YYYY-MM-DD.")
@click.option("--steps", type=int, help="Steps (0-100000).")
@click.option("--distance", type=float, help="Distance in km (0-500).")
@click.option("--calories", type=int, help="Calories in kcal (0-10000).")
@click.option("--active-minutes", type=int, help="Active minutes (0-1440).")
@click.option("--weight", type=float, help="Weight in kg (30-300).")
@click.option("--sleep-hours", type=float, help="Sleep in hours (0-24).")
@click.option("--heart-points", type=int, help="Heart points (0-500).")
@click.option("--hydration", type=float, help="Hydration in litres (0-10).")
@click.option("--source", type=click.Choice(contract.SOURCES), default="manual", show_default=True)
def put_metric(user: str, day: datetime, source: str, **metrics) -> None:
    """Insert or edit one day of a user, as the app does: upsert on {userId, date}, updatedAt now."""

    user_id = _parse_user(user)
    ranges = {metric.name: metric for metric in contract.METRIC_RANGES}

    updates = {}
    for option, value in metrics.items():
        if value is None:
            continue
        name = _METRIC_OPTIONS[option]
        bounds = ranges[name]
        if not bounds.minimum <= value <= bounds.maximum:
            raise click.BadParameter(
                f"must be within {bounds.minimum:g}-{bounds.maximum:g} {bounds.unit}, got {value}",
                param_hint="--" + option.replace("_", "-"),
            )
        updates[f"metrics.{name}"] = value

    if not updates:
        raise click.UsageError("give at least one metric, for example --steps 8000")

    now = datetime.now(UTC)
    date = day.replace(tzinfo=UTC)
    # A calendar day ahead of UTC is still today somewhere (UTC+14), but not two days ahead.
    if date > now + timedelta(days=1):
        raise click.BadParameter(f"{day.date().isoformat()} is in the future", param_hint="--date")

    settings = _settings()
    db = _database(settings)

    result = db[contract.HEALTH_METRICS].update_one(
        {"userId": user_id, "date": date},
        {"$set": {**updates, "source": source, "updatedAt": now}, "$setOnInsert": {"createdAt": now}},
        upsert=True,
    )
    action = "inserted" if result.upserted_id is not None else "updated"
    click.echo(f"{action} {user_id} {date.date().isoformat()}: {', '.join(f'{k[8:]}={v}' for k, v in updates.items())}")


@main.command("run-once")
def run_once_command() -> None:
    """Evaluate the sensor once and run the window it requests, in this process.

    Uses the sensor's stored cursor in DAGSTER_HOME and stores the new one. Exits 0 when the run
    succeeded or nothing was new, 1 when MongoDB is unreachable or a setting is invalid, and 2 when
    the window's run failed or a failed window waits for its retry. Do not use it while
    `healthstream dev` runs the sensor on the same DAGSTER_HOME.
    """

    settings = _settings()

    # definitions reads the settings when imported, so it is imported after they were checked.
    from dagster import DagsterInstance

    from healthstream_assets.cursor_store import read_cursor, write_cursor
    from healthstream_assets.definitions import build_definitions, policy_from_settings
    from healthstream_assets.run_once import run_once

    if not settings.mongo_uri:
        os.environ["MONGO_URI"] = _mongo_uri(settings)
        settings = _settings()

    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(settings))
    defs = build_definitions(settings)

    client = pymongo.MongoClient(settings.mongo_uri, serverSelectionTimeoutMS=10_000)
    try:
        client.admin.command("ping")
    except PyMongoError as error:
        raise click.ClickException(f"MongoDB at {mask_uri(settings.mongo_uri)} is unreachable: {error}") from None
    finally:
        client.close()

    with DagsterInstance.get() as instance:
        cursor = read_cursor(instance)
        outcome = run_once(defs, instance, cursor, policy_from_settings(settings))
        if outcome.cursor is not None:
            write_cursor(instance, outcome.cursor)

    if outcome.run_id is None:
        click.echo(f"nothing to run: {outcome.skip_reason}")
        if outcome.window_failed:
            sys.exit(EXIT_WINDOW_FAILED)
        return

    window = outcome.run_config["ops"]["new_health_metrics"]["config"]
    click.echo(
        f"window {window['window_id']} attempt {window['attempt']}: "
        f"({window['start_updated_at']} {window['start_id']}, {window['end_updated_at']} {window['end_id']}], "
        f"{window['doc_count']} documents; run {outcome.run_id} "
        f"{'succeeded' if outcome.run_succeeded else 'failed'}"
    )
    if not outcome.run_succeeded:
        sys.exit(EXIT_WINDOW_FAILED)


@main.command("dev")
@click.option("--port", default=3000, show_default=True, help="Port of the Dagster webserver on 127.0.0.1.")
@click.option("--fitbit-dir", type=click.Path(file_okay=False, path_type=Path), help="Fitbit exports to load into an empty database.")
def dev(port: int, fitbit_dir: Path | None) -> None:
    """Start the embedded server (unless MONGO_URI is set), load the Fitbit data into an empty database, run `dagster dev`.

    Ctrl+C stops everything this command started.
    """

    settings = _settings()
    server = None

    _stop_on_termination_signals()

    if settings.mongo_uri:
        uri = settings.mongo_uri
    else:
        embedded = _embedded(settings)
        already_running = embedded.status().running
        try:
            uri = embedded.start()
        except EmbeddedServerError as error:
            raise click.ClickException(str(error)) from None

        if already_running:
            click.echo(f"embedded server already running: {uri} (left running on exit)")
        else:
            server = embedded
            click.echo(f"embedded server: {uri}")

    try:
        _load_when_empty(uri, settings, fitbit_dir or default_fitbit_dir())
        _run_dagster_dev(uri, settings, port)
    finally:
        if server is not None:
            server.stop()
            click.echo("embedded server stopped")


def _stop_on_termination_signals() -> None:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so `dev` stops what it started as on Ctrl+C."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def _load_when_empty(uri: str, settings: Settings, fitbit_dir: Path) -> None:
    from healthstream_assets.fitbit import load_fitbit
    from healthstream_assets.resources.mongo import ensure_indexes

    client = pymongo.MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10_000)
    db = client[settings.mongo_db_name]
    ensure_indexes(db)

    if db[contract.HEALTH_METRICS].estimated_document_count() > 0:
        click.echo(f"{settings.mongo_db_name}.{contract.HEALTH_METRICS} already has documents; nothing loaded")
        return

    if not fitbit_dir.exists():
        click.echo(f"no Fitbit data at {fitbit_dir}; starting with an empty database (see --fitbit-dir)")
        return

    report = load_fitbit(fitbit_dir, db)
    client.close()
    click.echo(f"loaded {report.documents_inserted} days of {report.users} Fitbit users from {fitbit_dir}")

    # The sensor leaves documents younger than SETTLE_SECONDS for a later tick; waiting here lets
    # the first tick take the whole load.
    time.sleep(settings.settle_seconds)


def _run_dagster_dev(uri: str, settings: Settings, port: int) -> None:
    home = prepare_dagster_home(settings)
    env = {
        **os.environ,
        "MONGO_URI": uri,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    command = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    click.echo(f"dagster dev on http://127.0.0.1:{port} (MongoDB {mask_uri(uri)}, database {settings.mongo_db_name})")

    # Its own process group, so one signal reaches the webserver, the daemon and the code server.
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        process.wait()
    except KeyboardInterrupt:
        click.echo("stopping dagster dev")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
