"""Abuse of the HTTP layer itself, against a real `bentoml serve`: paths, headers and framing that reach
BentoML's own middleware (metrics, access log, router) unless the service's edge answers them first.

tests/test_hostile.py is about bodies of /classify; this file is about everything around them. Raw sockets
where an HTTP client would refuse to send the request or would hide what the server did to the connection.
"""

import json
import re
import socket
import time

import httpx
import pytest

JSON = "application/json"
BODY = b'{"texts": ["a fine film"]}'
EXTERNAL_ORIGIN = re.compile(rb"(?:https?:)?//(?!(?:www\.)?w3\.org/)[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def exchange(url: str, request: bytes, timeout: float = 10) -> tuple[bytes, bool, float]:
    """Send raw bytes; return (everything the server sent, whether it closed the connection, seconds).

    Reads until the server closes the connection or `timeout` passes without it doing so.
    """
    started = time.perf_counter()
    with socket.create_connection(host_port(url)) as sock:
        sock.settimeout(timeout)
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
            closed = True
        except TimeoutError:
            closed = False
    return data, closed, time.perf_counter() - started


def one_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Parse the first HTTP/1.1 response in `data`; its body must be complete (Content-Length bytes)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    assert len(rest) >= length, f"the response body was cut short: {len(rest)} of {length} bytes"
    return int(status_line.split()[1]), headers, rest[:length]


def metrics_text(client) -> bytes:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content


# -- item 1: /metrics stays bounded whatever paths clients invent ------------------------------------


def test_unknown_paths_do_not_grow_metrics(server, client):
    client.post("/classify", json={"texts": ["warm"]})
    before = len(metrics_text(client))
    junk = [f"/{i:04d}" + "x" * 4000 for i in range(300)]
    junk += ["/a%00b", "/classify/", "/ui/no-such-file.js", "/static_content/swagger-ui.css", "/docs.json/"]
    statuses = []
    with httpx.Client(base_url=server, timeout=60) as c:
        for path in junk:
            response = c.get(path)
            statuses.append((path[:20], response.status_code, response.headers.get("content-type"), response.text))
    after = metrics_text(client)
    assert len(after) < before + 20_000, f"/metrics grew from {before} to {len(after)} bytes"
    assert b"xxxxxxxxxx" not in after and b"\x00" not in after and b"%00" not in after
    assert b"swagger" not in after and b"no-such-file" not in after
    for path, status, content_type, text in statuses:
        assert status == 404 and content_type == JSON and json.loads(text)["error"], (path, status, text)
    assert re.search(rb'^gaze_rejected_total\{[^}]*reason="unknown_path"[^}]*\} (\d+)', after, re.M)


def test_known_routes_keep_their_own_labels(client):
    client.get("/livez")
    client.post("/classify", json={"texts": ["a fine film"]})
    client.post("/classify", content=b"{", headers={"content-type": JSON})
    text = metrics_text(client).decode()
    assert re.search(
        r'^bentoml_service_request_total\{[^}]*endpoint="/classify"[^}]*http_response_code="400"', text, re.M
    )
    assert re.search(
        r'^bentoml_service_request_total\{[^}]*endpoint="/classify"[^}]*http_response_code="200"', text, re.M
    )


def websocket_handshake(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: gaze\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()


def test_websocket_handshakes_are_refused_at_the_edge(server, client):
    """Hostile review 2, H1: upgrades once skipped the edge, so every distinct path became a /metrics series
    (1,500 of them: 93 kB -> 10 MB), NUL bytes and forged lines included, even without the API key."""
    client.post("/classify", json={"texts": ["warm"]})
    before = len(metrics_text(client))
    for i in range(100):
        for path in (f"/w{i:03d}" + "x" * 2000, "/classify", "/a%00b%0Aforged"):
            data, _, _ = exchange(server, websocket_handshake(path), timeout=5)
            assert data.startswith(b"HTTP/1.1 403"), (path[:20], data[:80])
    after = metrics_text(client)
    assert len(after) < before + 5_000, f"/metrics grew from {before} to {len(after)} bytes"
    assert b"xxxxxxxxxx" not in after and b"\x00" not in after and b"forged" not in after
    assert re.search(rb'^gaze_rejected_total\{[^}]*reason="websocket"[^}]*\} (\d+)', after, re.M)


# -- low: headers and framing ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/classify", "/readyz"])
def test_non_ascii_content_type_gets_a_whole_415(server, path):
    request = (
        f"POST {path} HTTP/1.1\r\nHost: gaze\r\nContent-Length: {len(BODY)}\r\n".encode()
        + b"Content-Type: application/json\xff\xfe\r\nConnection: close\r\n\r\n"
        + BODY
    )
    data, closed, _ = exchange(server, request)
    status, headers, body = one_response(data)
    assert status == 415 and headers["content-type"] == JSON
    assert "Content-Type" in json.loads(body)["error"]


@pytest.mark.parametrize("first", ["multipart/form-data; boundary=x", "application/vnd.bentoml+pickle", JSON])
def test_more_than_one_content_type_is_a_400(server, first):
    """Hostile review 2, M4: each layer read a different one of two Content-Types (multipart first: a 500
    with a traceback; BentoML's pickle serde first: stopped only by its own guard)."""
    request = (
        f"POST /classify HTTP/1.1\r\nHost: gaze\r\nContent-Length: {len(BODY)}\r\n"
        f"Content-Type: {first}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    ).encode() + BODY
    data, _, _ = exchange(server, request)
    status, headers, body = one_response(data)
    assert status == 400 and headers["content-type"] == JSON
    assert "one Content-Type" in json.loads(body)["error"]


def test_content_length_with_transfer_encoding_is_refused_and_closed(server):
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    request = (
        b"POST /classify HTTP/1.1\r\nHost: gaze\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunked
    )
    data, closed, seconds = exchange(server, request)
    status, headers, body = one_response(data)
    assert status == 400 and "Transfer-Encoding" in json.loads(body)["error"]
    assert closed and headers.get("connection") == "close" and seconds < 5
    assert data.count(b"HTTP/1.1") == 1, "a second (smuggled) request was answered"


def test_obs_folded_transfer_encoding_is_refused_at_once(server):
    request = (
        b"POST /classify HTTP/1.1\r\nHost: gaze\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(BODY)}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n".encode()
        + BODY
    )
    data, closed, seconds = exchange(server, request, timeout=15)
    assert data, f"no answer in {seconds:.0f} s"
    status, _, _ = one_response(data)
    assert status == 400 and closed and seconds < 5


# -- low: no redirect echoes the Host header; no third-party script at / ----------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/classify/"), ("GET", "/ui"), ("GET", "/"), ("GET", "/docs.json/"), ("GET", "/ui/index.html/")],
)
def test_no_response_echoes_the_host_header(server, method, path):
    request = f"{method} {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n".encode()
    if method == "POST":
        request += f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY
    else:
        request += b"\r\n"
    data, _, _ = exchange(server, request)
    assert b"evil.example" not in data, data[:500]
    status, headers, _ = one_response(data)
    if path == "/classify/":
        assert status == 404 and "location" not in headers
    if "location" in headers:
        assert headers["location"].startswith("/") and not headers["location"].startswith("//"), headers


def test_root_serves_no_third_party_script(client):
    response = client.get("/")
    assert response.status_code in (200, 307, 308)
    assert not EXTERNAL_ORIGIN.search(response.content), EXTERNAL_ORIGIN.search(response.content)
    if response.status_code != 200:
        assert response.headers["location"] == "/ui/"
    page = client.get("/", follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert not EXTERNAL_ORIGIN.search(page.content), EXTERNAL_ORIGIN.search(page.content)
    for match in re.findall(rb'(?:src|href)="([^"]+)"', page.content):
        assert client.get(str(page.url.join(match.decode()))).status_code == 200, match


def test_ordinary_routes_still_work(client):
    for path in ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/ui/", "/ui/app.js", "/ui/style.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert float(response.headers["x-total-time"]) >= 0, path
    for method, path in (("GET", "/classify"), ("PUT", "/predict"), ("DELETE", "/classify")):
        response = client.request(method, path)  # our JSON body, like every other refusal
        assert response.status_code == 405 and response.headers["allow"] == "POST", (method, path)
        assert f"{path} takes POST" in response.json()["error"]
    assert client.post("/classify", json={"texts": ["a fine film"]}).status_code == 200


def test_an_unexpected_error_is_a_json_500_at_once():
    """Raised before a response, an error once left BentoML's timeout middleware holding the connection
    for the whole timeout (60 s) before a plain-text 500; GazeMiddleware answers at once."""
    import asyncio

    from service.admission import GazeMiddleware

    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    middleware = GazeMiddleware(broken, max_texts=2, max_chars=10, max_concurrency=2, retry_after_s=1, answer=None)
    asyncio.run(middleware({"type": "http", "path": "/livez", "method": "GET", "headers": []}, receive, send))
    assert sent[0]["status"] == 500 and dict(sent[0]["headers"])[b"content-type"] == b"application/json"
    assert "internal error" in json.loads(sent[1]["body"])["error"]


@pytest.mark.parametrize(
    ("request_head", "status", "words"),
    [
        (b"GET /livez HTTP/3.0\r\nHost: gaze\r\n\r\n", 505, "HTTP/3.0 is not supported"),
        (b"GET /livez HTTP/1.1\r\nHost: gaze\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431, "headers are over"),
    ],
)
def test_another_http_version_or_huge_headers_are_refused_and_closed(server, client, request_head, status, words):
    """Hostile review 2, Low: both were answered 200."""
    data, closed, _ = exchange(server, request_head)
    code, headers, body = one_response(data)
    assert code == status and words in json.loads(body)["error"]
    assert closed and headers.get("connection") == "close"
    assert client.get("/livez").status_code == 200
