"""Run a real server on a free loopback port: `bentoml serve` of this service, or any command (tests, benchmarks).

    with served(env=server_env(tmp_home, GAZE_MODEL=model_dir)) as url:
        httpx.post(f"{url}/classify", json={"texts": ["a fine film"]})

Every server gets its own process group; `stop` ends it and every process it started. This lives in
benchmarks/, beside the load generator, and not in service/: it must not ship in the Bento.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from benchmarks.common import ROOT

GAZE_SERVICE = "service.service:Gaze"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(bentoml_home: str | Path, **gaze: str | int | Path) -> dict[str, str]:
    """The environment of a test server: a private BentoML home, no telemetry, GAZE_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GAZE_")}
    env.update(BENTOML_HOME=str(bentoml_home), BENTOML_DO_NOT_TRACK="true")
    env.update({key: str(value) for key, value in gaze.items()})
    return env


def bentoml_serve(port: int, target: str = GAZE_SERVICE) -> list[str]:
    """The command line that serves `target` (a service or a Bento tag) on 127.0.0.1:`port`."""
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]


def launch(
    command: list[str], *, env: dict[str, str], log_path: str | Path | None = None, cwd: str | Path = ROOT
) -> subprocess.Popen:
    """Start `command` in a process group of its own (so that `stop` reaches all it starts); output to `log_path`."""
    with open(log_path, "ab") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@contextlib.contextmanager
def running(
    command: list[str],
    port: int,
    *,
    env: dict[str, str],
    startup_timeout: float = 120,
    log_path: str | Path | None = None,
    cwd: str | Path = ROOT,
) -> Iterator[str]:
    """Start the server `command` (listening on `port`), wait for /readyz, yield its URL, always stop it."""
    process = launch(command, env=env, log_path=log_path, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, startup_timeout, log_path)
        yield url
    finally:
        stop(process)


@contextlib.contextmanager
def served(
    target: str = GAZE_SERVICE,
    *,
    env: dict[str, str],
    startup_timeout: float = 120,
    log_path: str | Path | None = None,
    cwd: str | Path = ROOT,
) -> Iterator[str]:
    """`bentoml serve target` on a free port, ready; yields the base URL."""
    port = free_port()
    with running(
        bentoml_serve(port, target), port, env=env, startup_timeout=startup_timeout, log_path=log_path, cwd=cwd
    ) as url:
        yield url


def wait_ready(url: str, process: subprocess.Popen, timeout: float, log_path: str | Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url}/readyz was not 200 within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL it if it has not exited in 20 s.

    A lone worker runs in its own process group, out of reach of the group's signals, so the
    server's descendants are listed first and any left over are killed by pid.
    """
    descendants = []
    with contextlib.suppress(psutil.NoSuchProcess):
        descendants = psutil.Process(process.pid).children(recursive=True)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(descendants, timeout=10)
