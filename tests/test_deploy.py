"""Where users deploy (docs/deploy.md): GAZE_DEVICE, GAZE_PRECISION=auto, GAZE_API_KEY and GAZE_CORS_ORIGINS.

There is no GPU on the machines these tests were written on: they check what can be checked without one
(auto means the CPU, cuda is refused with a clear message); the CUDA path itself has not been run.
"""

import re
from types import SimpleNamespace

import httpx
import pytest
import torch
from conftest import assert_refuses_to_start

import inference.predictor
from benchmarks.harness import served, server_env
from inference import predict as cli
from inference.precision import PRECISIONS, faster_precision, resolve_device
from inference.predictor import DEFAULT_MODEL, Predictor
from service.backpressure import abort
from service.config import Settings
from service.edge import with_headers

HAS_GPU = torch.cuda.is_available()
needs_no_gpu = pytest.mark.skipif(HAS_GPU, reason="checks the refusal of cuda where there is no GPU")
SENTENCES = ["a gripping , funny and moving film .", "it 's a dull , lifeless mess that does n't work ."]


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("GAZE_DEVICE", "GAZE_PRECISION", "GAZE_API_KEY", "GAZE_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- GAZE_DEVICE ---------------------------------------------------------------------------------


def test_auto_device_is_the_gpu_if_torch_sees_one_else_the_cpu(tiny_model_dir):
    expected = "cuda" if HAS_GPU else "cpu"
    assert resolve_device("auto").type == expected
    predictor = Predictor(tiny_model_dir)  # device="auto" by default
    assert predictor.device.type == expected
    assert {parameter.device.type for parameter in predictor.model.parameters()} == {expected}
    result = predictor.predict(SENTENCES, "rollout")[0]
    assert result["attention"]["shape"] == [len(result["tokens"])]


def test_auto_device_takes_a_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@needs_no_gpu
def test_cuda_without_a_gpu_is_refused_clearly(tiny_model_dir, clean_env, capsys):
    message = "device 'cuda' asked for, but torch .* sees no CUDA GPU"
    with pytest.raises(ValueError, match=message):
        Predictor(tiny_model_dir, device="cuda")
    clean_env.setenv("GAZE_DEVICE", "cuda")
    with pytest.raises(ValueError, match=f"GAZE_DEVICE=cuda: {message}"):
        Settings.from_env()
    assert cli.main(["a film", "--model", str(tiny_model_dir), "--device", "cuda"]) == 2
    assert re.search(message, capsys.readouterr().err)
    with pytest.raises(ValueError, match="unknown device 'tpu'; expected one of auto, cpu, cuda"):
        resolve_device("tpu")


# -- GAZE_PRECISION=auto -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "chosen"),
    [(1.0, 0.5, "bf16"), (1.0, 0.9, "bf16"), (1.0, 0.95, "fp32"), (1.0, 1.56, "fp32")],
    ids=["bf16 2x", "bf16 1.11x", "bf16 1.05x: a tie", "bf16 0.64x"],
)
def test_bf16_is_kept_only_when_clearly_faster(fp32_s, bf16_s, chosen):
    assert faster_precision({"fp32": fp32_s, "bf16": bf16_s}) == chosen


@pytest.mark.parametrize("winner", PRECISIONS)
def test_auto_times_both_precisions_and_then_runs_the_winner(tiny_model_dir, monkeypatch, winner):
    """Whichever wins, the predictor goes on in it (the last timed run is bf16's: fp32 must be set back)."""
    measured = []
    monkeypatch.setattr(inference.predictor, "faster_precision", lambda seconds: measured.append(seconds) or winner)
    predictor = Predictor(tiny_model_dir, precision="auto")
    assert predictor.precision == predictor.precision_choice.precision == winner
    assert measured == [predictor.precision_choice.seconds]
    assert set(measured[0]) == set(PRECISIONS) and all(seconds > 0 for seconds in measured[0].values())
    outputs = {p: Predictor(tiny_model_dir, precision=p).predict(SENTENCES, "cls") for p in PRECISIONS}
    assert outputs["fp32"] != outputs["bf16"]  # else this test could not tell them apart
    assert predictor.predict(SENTENCES, "cls") == outputs[winner]


