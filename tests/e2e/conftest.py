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
