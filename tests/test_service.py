"""The HTTP contract, against a real `bentoml serve` on a free loopback port (one server per module)."""

import json
import math
import re
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import expected_shape

from benchmarks.harness import ROOT, bentoml_serve, server_env
from benchmarks.loadgen import last_axis_rows
from inference.contract import MODES

TEXTS = [
    "a gripping , funny and moving film .",
    "dull",
    "it 's a dull , lifeless mess that does n't work , and the ending is terrible .",
    "a tedious , boring two hours .",
]
MAX_REQUEST_COST_MS = 300


@pytest.fixture(scope="module")
def server_settings():
    return {"GAZE_MAX_REQUEST_COST_MS": MAX_REQUEST_COST_MS}


def classify(client, texts, attention=None, **kwargs):
    body = {"texts": texts} if attention is None else {"texts": texts, "attention": attention}
    return client.post("/classify", json=body, **kwargs)


def check_prediction(result, text, mode, tokenizer):
    fields = {"label", "score", "scores", "top", "tokens", "offsets", "truncated", "attention", "words", "attribution"}
    assert set(result) == fields
    assert result["tokens"] == tokenizer.convert_ids_to_tokens(tokenizer(text, truncation=True)["input_ids"])
    assert len(result["offsets"]) == len(result["tokens"]) and result["top"] is None
    assert (result["words"] is None) == (mode == "none")
    assert result["label"] in result["scores"] and result["score"] == result["scores"][result["label"]]
    assert math.isclose(sum(result["scores"].values()), 1, abs_tol=1e-5)
    if mode == "none":
        assert result["attention"] is None
        return
    t = len(result["tokens"])
    assert result["attention"]["mode"] == mode
    assert result["attention"]["shape"] == expected_shape(mode, t)
    for row in last_axis_rows(result["attention"]["values"]):
        assert len(row) == t
        assert math.isclose(sum(row), 1, abs_tol=1e-4 * t + 1e-6)


# -- the contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_follows_the_contract(client, tiny_tokenizer, mode):
    texts = [TEXTS[2], TEXTS[1], "a gripping funny film " * 40, TEXTS[0]]  # mixed lengths, one truncated
    response = classify(client, texts, mode)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    predictions = response.json()["predictions"]
    assert len(predictions) == len(texts)
    for text, result in zip(texts, predictions, strict=True):
        check_prediction(result, text, mode, tiny_tokenizer)
    assert [p["truncated"] for p in predictions] == [False, False, True, False]
    assert len(predictions[2]["tokens"]) == 64


def test_attention_defaults_to_cls(client, tiny_tokenizer):
    response = classify(client, [TEXTS[0]])
    assert response.status_code == 200
    check_prediction(response.json()["predictions"][0], TEXTS[0], "cls", tiny_tokenizer)


