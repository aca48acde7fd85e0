"""What service/ relies on of BentoML's internals and lifecycle, pinned: a BentoML upgrade that changes it fails here.

Each worker serves `Service.to_asgi()`, which service/internals.py overrides to put the edge in front of
BentoML's own middleware; the model check runs as a deployment hook, before any worker starts. And importing
the service loads nothing: no model, no exit, whatever GAZE_MODEL says.
"""

import subprocess
import sys

from benchmarks.harness import ROOT, server_env


def test_importing_the_service_loads_no_model_and_does_not_exit(tmp_path):
    code = "import sys, service.service as s\nprint(type(s.Gaze).__name__, s.SETTINGS.model)\n"
    env = server_env(tmp_path, GAZE_MODEL=tmp_path / "no-such-model")
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Wrapped", str(tmp_path / "no-such-model")]
    assert "cannot start" not in result.stderr


def test_each_worker_serves_the_edge_in_front_of_bentoml():
    from service.edge import GazeEdge
    from service.service import Gaze

    app = Gaze.to_asgi()  # builds BentoML's app (no worker, no model): what a worker serves
    assert isinstance(app, GazeEdge)
    assert {"/classify", "/predict", "/metrics", "/readyz"} <= app.known
    assert type(Gaze).__mro__[1].to_asgi is not type(Gaze).to_asgi  # ours overrides BentoML's own
    assert type(Gaze).__slots__ == ()  # an attrs class with slots: the override adds no state


def test_the_model_check_is_a_deployment_hook():
    """BentoML runs the members of the service class marked by `bentoml.on_deployment` in the process of
    `bentoml serve` before it spawns workers (tests/test_loading.py starts real servers on broken folders)."""
    from service.service import Gaze

    assert getattr(Gaze.inner.check_model, "__bentoml_deployment_hook__", False)


def test_each_worker_serves_http_with_the_header_deadline():
    """BentoML's worker builds `uvicorn.Config` without `http=`: the "auto" protocol, which the service maps to
    `HeaderTimeoutProtocol`; that class relies on uvicorn's H11Protocol hooks and on h11's states and buffer."""
    import inspect

    import h11
    import uvicorn
    from _bentoml_impl.worker import service as worker
    from uvicorn.protocols.http.h11_impl import H11Protocol

    import service.service  # noqa: F401 (importing it installs the protocol)
    from service.internals import HeaderTimeoutProtocol

    assert "http=" not in inspect.getsource(worker.main.callback)  # a click command
    config = uvicorn.Config(app=None)
    config.load()
    assert config.http_protocol_class is HeaderTimeoutProtocol
    for hook in ("connection_made", "data_received", "on_response_complete", "connection_lost"):
        assert hook in vars(H11Protocol)
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(b"POST / HTTP/1.1\r\nHo")
    assert connection.next_event() is h11.NEED_DATA and connection.their_state is h11.IDLE
    assert connection.trailing_data == (b"POST / HTTP/1.1\r\nHo", False)
