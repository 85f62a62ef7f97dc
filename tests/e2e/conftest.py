"""Fixtures that run the real Portico binaries as processes on loopback port 0."""

import os
import pathlib
import queue
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("PORTICO_BIN_DIR", ROOT / "target" / "debug"))
STARTUP_SECONDS = 20


class Process:
    """A spawned binary whose stdout lines are collected; killed by `stop()`."""

    def __init__(self, args):
        self.args = args
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.stderr = []

    def _read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip("\n"))

    def wait_listening(self, name=None):
        """Returns the address of the `listening on [name] addr` line, waiting with a deadline."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise AssertionError(
                    f"{self.args[0]} did not start: stdout={self.lines} stderr={self.stderr}"
                )
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            words = line.split()
            if words[:2] != ["listening", "on"]:
                continue
            if name is None and len(words) == 3:
                return words[2]
            if name is not None and len(words) == 4 and words[2] == name:
                return words[3]

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
