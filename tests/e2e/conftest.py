"""Fixtures that run the real Portico binaries as processes on loopback port 0."""

import os
import pathlib
import queue
import shutil
import socket
import subprocess
import threading
import time
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("PORTICO_BIN_DIR", ROOT / "target" / "debug"))
STARTUP_SECONDS = 20


class Process:
    """A spawned binary whose stdout lines are collected; killed by `stop()`."""

    def __init__(self, args, env=None):
        self.args = args
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )
        self.lines = []
        # Before the reader threads start: they append to these at once.
        self.stderr = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def _listening_lines(self, waiting_for):
        """Yields `(name, addr)` for each `listening on [name] addr` line (name None when the
        line has none) until the caller stops, failing at the start-up deadline."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise AssertionError(
                    f"{self.args[0]} did not listen on {waiting_for()}: "
                    f"stdout={self.lines} stderr={self.stderr}"
                )
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            words = line.split()
            if words[:2] == ["listening", "on"] and len(words) == 3:
                yield None, words[2]
            elif words[:2] == ["listening", "on"] and len(words) == 4:
                yield words[2], words[3]

    def wait_listening(self, name=None):
        """Returns the address of the `listening on [name] addr` line, waiting with a deadline."""
        for found, addr in self._listening_lines(lambda: name or "its address"):
            if found == name:
                return addr

    def wait_listening_all(self, names):
        """Returns `{name: addr}` once every name in `names` has printed its `listening on`
        line, in any order, waiting with a deadline."""
        found = {}
        missing = lambda: sorted(set(names) - found.keys())  # noqa: E731
        if not missing():
            return found
        for name, addr in self._listening_lines(missing):
            if name is not None:
                found[name] = addr
            if not missing():
                return found

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def binary(name):
    path = BIN_DIR / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `cargo build --workspace --bins`")
    return str(path)


@pytest.fixture
def fakeworker():
    """Starts fakeworker processes: `fakeworker(*flags)` returns its base URL."""
    started = []

    def start(*flags):
        proc = Process([binary("fakeworker"), "--host", "127.0.0.1", "--port", "0", *flags])
        started.append(proc)
        return "http://" + proc.wait_listening()

    yield start
    for proc in started:
        proc.stop()


# --- portico ---------------------------------------------------------------------------------

PORTICO_CONFIG = """
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 5
metrics_public = true

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "e1"
project = "p1"
public = true
timeouts = {{ connect_ms = 1000, first_byte_seconds = 30, idle_seconds = 30 }}

[endpoint.workers]
kind = "static"
urls = [{urls}]
"""


@pytest.fixture
def portico(tmp_path):
    """Starts portico processes: `portico(*worker_urls)` writes a config with one public
    endpoint `/project/p1/endpoint/e1` on those static workers into `tmp_path`, runs it and
    returns the public listener's base URL (`http://127.0.0.1:PORT`)."""
    started = []

    def start(*worker_urls):
        config = tmp_path / f"portico-{len(started)}.toml"
        config.write_text(PORTICO_CONFIG.format(urls=", ".join(f'"{u}"' for u in worker_urls)))
        proc = Process([binary("portico"), "run", "--config", str(config)])
        started.append(proc)
        public = proc.wait_listening("public")
        proc.wait_listening("admin")
        return "http://" + public

    yield start
    for proc in started:
        proc.stop()


def run_portico(config, listeners, env, started):
    """Runs `portico run --config config`, appends the `Process` to `started` and waits for
    the `listening on` lines of `listeners` and of the admin API (see
    `portico_from_config`)."""
    proc = Process([binary("portico"), "run", "--config", str(config)], env=env)
    started.append(proc)
    proc.config = config
    proc.listening = proc.wait_listening_all([*listeners, "admin"])
    return proc


@pytest.fixture
def portico_from_config(tmp_path):
    """Starts portico on a config the test writes: `portico_from_config(text, listeners)`
    writes `text` into `tmp_path` (relative paths in it resolve there), runs portico, waits
    for the `listening on` lines of the listener names in `listeners` and of the admin API,
    and returns the `Process`, whose `listening` maps each of those names to its `IP:PORT`
    (`lines` and `stderr` hold what portico printed so far; `config` is the file's path).
    `env` adds environment variables (e.g. `PORTICO_LOG`)."""
    started = []

    def start(text, listeners=("public",), env=None):
        config = tmp_path / f"portico-config-{len(started)}.toml"
        config.write_text(text)
        return run_portico(config, listeners, env, started)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def portico_on_file():
    """Starts portico on a config file that already exists: `portico_on_file(path,
    listeners, env)` returns the `Process` like `portico_from_config` does. Calling it again
    with the same path after `stop()` (SIGKILL) restarts portico on the same config and so
    on the same `state_dir`, which is how tests check what survives a crash."""
    started = []

    def start(config, listeners=("public",), env=None):
        return run_portico(config, listeners, env, started)

    yield start
    for proc in started:
        proc.stop()


