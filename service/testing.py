"""Run a real `bentoml serve` of this service on a free loopback port (tests, benchmarks).

    with served(model_dir, tmp_home) as url:
        httpx.post(f"{url}/classify", json={"texts": ["a fine film"]})

The server gets its own process group; teardown ends it and every process it started.
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

ROOT = Path(__file__).resolve().parents[1]


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


@contextlib.contextmanager
def served(
    target: str = "service.service:Gaze",
    *,
    env: dict[str, str],
    startup_timeout: float = 120,
    log_path: str | Path | None = None,
    cwd: str | Path = ROOT,
) -> Iterator[str]:
    """Start `bentoml serve target`, wait for /readyz, yield the base URL, always stop it."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    command = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, startup_timeout, log_path)
        yield url
    finally:
        stop(process)
        if log_path:
            log.close()


def wait_ready(url: str, process: subprocess.Popen, timeout: float, log_path: str | Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"bentoml serve exited with {process.returncode} before it was ready\n{tail}")
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
