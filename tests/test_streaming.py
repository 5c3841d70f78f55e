"""Response streaming: InvokeWithResponseStream through boto3, RESPONSE_STREAM function URLs through aiohttp,
Node's awslambda.streamifyResponse and Python generator handlers. Timing tests: the function writes a chunk,
sleeps a second, writes another; the first chunk must reach the client well before the function ends."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from conftest import create_function

PY_STREAM = r'''
import time
def handler(event, context):
    if event.get("http"):
        yield {"statusCode": 207, "headers": {"content-type": "text/plain", "x-kind": "py"}, "cookies": ["a=1"]}
    yield "first\n"
    time.sleep(event.get("pause", 1.0))
    yield b"second\n"
    if event.get("fail"):
        raise RuntimeError("broke mid-stream")

def big(event, context):
    for _ in range(event["mib"]):
        yield b"x" * (1 << 20)

def url(event, context):
    return handler({"http": True}, context)

def plain(event, context):
    return {"not": "streaming"}
'''

NODE_STREAM = r'''
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
exports.http = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: { 'content-type': 'text/plain', 'x-kind': 'node' }, cookies: ['b=2'],
  });
  stream.write('first\n');
  await sleep(1000);
  stream.write('second\n');
  stream.end();
});
exports.raw = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType('text/csv');
  responseStream.write('a,b\n');
  await sleep(event.pause === undefined ? 1000 : event.pause);
  responseStream.write(Buffer.from('1,2\n'));
  if (event.fail) throw new Error('node broke');
  // not ended: the runtime ends the stream when the promise resolves
});
'''


def name_of(lam, code, handler, runtime="python3.11", **kwargs):
    files = {"index.js": code} if runtime.startswith("nodejs") else {"app.py": code}
    return create_function(lam, files, handler=handler, runtime=runtime, **kwargs)[0]


def stream_events(lam, name, payload: dict | None = None, **kwargs):
    """[(seconds since the call, event)] from invoke_with_response_stream, and the response."""
    started = time.monotonic()
    resp = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(payload or {}).encode(), **kwargs)
    events = [(time.monotonic() - started, e) for e in resp["EventStream"]]
    return events, resp


def chunks_of(events) -> bytes:
    return b"".join(e["PayloadChunk"]["Payload"] for _, e in events if "PayloadChunk" in e)


async def timed_get(server, url: str) -> tuple[aiohttp.ClientResponse, list[tuple[float, bytes]]]:
    parts = urlsplit(url)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.get(server.url + "/", headers={"Host": parts.netloc}) as resp:
            pieces = []
            async for data in resp.content.iter_any():
                pieces.append((time.monotonic() - started, data))
            return resp, pieces


def assert_streamed(pieces: list[tuple[float, bytes]], first: bytes, whole: bytes) -> None:
    """The body is `whole`, and its `first` bytes arrived at least 0.6 s before the end (the function slept
    1 s in between)."""
    seen, arrived = b"", None
    for t, data in pieces:
        seen += data
        if arrived is None and seen.startswith(first):
            arrived = t
    assert seen == whole
    assert arrived is not None and pieces[-1][0] - arrived > 0.6, pieces


def test_python_stream_through_boto3(lam):
    name = name_of(lam, PY_STREAM, "app.handler")
    events, resp = stream_events(lam, name, LogType="Tail")
    assert resp["StatusCode"] == 200 and resp["ExecutedVersion"] == "$LATEST"
    assert resp["ResponseStreamContentType"] == "application/octet-stream"
    assert chunks_of(events) == b"first\nsecond\n"
    first = next(t for t, e in events if "PayloadChunk" in e)
    assert events[-1][0] - first > 0.6, events
    (_, complete), = [(t, e) for t, e in events if "InvokeComplete" in e]
    assert "ErrorCode" not in complete["InvokeComplete"]
    log = base64.b64decode(complete["InvokeComplete"]["LogResult"]).decode()
    assert "START RequestId" in log and "REPORT RequestId" in log
    # Buffered Invoke of a streaming handler: the chunks, collected.
    assert lam.invoke(FunctionName=name, Payload=b'{"pause": 0}')["Payload"].read() == b"first\nsecond\n"


def test_node_stream_through_boto3(lam):
    name = name_of(lam, NODE_STREAM, "index.raw", runtime="nodejs20.x")
    events, resp = stream_events(lam, name)
    assert resp["ResponseStreamContentType"] == "text/csv"
    assert chunks_of(events) == b"a,b\n1,2\n"
    first = next(t for t, e in events if "PayloadChunk" in e)
    assert events[-1][0] - first > 0.6, events
    assert events[-1][1] == {"InvokeComplete": {}}
    assert lam.invoke(FunctionName=name, Payload=b'{"pause": 0}')["Payload"].read() == b"a,b\n1,2\n"


def test_stream_errors_and_plain_handlers(lam):
    py = name_of(lam, PY_STREAM, "app.handler")
    events, _ = stream_events(lam, py, {"fail": True, "pause": 0})
    assert chunks_of(events) == b"first\nsecond\n"
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "RuntimeError"
    assert json.loads(done["ErrorDetails"])["errorMessage"] == "broke mid-stream"
    node = name_of(lam, NODE_STREAM, "index.raw", runtime="nodejs20.x")
    events, _ = stream_events(lam, node, {"fail": True, "pause": 0})
    assert chunks_of(events) == b"a,b\n1,2\n"
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "Error" and json.loads(done["ErrorDetails"])["errorMessage"] == "node broke"
    # A handler that does not stream answers whole, as one chunk.
    plain = name_of(lam, PY_STREAM, "app.plain")
    events, resp = stream_events(lam, plain)
    assert chunks_of(events) == b'{"not":"streaming"}' and resp["ResponseStreamContentType"] == "application/json"
    # The instances stay usable after errors.
    events, _ = stream_events(lam, py, {"pause": 0})
    assert chunks_of(events) == b"first\nsecond\n"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_with_response_stream(FunctionName=py + "-missing")


def test_stream_size_limits(lam):
    name = name_of(lam, PY_STREAM, "app.big", MemorySize=512)
    events, _ = stream_events(lam, name, {"mib": 8})  # past the 6 MB buffered limit
    assert len(chunks_of(events)) == 8 << 20 and events[-1][1] == {"InvokeComplete": {}}
    events, _ = stream_events(lam, name, {"mib": 21})  # past 20 MiB
    done = events[-1][1]["InvokeComplete"]
    assert done["ErrorCode"] == "Function.ResponseSizeTooLarge"
    assert len(chunks_of(events)) <= 20 << 20
    buffered = lam.invoke(FunctionName=name, Payload=b'{"mib": 7}')
    assert buffered["FunctionError"] == "Unhandled"
    assert json.loads(buffered["Payload"].read())["errorType"] == "Function.ResponseSizeTooLarge"


@pytest.mark.parametrize("runtime, handler, status, kind", [
    ("python3.11", "app.url", 207, "py"),
    ("nodejs20.x", "index.http", 201, "node"),
])
def test_streaming_url_timing(server, lam, runtime, handler, status, kind):
    name = name_of(lam, NODE_STREAM if runtime.startswith("nodejs") else PY_STREAM, handler, runtime=runtime)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM",
                                         Cors={"AllowOrigins": ["*"]})["FunctionUrl"]
    resp, pieces = asyncio.run(timed_get(server, url))
    assert resp.status == status and resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["x-kind"] == kind and resp.headers.get("Transfer-Encoding") == "chunked"
    assert resp.headers.getall("Set-Cookie") == (["a=1"] if kind == "py" else ["b=2"])
    assert_streamed(pieces, b"first\n", b"first\nsecond\n")


def test_streaming_url_shapes(server, lam):
    # No prelude: the stream's content type; a plain handler: its response inferred as for BUFFERED URLs;
    # an error before the first byte: 502.
    node = name_of(lam, NODE_STREAM, "index.raw", runtime="nodejs20.x")
    plain = name_of(lam, PY_STREAM, "app.plain")
    broken = name_of(lam, "def handler(e, c):\n    raise ValueError('no')\n    yield b''\n", "app.handler")
    urls = [lam.create_function_url_config(FunctionName=n, AuthType="NONE", InvokeMode="RESPONSE_STREAM")[
        "FunctionUrl"] for n in (node, plain, broken)]
    resp, pieces = asyncio.run(timed_get(server, urls[0]))
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/csv"
    assert_streamed(pieces, b"a,b\n", b"a,b\n1,2\n")
    resp, pieces = asyncio.run(timed_get(server, urls[1]))
    assert resp.status == 200 and b"".join(p for _, p in pieces) == b'{"not":"streaming"}'
    resp, pieces = asyncio.run(timed_get(server, urls[2]))
    assert resp.status == 502 and b"".join(p for _, p in pieces) == b"Internal Server Error"
    # A BUFFERED URL in front of a streaming handler: the prelude still gives status and headers.
    py = name_of(lam, PY_STREAM, "app.url")
    url = lam.create_function_url_config(FunctionName=py, AuthType="NONE")["FunctionUrl"]
    resp, pieces = asyncio.run(timed_get(server, url))
    assert resp.status == 207 and resp.headers["x-kind"] == "py"
    assert b"".join(p for _, p in pieces) == b"first\nsecond\n"


def test_client_leaving_mid_stream(server, lam):
    """A client that disconnects mid-stream breaks neither the function nor later requests."""
    name = name_of(lam, NODE_STREAM, "index.raw", runtime="nodejs20.x")
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")[
        "FunctionUrl"]

    async def leave_early() -> bytes:
        async with aiohttp.ClientSession() as session:
            async with session.get(server.url + "/", headers={"Host": urlsplit(url).netloc}) as resp:
                return await resp.content.readany()

    assert asyncio.run(leave_early()) == b"a,b\n"
    resp, pieces = asyncio.run(timed_get(server, url))
    assert resp.status == 200 and b"".join(p for _, p in pieces) == b"a,b\n1,2\n"
    events, _ = stream_events(lam, name, {"pause": 0})
    assert chunks_of(events) == b"a,b\n1,2\n"