# --- services the async tests use: redis-server and s3s-fs ------------------------------------

SERVICE_STARTUP_SECONDS = 20


def free_port():
    """A loopback port that was free a moment ago (bound to port 0, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(what, ready, proc, seconds=SERVICE_STARTUP_SECONDS):
    """Polls `ready()` (True, or an exception meaning not yet) until it holds, failing with
    what `proc` printed when `proc` exits or the deadline passes."""
    deadline = time.monotonic() + seconds
    last = None
    while True:
        try:
            if ready():
                return
        except Exception as error:  # noqa: BLE001 - any failure means "not ready yet"
            last = error
        exited = proc.proc.poll()
        if exited is not None or time.monotonic() > deadline:
            proc.stop()
            raise AssertionError(
                f"{proc.args[0]} not ready ({what}; exit status {exited}; last error {last!r}): "
                f"stdout={proc.lines[-20:]} stderr={proc.stderr[-20:]}"
            )
        time.sleep(0.05)


def service_binary(name, env_var):
    """The path of a service binary: `$env_var`, else `name` on PATH, else ~/.cargo/bin."""
    path = os.environ.get(env_var) or shutil.which(name)
    if not path:
        candidate = pathlib.Path.home() / ".cargo" / "bin" / name
        path = str(candidate) if candidate.exists() else None
    if not path:
        raise AssertionError(f"`{name}` is missing: scripts/test.sh installs it")
    return path


def redis_ping(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64).startswith(b"+PONG")


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server on a free loopback port with an fsync'd append-only file in a temporary
    directory: a namespace with `url` (`redis://127.0.0.1:P`) and `port`. Killed at
    teardown."""
    port = free_port()
    directory = tmp_path / "redis"
    directory.mkdir()
    proc = Process([
        service_binary("redis-server", "PORTICO_REDIS_SERVER"),
        "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "yes",
        "--appendfsync", "always", "--dir", str(directory),
    ])
    try:
        wait_until("PING", lambda: redis_ping(port), proc)
        yield types.SimpleNamespace(url=f"redis://127.0.0.1:{port}", port=port)
    finally:
        proc.stop()


class S3Server:
    """An s3s-fs process serving `root` over the S3 API on a fixed loopback port, so it can
    be stopped and started again at the same address with the same data."""

    bucket = "results"
    access_key = "portico-test-access"
    secret_key = "portico-test-secret-key"
    region = "us-east-1"

    def __init__(self, root):
        self.root = root
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }
        self.proc = None

    def client(self):
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def start(self):
        """Starts s3s-fs and waits until it answers S3 requests."""
        assert self.proc is None, "s3s-fs is already running"
        self.proc = Process([
            service_binary("s3s-fs", "PORTICO_S3S_FS"),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--access-key", self.access_key, "--secret-key", self.secret_key,
            str(self.root),
        ])
        client = self.client()
        wait_until("ListBuckets", lambda: client.list_buckets() is not None, self.proc)

    def stop(self):
        """Kills s3s-fs (SIGKILL); its data stays in `root`."""
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def s3_server(tmp_path):
    """An s3s-fs S3-compatible server on a free loopback port over a temporary directory, with
    the bucket `results` created: an `S3Server` (`endpoint`, `access_key`, `secret_key`,
    `bucket`, `region`, `env` for portico's environment, `client()`, `stop()`, `start()`).
    Killed at teardown."""
    root = tmp_path / "s3"
    root.mkdir()
    server = S3Server(root)
    server.start()
    try:
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        server.stop()


# --- TLS -------------------------------------------------------------------------------------

LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@pytest.fixture
def tls_certs(tmp_path):
    """A throw-away CA and a leaf certificate for `localhost` and `127.0.0.1` signed by it,
    made with the `openssl` command line in `tmp_path / "tls"`: a namespace of paths `ca`
    (the CA certificate to trust), `cert` and `key` (the leaf's PEM files, for a listener's
    `tls`)."""
    directory = tmp_path / "tls"
    directory.mkdir()
    paths = types.SimpleNamespace(
        ca=directory / "ca.pem",
        cert=directory / "cert.pem",
        key=directory / "key.pem",
    )
    ca_key = directory / "ca-key.pem"
    csr = directory / "leaf.csr"
    extensions = directory / "leaf.ext"
    extensions.write_text(LEAF_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", paths.ca, "-days", "2",
         "-subj", "/CN=Portico test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        ["req", "-new", *ec, "-keyout", paths.key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", paths.ca, "-CAkey", ca_key, "-set_serial", "2",
         "-days", "2", "-extfile", extensions, "-out", paths.cert],
    ]
    for command in commands:
        try:
            done = subprocess.run(
                ["openssl", *map(str, command)], capture_output=True, text=True, timeout=30
            )
        except FileNotFoundError:
            raise AssertionError("`openssl` is missing: scripts/test.sh installs it") from None
        assert done.returncode == 0, f"openssl {command[0]} failed: {done.stderr}"
    return paths
