"""Hostile inputs against a real `bentoml serve`: malformed and adversarial requests, each with the status
and message the contract documents (service/requests.py, service/errors.py), then proof that the service is
unharmed: the same worker processes, healthy, answering normally.

tests/test_service.py covers the ordinary 4xx cases of the contract; this table is about abuse:
broken encodings, absurd sizes and counts, odd Unicode, nesting bombs, streaming and lying clients.
"""

import gzip
import json
import re
import socket
import time

import psutil
import pytest

from benchmarks.loadgen import contract_problems

LABELS = ["negative", "positive"]
MAX_REQUEST_COST_MS = 300
JSON = "application/json"


@pytest.fixture(scope="module")
def server_settings():
    return {"GAZE_MAX_REQUEST_COST_MS": MAX_REQUEST_COST_MS}


def serving_pids(url: str) -> set[int]:
    """The processes holding the server's listening socket (BentoML's arbiter and its workers)."""
    port = int(url.rsplit(":", 1)[1])
    return {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }


@pytest.fixture(scope="module")
def pids_before(server, client):
    client.post("/classify", json={"texts": ["warm"]})
    return serving_pids(server)


def body(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def surrogates() -> bytes:
    return b'{"texts": ["lone \\ud800 half and \\udfff other half", "\\ud83d\\ude00 a real pair"]}'


def chunks():
    yield b'{"texts": ["'
    for _ in range(100):  # 10 MB with no Content-Length: the limit must hold while streaming
        yield b"x" * 100_000
    yield b'"]}'


def ok(check=None):
    """Expect 200, a valid response for the request, and optionally a check of the predictions."""
    return (200, check or (lambda predictions: True))


def case(name, content, status, expected, content_type=JSON, headers=None):
    """One row: the request, the status, and the text the "error" contains (or a check of a 200's predictions)."""
    return pytest.param(content, content_type, headers or {}, status, expected, id=name)


LONG = "a gripping funny film " * 20
PUNCTUATION = "?!.,;:'\"()[]{}-_/\\@#$%^&*" * 40
UNK_ONLY = ["[CLS]", "[UNK]", "[SEP]"]
CASES = [
    case("truncated JSON", b'{"texts": ["a fine fi', 400, "malformed JSON"),
    case("trailing comma", b'{"texts": ["a",]}', 400, "malformed JSON"),
    case("single quotes", b"{'texts': ['a']}", 400, "malformed JSON"),
    case("JSON with a comment", b'{"texts": ["a"] /* hi */}', 400, "malformed JSON"),
    case("empty body", b"", 400, "malformed JSON"),
    case("body is null", b"null", 400, "the body must be a JSON object"),
    case("texts is null", body({"texts": None}), 400, "'texts' must be a list of strings, got null"),
    case("texts is a number", body({"texts": 42}), 400, "'texts' must be a list of strings, got a number"),
    case("texts is a boolean", body({"texts": True}), 400, "got a boolean"),
    case("a text is null", body({"texts": ["ok", None]}), 400, "texts[1] is not a string (got null)"),
    case("nested arrays", body({"texts": [[["deep"]]]}), 400, "texts[0] is not a string (got a list)"),
    case("a text is an object", body({"texts": [{"text": "a"}]}), 400, "texts[0] is not a string (got an object)"),
    case("NaN literal", b'{"texts": [NaN]}', 400, "texts[0] is not a string (got a number)"),
    case("number overflow 1e400", b'{"texts": [1e400]}', 400, "texts[0] is not a string"),
    case("an integer of 5,000 digits", b'{"texts": [' + b"7" * 5000 + b"]}", 400, "more than 4300 digits"),
    case("a 5,000-digit attention", b'{"texts": ["a"], "attention": -' + b"9" * 5000 + b"}", 400, "malformed JSON"),
    case("attention in capitals", body({"texts": ["a"], "attention": "CLS"}), 400, "unknown attention mode 'CLS'"),
    case("attention is a number", body({"texts": ["a"], "attention": 1}), 400, "unknown attention mode 1"),
    case("unknown extra field", body({"texts": ["a"], "debug": True}), 400, "unknown field 'debug'"),
    case("nesting bomb, 1M deep", b"[" * 1_000_000 + b"]" * 1_000_000, 400, "malformed JSON"),
    case("10 MB body", body({"texts": ["x" * 10_000_000]}), 413, "the body is larger than"),
    case("10 MB body, chunked, no length", chunks(), 413, "the body is larger than"),
    case("100k texts", body({"texts": ["a"] * 100_000}), 413, "too many texts: 100000; the limit is 64"),
    case("invalid UTF-8 bytes", b'{"texts": ["caf\xe9 \xff\xfe"]}', 400, "not valid UTF-8"),
    case(
        "gzip body (not supported)",
        gzip.compress(body({"texts": ["a"]})),
        400,
        "not valid UTF-8",
        headers={"content-encoding": "gzip"},
    ),
    case("UTF-8 BOM", b'\xef\xbb\xbf{"texts": ["a"]}', 400, "malformed JSON"),
    case("UTF-16 body", '{"texts": ["a"]}'.encode("utf-16"), 400, "malformed JSON"),
    case("text/plain", body({"texts": ["a"]}), 415, "Content-Type must be application/json", content_type="text/plain"),
    case("no content type", body({"texts": ["a"]}), 415, "got none", content_type=None),
    case(
        "only whitespace (Unicode spaces)",
        body({"texts": [" \t\n\r\u00a0\u2003\u3000\u2028"]}),
        400,
        "texts[0] is empty or whitespace-only",
    ),
    case("10,001 emoji", body({"texts": ["😀" * 10_001]}), 413, "texts[0] has 10001 characters; the limit is 10000"),
    case(
        "all maps for 64 long texts",
        body({"texts": [LONG] * 64, "attention": "all"}),
        413,
        f"the limit is {MAX_REQUEST_COST_MS} ms per request",
    ),
    case(
        "all maps for 64 texts of 10,000 CJK characters (only their heads are tokenized)",
        body({"texts": ["漢字" * 5_000] * 64, "attention": "all"}),
        413,
        f"the limit is {MAX_REQUEST_COST_MS} ms per request",
    ),
    # Accepted: odd but valid text is classified, never an error.
    case("surrogate halves (JSON escapes)", surrogates(), *ok(lambda p: len(p) == 2)),
    case("10,000 emoji", body({"texts": ["😀" * 10_000]}), *ok(lambda p: p[0]["tokens"] == UNK_ONLY)),
    case("only punctuation", body({"texts": [PUNCTUATION]}), *ok(lambda p: p[0]["truncated"])),
    case("control characters and ANSI", body({"texts": ["\x00\x01\x07\x1b[31mred\x1b[0m\x7f"]}), *ok()),
    case(  # the model would answer from [CLS] [SEP] alone (hostile review 2, Low)
        "only zero-width characters",
        body({"texts": ["\u200b\u200c\u200d\ufeff"]}),
        400,
        "texts[0] ('\\u200b\\u200c\\u200d\\ufeff') has no tokens",
    ),
    case("RTL text with override marks", body({"texts": ["\u202eفيلم رائع\u202c סרט נהדר"]}), *ok()),
    case(
        "one 10,000-character token",
        body({"texts": ["a" * 10_000]}),
        *ok(lambda p: p[0]["tokens"] == UNK_ONLY and not p[0]["truncated"]),
    ),
    case(
        "64 texts of 10,000 characters",
        body({"texts": ["ab " * 3333] * 64, "attention": "rollout"}),
        *ok(lambda p: all(x["truncated"] for x in p)),
    ),
    case("duplicate key: the last wins", b'{"texts": [1], "texts": ["ok"]}', *ok()),
]


@pytest.mark.parametrize(("content", "content_type", "headers", "status", "expected"), CASES)
def test_hostile_request_gets_the_documented_answer(
    client, pids_before, content, content_type, headers, status, expected
):
    headers = dict(headers)
    if content_type:
        headers["content-type"] = content_type
    response = client.post("/classify", content=content, headers=headers)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    if status != 200:
        assert set(payload) == {"error"}, payload
        assert expected in payload["error"], payload["error"]
        return
    request = json.loads(content)
    request = {"texts": request["texts"], "attention": request.get("attention", "cls")}
    assert contract_problems(request, payload, LABELS) == []
    assert expected(payload["predictions"]), json.dumps(payload)[:500]


def test_wrong_methods(client, pids_before):
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/classify").status_code == 405, method


def test_clients_that_hang_or_vanish_mid_body_do_not_block_others(server, client, pids_before):
    host, port = server.removeprefix("http://").split(":")
    head = (
        f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    idle = []
    try:
        for _ in range(20):  # 20 clients that promise 100 kB and send 10 bytes, then wait
            s = socket.create_connection((host, int(port)))
            s.sendall(head.encode() + b'{"texts": ')
            idle.append(s)
        for s in idle[:10]:  # half of them vanish
            s.close()
        started = time.perf_counter()
        response = client.post("/classify", json={"texts": ["still served"]})
        assert response.status_code == 200
        assert time.perf_counter() - started < 30
    finally:
        for s in idle:
            s.close()


def test_the_service_is_unharmed_afterwards(server, client, pids_before, tiny_tokenizer):
    """Runs last in this module: same processes (no worker crashed and restarted), healthy, correct."""
    for path in ("/livez", "/healthz", "/readyz"):
        assert client.get(path).status_code == 200, path
    request = {"texts": ["a gripping , funny and moving film .", "dull"], "attention": "cls"}
    response = client.post("/classify", json=request)
    assert response.status_code == 200
    assert contract_problems(request, response.json(), LABELS) == []
    assert serving_pids(server) == pids_before, "a server process died and was replaced during the hostile inputs"
    server_errors = [
        line
        for line in client.get("/metrics").text.splitlines()
        if re.match(r'^bentoml_service_request_total\{.*http_response_code="5\d\d"', line)
        and float(line.split()[-1]) > 0
    ]
    assert server_errors == [], server_errors
