"""Pins the wire format of every error type the server sends: status, x-amzn-ErrorType, body members."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from conftest import ROLE, create_function, unique


def call(server, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    req = urllib.request.Request(server.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def create_body(name: str, **overrides) -> bytes:
    doc = {"FunctionName": name, "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
           "Code": {"ZipFile": base64.b64encode(b"not a zip").decode()}, **overrides}
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def existing(lam):
    name, created = create_function(lam, "import time\ndef handler(e, c):\n    time.sleep(e.get('s', 0))\n    return 1\n")
    return name, created


def cases(server, existing):
    name, created = existing
    fn = "/2015-03-31/functions"
    yield "ResourceNotFoundException", 404, {"Type", "Message"}, call(server, "GET", f"{fn}/{unique('none')}")
    yield "ValidationException", 400, {"message"}, call(server, "GET", f"{fn}/bad!name")
    yield "InvalidParameterValueException", 400, {"Type", "message"}, call(server, "POST", fn, create_body(unique()))
    yield "ResourceConflictException", 409, {"Type", "message"}, call(
        server, "POST", fn, create_body(name))
    yield "PreconditionFailedException", 412, {"Type", "message"}, call(
        server, "PUT", f"{fn}/{name}/configuration", json.dumps({"RevisionId": "stale"}).encode())
    yield "InvalidRequestContentException", 400, {"Type", "message"}, call(
        server, "POST", f"{fn}/{name}/invocations", b"{oops")
    yield "RequestTooLargeException", 413, {"Type", "message"}, call(
        server, "POST", f"{fn}/{name}/invocations", b'"' + b"x" * 6_400_000 + b'"')
    yield "UnknownOperationException", 404, {"Message"}, call(server, "GET", "/no/such/route")
    yield "AccessDeniedException", 403, {"Message"}, call(
        server, "GET", f"{fn}/arn:aws:lambda:us-east-1:111111111111:function:x")


def test_error_wire_format(server, existing):
    seen = set()
    for code, status, keys, (got_status, headers, body) in cases(server, existing):
        assert got_status == status, (code, body)
        assert headers["x-amzn-ErrorType"] == code
        assert headers["Content-Type"].startswith("application/json")
        assert headers["x-amzn-RequestId"]
        doc = json.loads(body)
        assert set(doc) == keys, (code, doc)
        if "Type" in doc:
            assert doc["Type"] == "User"
        seen.add(code)
    assert len(seen) == 9


def test_throttle_wire_format(tmp_path):
    from conftest import Server

    srv = Server(tmp_path / "d", env={"FAAS_ACCOUNT__CONCURRENT_EXECUTIONS": "0"}).start()
    try:
        lam = srv.client()
        name, _ = create_function(lam, "def handler(e, c):\n    return 1\n")
        status, headers, body = call(srv, "POST", f"/2015-03-31/functions/{name}/invocations", b"{}")
        assert status == 429 and headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert json.loads(body) == {"Type": "User", "message": "Rate Exceeded.",
                                    "Reason": "ConcurrentInvocationLimitExceeded"}
    finally:
        srv.stop()
