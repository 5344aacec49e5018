"""Runtime settings read from the environment or a `.env` file in the working directory."""

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

DEFAULT_DB_NAME = "health_metrics"

# Spark 4 needs the Scala 2.13 build of the connector. The 11.x line (built for Spark 4) is not
# served by every Maven mirror; 10.5.0 loads and runs on pyspark 4.3 for the reads and upserts
# used here, so it is the default and SPARK_MONGO_CONNECTOR overrides it.
DEFAULT_SPARK_CONNECTOR = "org.mongodb.spark:mongo-spark-connector_2.13:10.5.0"

# The connector's default partitioner samples the collection with `$sample`, which FerretDB 1.x
# does not implement. One partition per read works on every server; a real MongoDB deployment
# with large histories can switch to SamplePartitioner through SPARK_MONGO_PARTITIONER.
DEFAULT_PARTITIONER = "com.mongodb.spark.sql.connector.read.partitioner.SinglePartitionPartitioner"

# Any scheme, so a mistyped URI (http://user:pw@...) is masked in the error that rejects it. The
# password may contain "@" (unescaped), so it runs to the last "@" before the path.
_URI_PASSWORD = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<password>[^/]*)@")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the setting and the expected value."""


def mask_uri(uri: str) -> str:
    """Return the URI with its password replaced by `***`, safe to print or log."""

    return _URI_PASSWORD.sub(r"\g<scheme>\g<user>:***@", uri)


def _read_int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default

    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None

    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")

    return value


def _read_float(env: dict[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default

    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None

    if not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")

    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")

    return value


def _read_cron(env: dict[str, str]) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    raw = env.get("RECONCILE_CRON", "").strip() or "0 3 * * *"
    if not is_valid_cron_string(raw):
        raise SettingsError(f"RECONCILE_CRON must be a cron expression such as '0 3 * * *', got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Every knob of the product, each named after its environment variable.

    `mongo_uri` is None when the embedded server should be used. Paths are absolute.
    """

    mongo_uri: str | None
    mongo_db_name: str
    batch_interval_seconds: int
    lookback_days: int
    max_batch_docs: int
    settle_seconds: float
    max_run_attempts: int
    retry_backoff_seconds: float
    spark_master: str
    spark_remote: str | None
    spark_connector: str
    spark_partitioner: str
    state_dir: Path
    tools_dir: Path
    parquet_base_path: str
    embedded_port: int | None
    reconcile_cron: str
    maven_repository_url: str
    # True when MONGO_URI was read from the process environment, so Dagster can reference the
    # variable instead of storing its value (and password) in resource configuration.
    mongo_uri_in_environment: bool = False

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.state_dir / "dagster_home")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        """Read settings from `env` (default: `.env` in the working directory, then os.environ)."""

        from_process_environment = env is None
        if env is None:
            load_dotenv(Path.cwd() / ".env", override=False)
            env = dict(os.environ)

        mongo_uri = env.get("MONGO_URI", "").strip() or None
        if mongo_uri is not None and not mongo_uri.startswith(("mongodb://", "mongodb+srv://")):
            raise SettingsError(
                f"MONGO_URI must start with mongodb:// or mongodb+srv://, got {mask_uri(mongo_uri)!r}"
            )

        db_name = env.get("MONGO_DB_NAME", "").strip() or DEFAULT_DB_NAME
        if re.search(r"[/\\. \"$]", db_name):
            raise SettingsError(f"MONGO_DB_NAME must not contain /\\. \"$ or spaces, got {db_name!r}")

        state_dir = Path(env.get("HEALTHSTREAM_STATE_DIR", "").strip() or Path.cwd() / ".state").resolve()
        tools_dir = Path(env.get("HEALTHSTREAM_TOOLS_DIR", "").strip() or Path.cwd() / ".tools").resolve()
        parquet_base_path = env.get("PARQUET_BASE_PATH", "").strip() or str(state_dir / "parquet")

        embedded_port_raw = env.get("EMBEDDED_MONGO_PORT", "").strip()
        embedded_port = _read_int(env, "EMBEDDED_MONGO_PORT", 0, 1) if embedded_port_raw else None
        if embedded_port is not None and embedded_port > 65535:
            raise SettingsError(f"EMBEDDED_MONGO_PORT must be a TCP port (1-65535), got {embedded_port}")

        return cls(
            mongo_uri=mongo_uri,
            mongo_db_name=db_name,
            batch_interval_seconds=_read_int(env, "BATCH_INTERVAL_SECONDS", 30, 1),
            lookback_days=_read_int(env, "LOOKBACK_DAYS", 30, 0),
            max_batch_docs=_read_int(env, "MAX_BATCH_DOCS", 5000, 1),
            settle_seconds=_read_float(env, "SETTLE_SECONDS", 5.0, 0.0),
            max_run_attempts=_read_int(env, "MAX_RUN_ATTEMPTS", 5, 1),
            retry_backoff_seconds=_read_float(env, "RETRY_BACKOFF_SECONDS", 30.0, 0.0),
            spark_master=env.get("SPARK_MASTER", "").strip() or "local[*]",
            spark_remote=env.get("SPARK_REMOTE", "").strip() or None,
            spark_connector=env.get("SPARK_MONGO_CONNECTOR", "").strip() or DEFAULT_SPARK_CONNECTOR,
            spark_partitioner=env.get("SPARK_MONGO_PARTITIONER", "").strip() or DEFAULT_PARTITIONER,
            state_dir=state_dir,
            tools_dir=tools_dir,
            parquet_base_path=parquet_base_path,
            embedded_port=embedded_port,
            reconcile_cron=_read_cron(env),
            maven_repository_url=env.get("MAVEN_REPOSITORY_URL", "").strip() or "https://repo1.maven.org/maven2/",
            mongo_uri_in_environment=from_process_environment and mongo_uri is not None,
        )
