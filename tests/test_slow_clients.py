"""Clients that are slow or gone, against a real `bentoml serve` (issue 13, medium items 4, 5 and 6).

A client that sends its body a byte at a time, one that hangs up while its work waits in the queue, and one
that never reads its response must each cost the service a bounded, short-lived amount (a deadline, a
cancelled job, a capped number of bytes), never the answers of everyone else. Raw sockets, because an
HTTP client would not behave this badly.
"""

import asyncio
import contextlib
import json
import re
import socket
import threading
import time

import psutil
import pytest

from service.batching import Batcher

JSON = "application/json"
BODY_TIMEOUT_S = 3
HEADER_TIMEOUT_S = 2
SEND_TIMEOUT_S = 8
MAX_PENDING_BYTES = 24_000_000
MAX_RECEIVING_BYTES = 16_000_000
MAX_CONCURRENCY = 4
# 64 texts longer than the tiny model's 64 positions, every map: 64 × 2 layers × 4 heads × 64² numbers,
# a response of about 14 MB that takes the model and the JSON encoder seconds on this machine.
LARGE = json.dumps({"texts": ["a gripping , funny and moving film . " * 12] * 64, "attention": "all"}).encode()


@pytest.fixture(scope="module")
def server(start_server):  # (conftest's `client` talks to this one)
    return start_server(
        GAZE_WORKERS=1,
        GAZE_THREADS=1,
        GAZE_MAX_CONCURRENCY=MAX_CONCURRENCY,
        GAZE_BODY_TIMEOUT_S=BODY_TIMEOUT_S,
        GAZE_HEADER_TIMEOUT_S=HEADER_TIMEOUT_S,
        GAZE_SEND_TIMEOUT_S=SEND_TIMEOUT_S,
        GAZE_MAX_PENDING_BYTES=MAX_PENDING_BYTES,
        GAZE_MAX_RECEIVING_BYTES=MAX_RECEIVING_BYTES,
    )


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def request_head(length: int) -> bytes:
    return f"POST /classify HTTP/1.1\r\nHost: gaze\r\nContent-Type: {JSON}\r\nContent-Length: {length}\r\n\r\n".encode()