def test_auto_precision_on_the_shipped_model(record_property):
    """A real measurement (no result assumed): the choice is what the medians say. Run with the CPU's load."""
    choice = Predictor(DEFAULT_MODEL, precision="auto").precision_choice
    record_property("precision_choice", str(choice))
    print(f"GAZE_PRECISION=auto on the shipped model: {choice}")
    assert choice.precision == faster_precision(choice.seconds)
    assert choice.repeats == 5


# -- settings ------------------------------------------------------------------------------------


def test_deploy_settings_default_to_open_and_auto(clean_env):
    settings = Settings.from_env()
    assert (settings.device, settings.precision) == ("cuda" if HAS_GPU else "cpu", "auto")
    assert (settings.api_key, settings.cors_origins) == (None, ())


def test_origins_are_parsed_and_the_key_is_never_printed(clean_env):
    clean_env.setenv("GAZE_CORS_ORIGINS", " https://Gaze.Example.com , http://localhost:8080,")
    clean_env.setenv("GAZE_API_KEY", "s3cret-key")
    settings = Settings.from_env()
    assert settings.cors_origins == ("https://gaze.example.com", "http://localhost:8080")
    assert settings.api_key == "s3cret-key" and "s3cret" not in repr(settings)


@pytest.mark.parametrize("origin", ["https://gaze.example.com/", "gaze.example.com", "https://a.example/page"])
def test_an_origin_with_a_path_or_without_a_scheme_is_refused(clean_env, origin):
    clean_env.setenv("GAZE_CORS_ORIGINS", f"http://ok.example,{origin}")
    with pytest.raises(ValueError, match="GAZE_CORS_ORIGINS: .* is not an origin; write scheme://host"):
        Settings.from_env()


def test_dropping_a_client_reaches_the_server_through_added_headers():
    """With CORS on, `send` is wrapped; dropping a client that reads nothing must still abort its connection."""
    transport = SimpleNamespace(aborted=False)
    transport.abort = lambda: setattr(transport, "aborted", True)

    class Cycle:  # uvicorn's request cycle: `send` is its method, and it holds the transport
        def __init__(self):
            self.transport = transport

        async def send(self, message):
            pass

    abort(with_headers(with_headers(Cycle().send, [(b"vary", b"origin")]), []))
    assert transport.aborted


# -- startup refusals, against `bentoml serve` ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param(
            {"GAZE_DEVICE": "cuda"}, "GAZE_DEVICE=cuda: device 'cuda' asked for, but torch", marks=needs_no_gpu
        ),
        ({"GAZE_CORS_ORIGINS": "https://gaze.example.com/"}, "GAZE_CORS_ORIGINS: 'https://gaze.example.com/' is not"),
    ],
    ids=["cuda without a GPU", "an origin with a slash"],
)
def test_service_refuses_a_bad_deploy_setting_in_one_line(tiny_model_dir, tmp_path, setting, message):
    env = server_env(tmp_path / "home", GAZE_MODEL=tiny_model_dir, **setting)
    assert_refuses_to_start(env, tmp_path / "serve.log", message)


# -- a real server with a key and one allowed origin --------------------------------------------------

KEY = "s3cret-key"
ALLOWED = "http://allowed.example"
OTHER = "http://other.example"
BODY = {"texts": ["a fine film"], "attention": "none"}


@pytest.fixture(scope="module")
def guarded(tiny_model_dir, tmp_path_factory):
    """(URL, log path) of `bentoml serve` with GAZE_API_KEY and GAZE_CORS_ORIGINS set, two workers."""
    home = tmp_path_factory.mktemp("bentoml-home")
    log = home / "server.log"
    env = server_env(home, GAZE_MODEL=tiny_model_dir, GAZE_WORKERS=2, GAZE_API_KEY=KEY, GAZE_CORS_ORIGINS=ALLOWED)
    with served(env=env, log_path=log) as url:
        yield url, log