def test_unicode_of_every_kind_never_fails(client):
    texts = [
        "😀🎬👍🏽 great film 🍿",
        "فيلم رائع جدا",
        "e\u0301 cafe\u0301 n\u0303",
        "zero\u200bwidth\u200c\u200d\ufeffjoin",
        "control \x00\x01\x07\x1b[31m chars \x7f",
        "\u202eoverride\u202c",
        "\U0010ffff\U000e0001",
        "日本語のテキスト",
    ]  # a text of nothing but dropped characters ("\x00") is a 400: BAD_REQUESTS
    response = classify(client, texts, "rollout")
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(texts)
    # Unpaired surrogates: valid JSON escapes, not valid Unicode; they become U+FFFD (then dropped).
    raw = '{"texts": ["lone \\ud800 surrogate", "\\udfff end"], "attention": "cls"}'
    response = client.post("/classify", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["tokens"][0] == "[CLS]"


def test_texts_of_exactly_the_limits_are_accepted(client):
    response = classify(client, ["x" * 10_000] + ["y"] * 63, "none")
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 64


# -- errors ----------------------------------------------------------------------------------

BAD_REQUESTS = [
    # (body, status, the error message contains)
    ({"texts": []}, 400, "'texts' is empty; send 1 to 64 texts"),
    ({"texts": ["x"] * 65}, 413, "too many texts: 65; the limit is 64"),
    ({"texts": ["ok", 3]}, 400, "texts[1] is not a string"),
    ({"texts": ["ok", None]}, 400, "texts[1] is not a string"),
    ({"texts": ["ok", ["nested"]]}, 400, "texts[1] is not a string"),
    ({"texts": ["ok", "", "x"]}, 400, "texts[1] is empty or whitespace-only"),
    ({"texts": ["ok", " \t\n\u3000\u2003"]}, 400, "texts[1] is empty or whitespace-only"),
    ({"texts": ["ok", "\u200b\x00"]}, 400, "texts[1] ('\\u200b\\x00') has no tokens"),
    ({"texts": ["ok", "\ufffd"]}, 400, "texts[1] ('\\ufffd') has no tokens"),
    ({"texts": ["ok", "x" * 10_001]}, 413, "texts[1] has 10001 characters; the limit is 10000"),
    ({"texts": ["ok"], "attention": "heads"}, 400, "unknown attention mode 'heads'; expected one of none, cls"),
    ({"texts": ["ok"], "attention": None}, 400, "unknown attention mode None"),
    ({"texts": ["ok"], "attention": ["cls"]}, 400, "unknown attention mode"),
    ({"texts": " "}, 400, "texts is empty or whitespace-only"),
    ({"texts": {"a": 1}}, 400, "'texts' must be a list of strings, got an object"),
    ({"text": ["ok"]}, 400, "unknown field 'text'"),
    ({}, 400, "missing field 'texts'"),
    (["ok"], 400, "the body must be a JSON object"),
    ("ok", 400, "the body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
def test_invalid_requests_get_a_clear_4xx(client, body, status, message):
    response = client.post("/classify", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert "x-total-time" in response.headers


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (b'{"texts": ["ok"', "application/json", 400, "malformed JSON: Expecting"),
        (b"", "application/json", 400, "malformed JSON"),
        (b'{"texts": ["\xff\xfe"]}', "application/json", 400, "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "malformed JSON"),
        (b'{"texts": ["ok"]}', "text/plain", 415, "Content-Type must be application/json, got 'text/plain'"),
        (b'{"texts": ["ok"]}', "application/x-www-form-urlencoded", 415, "Content-Type must be application/json"),
        (b'{"texts": ["ok"]}', None, 415, "got none"),
    ],
)
def test_malformed_bodies_and_wrong_content_types(client, content, content_type, status, message):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/classify", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_json_with_charset_is_fine(client):
    response = client.post(
        "/classify", content=b'{"texts": ["ok"]}', headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200


def test_oversized_body_is_refused_before_it_is_read(client):
    body = b'{"texts": ["' + b"x" * 8_000_000 + b'"]}'
    response = client.post("/classify", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "the body is larger than" in response.json()["error"]


def test_a_request_over_the_cost_limit_is_413(client):
    texts = ["a gripping funny film " * 20] * 40  # 40 × 64 tokens: "all" = 40·2·4·64·64 ≈ 1.3 M numbers
    response = classify(client, texts, "all")
    assert response.status_code == 413
    error = response.json()["error"]
    assert f"the limit is {MAX_REQUEST_COST_MS} ms per request" in error
    assert re.search(r"more than \d+ ms of a worker \(its first (3|7|15|31) of 40 texts", error), "stopped at a chunk"
    assert classify(client, texts, "cls").status_code == 200  # ~45 ms without the maps' ~330 ms


def test_one_text_is_a_list_of_one(client):
    one, listed = classify(client, TEXTS[0], "cls"), classify(client, TEXTS[:1], "cls")
    assert one.status_code == 200, one.text
    assert one.json() == listed.json()


def test_wrong_method_and_unknown_path(client):
    assert client.get("/classify").status_code == 405
    assert client.post("/nope", json={}).status_code == 404


# -- operations ------------------------------------------------------------------------------


def test_timing_headers(client):
    response = classify(client, TEXTS, "cls")
    for name in ("x-queue-time", "x-inference-time", "x-total-time"):
        assert float(response.headers[name]) >= 0, name
    assert float(response.headers["x-total-time"]) >= float(response.headers["x-inference-time"])
    assert int(response.headers["x-batch-size"]) >= len(TEXTS)
    for path in ("/livez", "/readyz", "/metrics", "/ui/"):
        assert float(client.get(path).headers["x-total-time"]) >= 0, path


def test_health_and_metrics(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    classify(client, TEXTS, "none")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "gaze_batch_size_bucket" in metrics.text
    assert "bentoml_service_request_total" in metrics.text


def test_openapi_documents_classify(client):
    spec = client.get("/docs.json").json()
    post = spec["paths"]["/classify"]["post"]
    request = post["requestBody"]["content"]["application/json"]["schema"]
    assert request["required"] == ["texts"]
    one, texts = request["properties"]["texts"]["anyOf"]  # a text, or a list of texts
    assert (one["type"], one["maxLength"]) == ("string", 10_000)
    assert (texts["type"], texts["minItems"], texts["maxItems"]) == ("array", 1, 64)
    assert texts["items"]["maxLength"] == 10_000
    assert request["properties"]["attention"]["enum"] == list(MODES)
    assert request["properties"]["attention"]["default"] == "cls"
    assert "predictions" in post["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert {"400", "413", "415", "429", "503"} <= set(post["responses"])
    # OpenAPI 3.0 has no "null" type: an optional field is `nullable`, or its clients would refuse a null.
    assert spec["openapi"].startswith("3.0") and '{"type": "null"}' not in json.dumps(spec)
    target = request["properties"]["target"]
    assert (target["type"], target["nullable"], target["default"]) == ("string", True, None)
    # BentoML's inline schema keeps one type of a union; /docs.json gives the whole one: /predict takes lists.
    inputs = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [option["type"] for option in inputs["properties"]["inputs"]["anyOf"]] == ["string", "array"]
    assert "security" not in post and "401" not in post["responses"]  # no GAZE_API_KEY here


def test_ui_page_is_served(client):
    page = client.get("/ui/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<script" in page.text and "http" not in re.sub(r"https?://(www\.)?w3\.org[^\"']*", "", page.text)
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):  # its own files only, never framed, never sniffed
        headers = client.get(path).headers
        assert "default-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert (headers["x-frame-options"], headers["x-content-type-options"]) == ("DENY", "nosniff"), path


# -- concurrency -----------------------------------------------------------------------------


def histogram(metrics: str, name: str) -> tuple[float, float]:
    """(count, sum) of a Prometheus histogram, summed over its label sets."""
    count = sum(float(v) for v in re.findall(rf"^{name}_count(?:{{[^}}]*}})? (\S+)$", metrics, re.M))
    total = sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", metrics, re.M))
    return count, total


def test_fifty_parallel_requests_are_correct_and_share_batches(server, tiny_tokenizer):
    before = httpx.get(f"{server}/metrics").text
    requests = []
    for i in range(50):
        texts = [f"{TEXTS[(i + j) % 4]} {'again ' * ((i * 7 + j) % 9)} #{i}.{j}" for j in range(1 + i % 4)]
        requests.append((texts, MODES[i % len(MODES)]))

    def send(request):
        texts, mode = request
        with httpx.Client(timeout=60) as c:
            return c.post(f"{server}/classify", json={"texts": texts, "attention": mode})

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(send, requests))

    for (texts, mode), response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert len(predictions) == len(texts)
        for text, result in zip(texts, predictions, strict=True):
            check_prediction(result, text, mode, tiny_tokenizer)  # each answer is its own, in order
    after = httpx.get(f"{server}/metrics").text
    batches = histogram(after, "gaze_batch_requests")[0] - histogram(before, "gaze_batch_requests")[0]
    requests_in_batches = histogram(after, "gaze_batch_requests")[1] - histogram(before, "gaze_batch_requests")[1]
    texts_in_batches = histogram(after, "gaze_batch_size")[1] - histogram(before, "gaze_batch_size")[1]
    assert 50 <= requests_in_batches <= 50 + batches  # a batch may take part of a request (the rest: the next)
    assert texts_in_batches == sum(len(texts) for texts, _ in requests)
    assert batches < 50, "concurrent requests should share forward passes"
    assert any(int(r.headers["x-batch-size"]) > len(t) for (t, _), r in zip(requests, responses, strict=True))


# -- overload and recovery -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(start_server):
    """A server with tiny limits: 2 requests in flight, 96 queued texts."""
    return start_server(GAZE_MAX_CONCURRENCY=2, GAZE_MAX_QUEUE_TEXTS=96)


def test_overload_is_refused_fast_with_retry_after_and_the_service_recovers(small_server):
    texts = ["a gripping funny film and a tedious boring mess " * 6] * 64
    heavy = {"texts": texts, "attention": "all"}

    def send(_):
        started = time.perf_counter()
        with httpx.Client(timeout=60) as c:
            response = c.post(f"{small_server}/classify", json=heavy)
        return response, time.perf_counter() - started

    refused, answered = [], []
    for _ in range(5):  # bursts until one is refused (the first almost always is)
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(send, range(24)))
        assert all(r.status_code in (200, 429, 503) for r, _ in results), [r.status_code for r, _ in results]
        refused += [(r, s) for r, s in results if r.status_code in (429, 503)]
        answered += [s for r, s in results if r.status_code == 200]
        if refused:
            break
    assert refused, "24 concurrent heavy requests against a limit of 2 should be refused"
    # Fast: within 2 s, or on a machine so loaded that answers take longer, within an answer's median time
    # (a refusal waits for no model work; the event loop it shares with the answers is all it waits for).
    limit = max(2.0, statistics.median(answered)) if answered else 2.0
    for response, seconds in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]
        assert seconds < limit, f"a refusal took {seconds:.2f} s (limit {limit:.2f} s)"

    # Recovery, without a restart: the same server answers normally again.
    assert httpx.get(f"{small_server}/readyz").status_code == 200
    for _ in range(3):
        response = httpx.post(f"{small_server}/classify", json={"texts": ["a fine film"]}, timeout=30)
        assert response.status_code == 200
    metrics = httpx.get(f"{small_server}/metrics").text
    assert "gaze_rejected_total" in metrics


# -- startup ---------------------------------------------------------------------------------


def test_missing_model_fails_startup_with_a_clear_message(tmp_path):
    env = server_env(tmp_path, GAZE_MODEL=tmp_path / "no-such-model")
    result = subprocess.run(
        bentoml_serve(port=0),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "gaze: cannot start: model folder" in result.stderr and "does not exist" in result.stderr


def test_response_sizes_per_mode_are_reported(client, record_property):
    """Not a limit, a measurement: bytes per response for one SST-2-like sentence (tiny: 2 layers, 4 heads)."""
    sizes = {}
    for mode in MODES:
        sizes[mode] = len(classify(client, [TEXTS[2]], mode).content)
    record_property("response_bytes", json.dumps(sizes))
    assert sizes["none"] < sizes["rollout"] < sizes["cls"] < sizes["last"] < sizes["all"]
    assert sizes["cls"] < 3500  # 3310 bytes: 16 tokens, 17 words (each with weight and attribution)
