"""The embedded MongoDB-compatible server: FerretDB 1.24 with its SQLite backend.

The binary is built once from the Go module proxy into the project's tools folder. The server
listens on 127.0.0.1 only, keeps its data in the state folder and records its pid and port in
`server.json` there, so `healthstream server stop` works from another shell.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pymongo
from pymongo.errors import PyMongoError

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be built, started or reached."""


def build_ferretdb(tools_dir: Path) -> Path:
    """Build the FerretDB binary into `tools_dir/bin` unless it is already there; return its path.

    `go install ...@v1.24.2` builds a binary that panics at start, because the module archive lacks
    the generated `build/version/version.txt`. So the module source is downloaded, copied to a
    temporary folder, given that file, and built there.
    """

    binary = tools_dir / "bin" / "ferretdb"
    if binary.exists():
        return binary

    go = shutil.which("go")
    if go is None:
        raise EmbeddedServerError(
            "the Go toolchain is needed once to build FerretDB, but `go` is not on PATH; "
            "install Go or set MONGO_URI to an existing MongoDB server"
        )

    module = f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"
    download = subprocess.run(
        [go, "mod", "download", "-json", module], capture_output=True, text=True, check=False
    )
    if download.returncode != 0:
        raise EmbeddedServerError(f"`go mod download {module}` failed: {download.stderr.strip()}")

    module_dir = Path(json.loads(download.stdout)["Dir"])
    binary.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="ferretdb-src-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(module_dir, source)

        for path in source.rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)

        (source / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")

        build = subprocess.run(
            [go, "build", "-o", str(binary), "./cmd/ferretdb"],
            cwd=source,
            capture_output=True,
            text=True,
            check=False,
        )
        if build.returncode != 0:
            raise EmbeddedServerError(f"building FerretDB {FERRETDB_VERSION} failed: {build.stderr.strip()}")

    return binary


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ping(uri: str, timeout_seconds: float = 1.0) -> bool:
    """Return True when the server at `uri` responds to the `ping` command."""

    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout_seconds * 1000))
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def process_alive(pid: int) -> bool:
    """Return True when a process with this pid exists (it may belong to another user)."""

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    uri: str | None


class EmbeddedServer:
    """Start, stop and inspect one FerretDB process whose data lives under `state_dir/ferretdb`."""

    def __init__(self, state_dir: Path, tools_dir: Path, port: int | None = None):
        self.state_dir = state_dir
        self.tools_dir = tools_dir
        self.port = port
        self.data_dir = state_dir / "ferretdb"
        self.state_file = state_dir / "server.json"
        self.log_file = state_dir / "ferretdb.log"

    def status(self) -> ServerStatus:
        if not self.state_file.exists():
            return ServerStatus(running=False, pid=None, uri=None)

        recorded = json.loads(self.state_file.read_text())
        pid = recorded["pid"]
        uri = recorded["uri"]

        if process_alive(pid) and ping(uri):
            return ServerStatus(running=True, pid=pid, uri=uri)

        return ServerStatus(running=False, pid=pid, uri=uri)

    def start(self, timeout_seconds: float = 30.0) -> str:
        """Start the server unless it already runs, wait until it responds to `ping`, and return its URI."""

        current = self.status()
        if current.running:
            return current.uri

        binary = build_ferretdb(self.tools_dir)
        port = self.port or find_free_port()
        uri = f"mongodb://127.0.0.1:{port}/"

        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
            f"--state-dir={self.data_dir}",
            f"--listen-addr=127.0.0.1:{port}",
            # An empty debug address disables FerretDB's HTTP debug listener, which would
            # otherwise claim 127.0.0.1:8088 and collide with a second instance.
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=error",
        ]

        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        self.state_file.write_text(json.dumps({"pid": process.pid, "uri": uri}))

        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedServerError(
                    f"FerretDB exited with code {process.returncode} at start; see {self.log_file}"
                )
            if ping(uri, timeout_seconds=0.5):
                return uri
            time.sleep(0.2)

        self.stop()
        raise EmbeddedServerError(f"FerretDB did not answer ping on {uri} within {timeout_seconds:.0f} s")

    def stop(self, timeout_seconds: float = 10.0) -> bool:
        """Stop the recorded server process; return False when none was running."""

        if not self.state_file.exists():
            return False

        pid = json.loads(self.state_file.read_text())["pid"]
        self.state_file.unlink()

        if not process_alive(pid):
            return False

        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return True
            _reap(pid)
            time.sleep(0.1)

        os.kill(pid, signal.SIGKILL)
        _reap(pid)
        return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child, so it does not linger as a zombie."""

    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