def metric(client, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 if it is not there yet)."""
    selector = "".join(rf'(?=[^}}]*{key}="{re.escape(value)}")' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}(?:\{{{selector}[^}}]*\}})? ([0-9.e+-]+)$"
    match = re.search(pattern, client.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, rest


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and Content-Length bytes of body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    _, headers, body = parse_response(data)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" + body


def worker_process(url: str) -> psutil.Process:
    """The worker serving `url` (GAZE_WORKERS=1): of the processes holding its listening socket, the one
    that none of the others started."""
    port = host_port(url)[1]
    pids = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }
    processes = [psutil.Process(pid) for pid in pids]
    leaves = [p for p in processes if not any(c.pid in pids for c in p.children(recursive=True))]
    assert len(leaves) == 1, [(p.pid, p.cmdline()) for p in processes]
    return leaves[0]


# -- hostile review 2, Low: headers that never finish ----------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_connection_that_does_not_finish_its_headers_is_closed(server, client):
    """uvicorn has no such deadline (3,000 connections were held open): no byte sent, part of the headers, or
    part of the next request's on a kept-alive connection, each is closed GAZE_HEADER_TIMEOUT_S after the
    connection opened or the last answer; headers slow but in time are answered."""
    host, port = host_port(server)
    before = metric(client, "gaze_rejected_total", reason="header_timeout")
    body = json.dumps({"texts": ["a fine film"]}).encode()
    silent = socket.create_connection((host, port), timeout=HEADER_TIMEOUT_S + 10)
    partial = socket.create_connection((host, port), timeout=HEADER_TIMEOUT_S + 10)
    partial.sendall(b"POST /classify HTTP/1.1\r\nHost: gaze\r\nContent-Ty")
    kept = socket.create_connection((host, port), timeout=HEADER_TIMEOUT_S + 10)
    kept.sendall(request_head(len(body)) + body)
    assert parse_response(read_response(kept))[0] == 200
    kept.sendall(b"POST /classify HTTP/1.1\r\n")  # within uvicorn's 5 s keep-alive, which data cancels
    started = time.monotonic()
    slow = socket.create_connection((host, port), timeout=HEADER_TIMEOUT_S + 10)
    head = request_head(len(body))
    slow.sendall(head[:20])
    time.sleep(HEADER_TIMEOUT_S / 2)
    slow.sendall(head[20:] + body)
    try:
        assert parse_response(read_response(slow))[0] == 200
        assert read_until_closed(silent) == b""  # no request had begun: closed without a word
        for sock in (partial, kept):
            status, headers, rest = parse_response(read_until_closed(sock))
            assert (status, headers["content-type"], headers["connection"]) == (408, JSON, "close")
            assert json.loads(rest)["error"] == f"the request's headers did not arrive within {HEADER_TIMEOUT_S} s"
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 3
    finally:
        for sock in (silent, partial, kept, slow):
            sock.close()
    assert metric(client, "gaze_rejected_total", reason="header_timeout") - before >= 3


# -- item 6: a body that trickles in holds no slot, and ends in 408 --------------------------------


def test_slow_bodies_get_408_and_hold_no_slot(server, client):
    client.post("/classify", json={"texts": ["warm"]})
    host, port = host_port(server)
    body = json.dumps({"texts": ["a fine film"] * 40}).encode()
    slow = []
    started = time.monotonic()
    for _ in range(2 * MAX_CONCURRENCY):  # twice as many as the slots, each sending one byte every 0.5 s
        sock = socket.create_connection((host, port))
        sock.sendall(request_head(len(body)) + body[:1])
        sock.setblocking(False)
        slow.append({"sock": sock, "sent": 1, "data": b"", "closed_at": None})
    time.sleep(0.5)
    normal = client.post("/classify", json={"texts": ["a gripping film"]}, timeout=30)
    try:
        deadline = started + BODY_TIMEOUT_S + 12
        while time.monotonic() < deadline and any(s["closed_at"] is None for s in slow):
            for s in slow:
                if s["closed_at"] is not None:
                    continue
                try:
                    while chunk := s["sock"].recv(65536):
                        s["data"] += chunk
                    s["closed_at"] = time.monotonic()  # recv returned b"": the server closed the connection
                except BlockingIOError:
                    try:
                        s["sock"].send(body[s["sent"] : s["sent"] + 1])
                        s["sent"] += 1
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
                except ConnectionResetError:
                    s["closed_at"] = time.monotonic()
            time.sleep(0.5)
    finally:
        for s in slow:
            s["sock"].close()
    assert normal.status_code == 200, (normal.status_code, normal.text)
    for s in slow:
        assert s["data"], f"no answer in {time.monotonic() - started:.0f} s to a body that never finished"
        status, headers, rest = parse_response(s["data"])
        assert status == 408 and headers["content-type"] == JSON and headers.get("connection") == "close"
        assert f"{BODY_TIMEOUT_S}" in json.loads(rest)["error"]
        assert s["closed_at"] is not None and s["closed_at"] - started < BODY_TIMEOUT_S + 5
        assert s["sent"] < len(body)  # still sending when it was cut off
    assert metric(client, "gaze_rejected_total", reason="body_timeout") >= len(slow)
    assert client.post("/classify", json={"texts": ["still served"]}).status_code == 200


# -- item 4: the queued work of a client that hung up is dropped -------------------------------------


def test_work_for_clients_that_hung_up_is_dropped(server, client):
    client.post("/classify", json={"texts": ["warm"]})
    texts_before = metric(client, "gaze_batch_size_sum")
    refused_before = metric(client, "gaze_cancelled_total") + metric(
        client, "gaze_rejected_total", reason="concurrency"
    )
    host, port = host_port(server)
    gone = 12
    for _ in range(gone):  # each asks for 64 texts with every map, then hangs up at once
        with socket.create_connection((host, port)) as sock:
            sock.sendall(request_head(len(LARGE)) + LARGE)
    time.sleep(1)
    response = client.post("/classify", json={"texts": ["a gripping film"]}, timeout=120)
    assert response.status_code == 200
    computed = metric(client, "gaze_batch_size_sum") - texts_before - 1
    # At most one large request may have started before its client's hang-up was seen.
    assert computed <= 64, f"{computed:.0f} texts of {gone * 64} were computed for clients that had hung up"
    # Each was cancelled, or refused at once (429) while the slots still held earlier ones.
    refused = metric(client, "gaze_cancelled_total") + metric(client, "gaze_rejected_total", reason="concurrency")
    assert refused - refused_before >= gone - 1
    assert metric(client, "gaze_cancelled_total") > 0


def test_a_cancelled_submit_leaves_the_queue_unrun():
    """The unit under item 4: a job whose request is cancelled before a batch takes it is never computed."""
    release = threading.Event()
    runs = []

    def process(items):
        runs.append(list(items))
        release.wait(10)
        return [f"r{item}" for item in items]

    async def scenario():
        batcher = Batcher(process, max_batch_texts=2)
        first = asyncio.ensure_future(batcher.submit([1, 2]))  # taken by a batch at once
        await asyncio.sleep(0.1)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in (3, 4, 5)]
        await asyncio.sleep(0.1)
        queued[0].cancel()
        queued[1].cancel()
        await asyncio.sleep(0.1)
        assert batcher.dropped_texts == 2
        release.set()
        results = [await first, await queued[2]]
        batcher.close()
        return results

    (first, _), (last, _) = asyncio.run(scenario())
    assert first == ["r1", "r2"] and last == ["r5"]
    assert runs == [[1, 2], [5]]


# -- item 5: responses nobody reads take bounded memory, and give it back ----------------------------


def test_clients_that_never_read_hold_bounded_memory(server, client):
    worker = worker_process(server)
    warm = client.post("/classify", content=LARGE, headers={"content-type": JSON}, timeout=120)
    assert warm.status_code == 200
    size = len(warm.content)
    assert size > MAX_PENDING_BYTES / 3, size
    time.sleep(1)
    start_rss = worker.memory_info().rss

    def handled() -> float:  # large requests computed (64 texts, over several batches), or refused for their bytes
        computed = metric(client, "gaze_batch_size_sum") / 64
        return computed + metric(client, "gaze_rejected_total", reason="pending_bytes")

    handled_before = handled()
    host, port = host_port(server)
    readers = []
    try:
        for i in range(16):  # each asks for a 14 MB answer and never reads a byte of it
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, port))
            sock.sendall(request_head(len(LARGE)) + LARGE)
            readers.append(sock)
            deadline = time.monotonic() + 60
            while handled() < handled_before + i + 1 and time.monotonic() < deadline:
                time.sleep(0.2)
        time.sleep(1)
        held = (worker.memory_info().rss - start_rss) / 1e6  # what the waiting answers take
        print(f"answers of {size / 1e6:.1f} MB; the worker had {start_rss / 1e6:.0f} MB, then {held:+.0f} MB")
        # The limit, overshot by the answers admitted while just under it, and allocator slack; generous
        # (runs vary by ±10 MB) yet far below the failure: before the limit, 16 readers took 285 MB here.
        assert held < (MAX_PENDING_BYTES + 6 * size) / 1e6, f"the worker holds {held:.0f} MB more for 16 readers"
        assert metric(client, "gaze_rejected_total", reason="pending_bytes") > 0
        # Past the send timeout the readers are dropped and their bytes freed: others are served again.
        time.sleep(SEND_TIMEOUT_S + 1)
        assert metric(client, "gaze_rejected_total", reason="send_timeout") > 0
        assert client.post("/classify", json={"texts": ["a gripping film"]}, timeout=60).status_code == 200
    finally:
        for sock in readers:
            sock.close()
    time.sleep(2)
    after = (worker.memory_info().rss - start_rss) / 1e6
    print(f"after they closed: {after:+.0f} MB")
    assert after < 100, f"{after:.0f} MB more than before the readers came (280 MB stayed before the fix)"


def test_bodies_still_uploading_are_bounded_per_worker(server, client):
    """Hostile review 2, M5: bodies were buffered without limit while they uploaded (80 clients holding the last
    byte of 7.6 MB bodies grew the workers by 644 MB). Past GAZE_MAX_RECEIVING_BYTES of bodies arriving at once,
    the body that would cross it gets 503 and its connection is closed; the others finish and are answered."""
    length = 7_000_000
    body = b'{"texts": ["a fine film"]' + b" " * (length - 26) + b"}"
    assert len(body) == length
    senders = [socket.create_connection(host_port(server)) for _ in range(3)]
    try:
        for sock in senders[:2]:  # 2 x 6 MB arriving: within the 16 MB
            sock.sendall(request_head(length) + body[:6_000_000])
        time.sleep(0.2)
        third = senders[2]
        third.settimeout(10)
        third.sendall(request_head(length) + body[:5_000_000])  # 17 MB at once: refused
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := third.recv(65536):
                data += chunk
        status, headers, answer = parse_response(data)
        assert status == 503 and headers.get("retry-after") == "1", data[:300]
        assert "bytes of request bodies are arriving at once" in json.loads(answer)["error"]
        for sock in senders[:2]:  # the first two finish within the body deadline and are answered
            sock.settimeout(10)
            sock.sendall(body[6_000_000:])
            status, _, answer = parse_response(read_response(sock))
            assert status == 200 and json.loads(answer)["predictions"][0]["label"], answer[:200]
    finally:
        for sock in senders:
            sock.close()
    assert client.post("/classify", content=body, headers={"content-type": JSON}).status_code == 200
    assert metric(client, "gaze_rejected_total", reason="receiving_bytes") >= 1
