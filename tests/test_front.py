"""The invoke front (faas.api.front): plain Invoke requests answered by faas's own HTTP parser, everything else
handed to aiohttp on the same connection. Driven over raw sockets against the real server, comparing each
answer with the one aiohttp gives for the same request."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest

from conftest import create_function, front_counts, unique

CODE = """
import time

def handler(event, context):
    if not isinstance(event, dict):
        return {"echo": event}
    if event.get("fail"):
        raise ValueError("bad " + context.aws_request_id)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    print("seen", context.aws_request_id)
    return {"echo": event}
"""

INVOKE = "/2015-03-31/functions/{}/invocations"


class Conn:
    """A raw HTTP/1.1 connection: requests as bytes, answers read by Content-Length."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-answer: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            assert self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed_by_server(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(30)

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def fn(lam):
    name, _ = create_function(lam, CODE)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    yield name
    lam.delete_function(FunctionName=name)


def handed_over(port: int) -> Conn:
    """A connection aiohttp has taken: its first request was another operation."""
    conn = Conn(port)
    conn.send(request("GET", "/2015-03-31/functions?MaxItems=1"))
    assert conn.response()[0] == 200
    return conn


_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalised(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = answer
    request_id = headers.get("x-amzn-requestid", "").encode()
    assert _ID.fullmatch(request_id)
    kept = {k: v for k, v in headers.items() if k not in ("x-amzn-requestid", "date", "x-amz-log-result")}
    if "x-amz-log-result" in headers:
        kept["x-amz-log-result"] = "present"
    return status, kept, body.replace(request_id, b"<id>")


def test_front_answers_as_aiohttp_does(server, fn):
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{fn}"
    cases = [
        request("POST", INVOKE.format(fn), b'{"a": 1}'),
        request("POST", INVOKE.format(fn), b""),
        request("POST", INVOKE.format(fn) + "?Qualifier=live", b'{"q": true}'),
        request("POST", INVOKE.format(arn.replace(":", "%3A")), b"[1, 2]"),
        request("POST", INVOKE.format(fn), b'{"fail": 1}', {"X-Amz-Log-Type": "Tail"}),
        request("POST", INVOKE.format(fn), b"{}", {"X-Amz-Invocation-Type": "DryRun"}),
        request("POST", INVOKE.format(fn), b"{}", {"X-Amz-Invocation-Type": "Event"}),
        request("POST", INVOKE.format(fn), b"{}", {"x-amz-invocation-type": "Bogus"}),
        request("POST", INVOKE.format(fn), b"{}", {"X-Amz-Log-Type": "Loud"}),
        request("POST", INVOKE.format(fn), b"{not json"),
        request("POST", INVOKE.format(unique("missing")), b"{}"),
        request("POST", INVOKE.format(fn) + "?Qualifier=nope", b"{}"),
        request("POST", INVOKE.format("a" * 200), b"{}"),
        request("POST", INVOKE.format("bad~name"), b"{}"),  # last: an escaped name the front hands over
    ]
    before = front_counts(server.url)
    front, aio = Conn(server.port), handed_over(server.port)
    try:
        for raw in cases:
            front.send(raw)
            ours = normalised(front.response())
            aio.send(raw)
            theirs = normalised(aio.response())
            assert ours == theirs, raw
    finally:
        front.close()
        aio.close()
    after = front_counts(server.url)
    # Every case but the last was the front's own; three connections went to aiohttp: the two here and the
    # second scrape's own (a GET /metrics).
    assert (after[0] - before[0], after[1] - before[1]) == (len(cases) - 1, 3)


def test_pipelined_requests_are_answered_in_order_then_handed_over(server, fn):
    conn = Conn(server.port)
    try:
        burst = b"".join(request("POST", INVOKE.format(fn), json.dumps({"n": n}).encode()) for n in range(3))
        burst += request("GET", f"/2015-03-31/functions/{fn}")  # another operation: aiohttp's from here
        burst += request("POST", INVOKE.format(fn), b'{"n": 3}')
        conn.send(burst)
        for n in range(3):
            status, _, body = conn.response()
            assert status == 200 and json.loads(body) == {"echo": {"n": n}}
        status, _, body = conn.response()
        assert status == 200 and json.loads(body)["Configuration"]["FunctionName"] == fn
        status, _, body = conn.response()
        assert status == 200 and json.loads(body) == {"echo": {"n": 3}}
    finally:
        conn.close()


def test_a_request_dribbled_byte_by_byte(server, fn):
    conn = Conn(server.port)
    try:
        for byte in request("POST", INVOKE.format(fn), b'{"slow": "client"}'):
            conn.send(bytes([byte]))
        status, _, body = conn.response()
        assert status == 200 and json.loads(body) == {"echo": {"slow": "client"}}
    finally:
        conn.close()


@pytest.mark.parametrize("raw, status, error_type", [
    (request("POST", INVOKE.format("{fn}"), b"", {"Transfer-Encoding": "chunked"}) + b"1\r\n3\r\n1\r\n7\r\n0\r\n\r\n",
     200, None),
    (request("POST", INVOKE.format("{fn}"), b"7", {"Expect": "100-continue"}), 200, None),
    (request("POST", INVOKE.format("{fn}"), b"7", {"Connection": "close"}), 200, None),
    (request("POST", INVOKE.format("{fn}"), b"7", version="HTTP/1.0"), 200, None),
    (request("POST", INVOKE.format("{fn}"), b"7", {"X-Odd": "caf\u00e9"}), 200, None),
    (request("POST", INVOKE.format("{fn}"), b"7" * (6 * 1048576 + 1)), 413, "RequestTooLargeException"),
    (b"POST " + INVOKE.format("{fn}").encode() + b" HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n7",
     400, None),
    (b"BREW /pot HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, None),
    (b"PUT /pot HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 404, "UnknownOperationException"),
    (b"POST " + INVOKE.format("{fn}").encode() + b" HTTP/1.1\r\nContent-Length: 1\r\n\r\n7", 400, None),
    (b"\x16\x03\x01garbage\r\n\r\n", 400, None),
    (b"POST " + INVOKE.format("{fn}").encode() + b" HTTP/1.1\nHost: x\nContent-Length: 1\n\n7", 400, None),
])
def test_requests_the_front_does_not_take_get_aiohttps_answer(server, fn, raw, status, error_type):
    """Chunked and Expect bodies, Connection: close, HTTP/1.0, non-ASCII headers, oversized payloads and
    malformed requests all reach aiohttp, which answers as it always has."""
    conn = Conn(server.port)
    try:
        conn.send(raw.replace(b"%7Bfn%7D", fn.encode()).replace(b"{fn}", fn.encode()))
        if b"100-continue" in raw:
            interim = conn.response()
            assert interim[0] == 100
        got, headers, body = conn.response()
        assert got == status, body
        assert headers.get("x-amzn-errortype") == error_type
        if status == 200:
            assert json.loads(body) == {"echo": 7 if b"chunked" not in raw else 37}
    finally:
        conn.close()


def test_function_url_host_goes_to_the_url_server(server, fn):
    conn = Conn(server.port)
    try:
        raw = request("POST", INVOKE.format(fn), b"{}").replace(b"Host: 127.0.0.1", b"Host: nope.lambda-url.x.localhost")
        conn.send(raw)
        status, headers, body = conn.response()
        assert status == 403 and headers["x-amzn-errortype"] == "AccessDeniedException"
    finally:
        conn.close()


def test_a_client_that_leaves_mid_invoke(server, fn, lam):
    conn = Conn(server.port)
    conn.send(request("POST", INVOKE.format(fn), b'{"sleep": 0.5}'))
    time.sleep(0.1)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    time.sleep(0.6)
    resp = lam.invoke(FunctionName=fn, Payload=b'{"after": 1}')
    assert json.loads(resp["Payload"].read()) == {"echo": {"after": 1}}


def test_half_closed_client_still_gets_its_answer(server, fn):
    conn = Conn(server.port)
    try:
        conn.send(request("POST", INVOKE.format(fn), b'{"sleep": 0.2}'))
        conn.sock.shutdown(socket.SHUT_WR)
        status, _, body = conn.response()
        assert status == 200 and json.loads(body) == {"echo": {"sleep": 0.2}}
        assert conn.closed_by_server(5)
    finally:
        conn.close()


def test_idle_connections_close_after_the_keepalive_timeout(own_server):
    srv = own_server(FAAS_SERVER__KEEPALIVE_TIMEOUT=1)
    name, _ = create_function(srv.client(), CODE)
    idle, busy = Conn(srv.port), Conn(srv.port)
    try:
        idle.send(request("POST", INVOKE.format(name), b"{}"))
        assert idle.response()[0] == 200
        busy.send(request("POST", INVOKE.format(name), b'{"sleep": 2.5}'))
        assert idle.closed_by_server(4)
        status, _, body = busy.response()  # a running invocation's connection is not idle
        assert status == 200 and json.loads(body) == {"echo": {"sleep": 2.5}}
    finally:
        idle.close()
        busy.close()


def test_stopping_lets_the_front_finish_answers_in_progress(own_server):
    srv = own_server()
    name, _ = create_function(srv.client(), CODE)
    conn = Conn(srv.port)
    answer: list = []
    try:
        conn.send(request("POST", INVOKE.format(name), b'{"warm": 1}'))
        assert conn.response()[0] == 200
        conn.send(request("POST", INVOKE.format(name), b'{"sleep": 1}'))
        reader = threading.Thread(target=lambda: answer.append(conn.response()))
        reader.start()
        time.sleep(0.3)
        assert srv.stop() == 0
        reader.join(10)
        status, _, body = answer[0]
        assert status == 200 and json.loads(body) == {"echo": {"sleep": 1}}
    finally:
        conn.close()


def test_without_the_front_aiohttp_serves_invoke(own_server):
    srv = own_server(FAAS_SERVER__INVOKE_FRONT="false")
    name, _ = create_function(srv.client(), CODE)
    conn = Conn(srv.port)
    try:
        conn.send(request("POST", INVOKE.format(name), b'{"a": 1}'))
        status, headers, body = conn.response()
        assert status == 200 and json.loads(body) == {"echo": {"a": 1}}
        assert headers["x-amz-executed-version"] == "$LATEST"
    finally:
        conn.close()


def test_a_payload_near_the_limit_both_ways(server, fn):
    """A body arriving in many reads, and an answer written in two parts (head, then the large body)."""
    text = "x" * (6 * 1048576 - 200)
    conn = Conn(server.port)
    try:
        conn.send(request("POST", INVOKE.format(fn), json.dumps(text).encode()))
        status, headers, body = conn.response()
        assert status == 200 and "x-amz-function-error" not in headers, body[:200]
        assert int(headers["content-length"]) == len(body) and json.loads(body) == {"echo": text}
        before = front_counts(server.url)[0]
        conn.send(request("POST", INVOKE.format(fn), b'{"after": "large"}'))  # the connection goes on
        status, _, body = conn.response()
        assert status == 200 and json.loads(body) == {"echo": {"after": "large"}}
        assert front_counts(server.url)[0] == before + 1
    finally:
        conn.close()
