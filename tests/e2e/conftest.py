"""Fixtures that run the real Portico binaries as processes on loopback port 0."""

import os
import pathlib
import queue
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


@pytest.fixture
def portico_from_config(tmp_path):
    """Starts portico on a config the test writes: `portico_from_config(text, listeners)`
    writes `text` into `tmp_path` (relative paths in it resolve there), runs portico, waits
    for the `listening on` lines of the listener names in `listeners` and of the admin API,
    and returns the `Process`, whose `listening` maps each of those names to its `IP:PORT`
    (`lines` and `stderr` hold what portico printed so far). `env` adds environment
    variables (e.g. `PORTICO_LOG`)."""
    started = []

    def start(text, listeners=("public",), env=None):
        config = tmp_path / f"portico-config-{len(started)}.toml"
        config.write_text(text)
        proc = Process([binary("portico"), "run", "--config", str(config)], env=env)
        started.append(proc)
        proc.listening = proc.wait_listening_all([*listeners, "admin"])
        return proc

    yield start
    for proc in started:
        proc.stop()


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