@pytest.fixture(scope="module")
def guarded_client(guarded):
    with httpx.Client(base_url=guarded[0], timeout=60) as client:
        yield client


def rejected(client, reason: str) -> float:
    pattern = rf'^gaze_rejected_total\{{reason="{reason}"\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, client.get("/metrics").text, flags=re.M))


def test_classify_needs_the_key(guarded_client):
    before = rejected(guarded_client, "unauthorized")
    missing = guarded_client.post("/classify", json=BODY)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer <key>" in missing.json()["error"]
    for header in (f"Bearer {KEY}x", "Bearer s3cret", f"Basic {KEY}", KEY, "Bearer"):
        wrong = guarded_client.post("/classify", json=BODY, headers={"Authorization": header})
        assert wrong.status_code == 401, header
        assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert wrong.json() == {"error": "the API key in the Authorization header is wrong"}
    for header in (f"Bearer {KEY}", f"bearer {KEY}"):
        right = guarded_client.post("/classify", json=BODY, headers={"Authorization": header})
        assert right.status_code == 200, right.text
        assert right.json()["predictions"][0]["label"] in {"negative", "positive"}
    assert guarded_client.post("/predict", json={"inputs": "a fine film"}).status_code == 401  # every model route
    assert rejected(guarded_client, "unauthorized") == before + 7


def test_health_routes_the_page_docs_and_metrics_stay_open(guarded_client):
    for path in ("/livez", "/healthz", "/readyz", "/ui/", "/docs.json", "/metrics"):
        assert guarded_client.get(path).status_code == 200, path


def test_docs_declare_the_key_the_model_routes_need(guarded_client):
    spec = guarded_client.get("/docs.json").json()
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "GAZE_API_KEY, as `Authorization: Bearer <key>`"
    }  # fmt: skip
    for path in ("/classify", "/predict"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"apiKey": []}] and "401" in operation["responses"], path
    assert "security" not in spec["paths"]["/livez"]["get"]


def test_every_worker_runs_the_precision_measured_once_at_startup(guarded, guarded_client):
    lines = [line for line in guarded[1].read_text().splitlines() if "GAZE_PRECISION=auto chose" in line]
    assert len(lines) == 1, lines  # measured by `bentoml serve` itself, not by each of the two workers
    chosen = lines[0].split("chose ")[1].split()[0]
    assert chosen in PRECISIONS
    headers = {"Authorization": f"Bearer {KEY}"}
    answers = {guarded_client.post("/classify", json=BODY, headers=headers).headers["x-precision"] for _ in range(8)}
    assert answers == {chosen}


def test_preflight_is_answered_for_the_allowed_origin_only(guarded_client):
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = guarded_client.options("/classify", headers={"Origin": ALLOWED, **asks})
    assert allowed.status_code == 204  # no key needed: browsers send none with a preflight
    assert allowed.headers["access-control-allow-origin"] == ALLOWED
    assert set(allowed.headers["access-control-allow-headers"].split(", ")) >= {"authorization", "content-type"}
    assert "POST" in allowed.headers["access-control-allow-methods"]
    before = rejected(guarded_client, "cors_origin")
    other = guarded_client.options("/classify", headers={"Origin": OTHER, **asks})
    assert other.status_code == 403
    assert "access-control-allow-origin" not in other.headers
    assert other.json() == {"error": f"origin '{OTHER}' may not call this service"}
    assert rejected(guarded_client, "cors_origin") == before + 1


def test_answers_name_the_allowed_origin_only(guarded_client):
    key = {"Authorization": f"Bearer {KEY}"}
    answer = guarded_client.post("/classify", json=BODY, headers={"Origin": ALLOWED, **key})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "x-precision" in answer.headers["access-control-expose-headers"]
    assert "origin" in answer.headers["vary"].lower()
    refused = guarded_client.post("/classify", json=BODY, headers={"Origin": ALLOWED})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED  # readable
    foreign = guarded_client.post("/classify", json=BODY, headers={"Origin": OTHER, **key})
    assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers
