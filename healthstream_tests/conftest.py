"""Shared fixtures: a real MongoDB-wire server and a real local SparkSession.

With MONGO_URI set, tests use that server and create and drop databases named `hs_test_*` on it.
Without it, one embedded FerretDB is started for the session on a free 127.0.0.1 port.
"""

import os
import uuid
from pathlib import Path

import pymongo
import pytest

from healthstream_assets.embedded_server import EmbeddedServer
from healthstream_assets.resources.spark import get_or_create_session
from healthstream_assets.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory) -> str:
    configured = os.environ.get("MONGO_URI", "").strip()
    if configured:
        yield configured
        return

    tools_dir = Path(os.environ.get("HEALTHSTREAM_TOOLS_DIR") or REPO_ROOT / ".tools")
    server = EmbeddedServer(state_dir=tmp_path_factory.mktemp("ferretdb"), tools_dir=tools_dir)
    uri = server.start()
    yield uri
    server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_uri) -> pymongo.MongoClient:
    client = pymongo.MongoClient(mongo_uri, tz_aware=True, serverSelectionTimeoutMS=10_000)
    yield client
    client.close()


@pytest.fixture(scope="session")
def server_is_ferretdb(mongo_client) -> bool:
    """True on FerretDB, which rejects NaN and infinity and closes the connection on a NaN insert."""

    return "ferretdbVersion" in mongo_client.admin.command("buildInfo")


@pytest.fixture
def mongo_db(mongo_client):
    """A fresh database with a unique name, dropped after the test."""

    db = mongo_client[f"hs_test_{uuid.uuid4().hex[:10]}"]
    yield db
    mongo_client.drop_database(db.name)


@pytest.fixture
def settings(mongo_uri, mongo_db, tmp_path) -> Settings:
    """Settings pointing at the test database, with state and Parquet files under tmp_path."""

    env = {
        "MONGO_URI": mongo_uri,
        "MONGO_DB_NAME": mongo_db.name,
        "HEALTHSTREAM_STATE_DIR": str(tmp_path / "state"),
        "HEALTHSTREAM_TOOLS_DIR": os.environ.get("HEALTHSTREAM_TOOLS_DIR") or str(REPO_ROOT / ".tools"),
        "SETTLE_SECONDS": "0",
        "RETRY_BACKOFF_SECONDS": "0",
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    env = {
        "HEALTHSTREAM_STATE_DIR": str(tmp_path_factory.mktemp("spark-state")),
        "HEALTHSTREAM_TOOLS_DIR": os.environ.get("HEALTHSTREAM_TOOLS_DIR") or str(REPO_ROOT / ".tools"),
    }
    session = get_or_create_session(Settings.from_env(env))
    yield session


@pytest.fixture(scope="session")
def fitbit_dir() -> Path:
    path = Path(os.environ.get("HEALTHSTREAM_FITBIT_DIR") or REPO_ROOT.parent / "shared" / "data" / "fitbit")
    if not (path / "README.md").exists():
        pytest.fail(f"Fitbit data not found at {path}; set HEALTHSTREAM_FITBIT_DIR to the folder of the exports")
    return path
