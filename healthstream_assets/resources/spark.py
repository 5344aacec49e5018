"""The Spark session configuration: local mode by default, a cluster or Spark Connect by setting."""

import logging
import os
import sys
from pathlib import Path

from dagster_pyspark import PySparkResource
from pyspark.sql import SparkSession

from healthstream_assets.settings import Settings


IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="main"/>
  <caches defaultCacheDir="{cache}"/>
  <resolvers>
    <chain name="main">
      <ibiblio name="local-m2" m2compatible="true" root="file://{m2}"/>
      <ibiblio name="maven" m2compatible="true" root="{repository}"/>
    </chain>
  </resolvers>
</ivysettings>
"""


def write_ivy_settings(settings: Settings) -> Path:
    """Write the Ivy settings that resolve the connector from the local Maven cache and one repository.

    Spark's default resolver chain also queries repos.spark-packages.org, a host these machines may
    not reach; this file replaces that chain with MAVEN_REPOSITORY_URL (Maven Central by default).
    """

    path = settings.tools_dir / "ivysettings.xml"
    text = IVY_SETTINGS.format(
        cache=settings.tools_dir / "ivy" / "cache",
        m2=Path.home() / ".m2" / "repository",
        repository=settings.maven_repository_url,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def spark_config(settings: Settings) -> dict[str, str]:
    """Return the Spark properties for the configured master, with the MongoDB connector."""

    config = {
        "spark.app.name": "healthstream",
        "spark.jars.packages": settings.spark_connector,
        "spark.jars.ivySettings": str(write_ivy_settings(settings)),
        "spark.jars.ivy": str(settings.tools_dir / "ivy"),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "8",
        "spark.ui.enabled": "false",
        # The connector's `connection.uri` option can carry a password: redact it in plans and logs.
        "spark.sql.redaction.options.regex": "(?i)url|uri|password",
        "spark.redaction.regex": "(?i)secret|password|token|access[.]key|uri",
        "spark.ui.showConsoleProgress": "false",
    }

    if settings.spark_remote:
        config["spark.remote"] = settings.spark_remote
        return config

    config["spark.master"] = settings.spark_master
    if settings.spark_master.startswith("local"):
        # Without these, a local driver binds to the machine's external address.
        config["spark.driver.host"] = "127.0.0.1"
        config["spark.driver.bindAddress"] = "127.0.0.1"

    return config


def prepare_spark_environment() -> None:
    """Set the environment a local SparkSession needs before it starts.

    Python workers must run this interpreter: under `dagster dev` the `python3` on PATH can be
    another version, and Spark then fails with PYTHON_VERSION_MISMATCH. `spark.pyspark.python`
    does not fix that; the PYSPARK_PYTHON variable does.
    """

    # py4j logs every command sent to the JVM at DEBUG, connector options (and URIs) included.
    logging.getLogger("py4j").setLevel(logging.INFO)

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def build_pyspark_resource(settings: Settings) -> PySparkResource:
    prepare_spark_environment()
    return PySparkResource(spark_config=spark_config(settings))


def get_or_create_session(settings: Settings) -> SparkSession:
    """Return the process's SparkSession, started with the same properties as the resource's."""

    prepare_spark_environment()
    builder = SparkSession.builder
    for key, value in spark_config(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
