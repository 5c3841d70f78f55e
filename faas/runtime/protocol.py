"""The JSON-lines frames exchanged with a worker process (see ARCHITECTURE.md, "Worker protocol")."""

from __future__ import annotations

from typing import Any

import msgspec

# Written by the worker to its log pipe after flushing, once a request's output is complete (unless its
# reply says the pipe was already drained).
SENTINEL_MARK = b"\x1e"
INIT_ID = "init"


# The stream content type that carries an HTTP status, headers and cookies for function URLs: a JSON prelude,
# 8 NUL bytes, then the body (Node's awslambda.HttpResponseStream.from writes it).
HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"


class WorkerFrame(msgspec.Struct, omit_defaults=True):
    """worker -> server: ready | init_error | chunk | result | error.

    A handler that streams its response (Node's `awslambda.streamifyResponse`, a Python generator) sends
    `{"t":"chunk","id":ID,"data":BASE64}` frames while it runs, the first carrying the stream's `content_type`,
    then `{"t":"result","id":ID,"streamed":true}` (or an error frame) to end the stream.
    """

    t: str
    id: str | None = None
    init_ms: float | None = None
    payload: msgspec.Raw = msgspec.Raw()
    error: dict[str, Any] | None = None
    # The worker ends after this reply (e.g. Node after an uncaught exception): do not reuse it.
    exiting: bool = False
    # The worker's peak resident memory in kB (Python workers report it; others are read from /proc).
    rss: int = 0
    data: bytes = b""  # a chunk's bytes (base64 in the JSON line)
    content_type: str | None = None
    streamed: bool = False  # on a result: the response went out as chunks; there is no payload
    # On a reply: the log pipe held no unread bytes when it was sent, so no sentinel follows (the server has
    # already read all of the request's output).
    drained: bool = False


class InvokeFrame(msgspec.Struct):
    """server -> worker. `event` is the client's JSON, passed through untouched."""

    id: str
    deadline_ms: int
    arn: str
    event: msgspec.Raw
    trace_id: str | None = None
    # `null` when absent: msgspec.Raw cannot be optional.
    client_context: msgspec.Raw = msgspec.Raw(b"null")
    identity: msgspec.Raw = msgspec.Raw(b"null")
    t: str = "invoke"


_encoder = msgspec.json.Encoder()
worker_frame_decoder = msgspec.json.Decoder(WorkerFrame)


def single_line(raw: bytes) -> bytes:
    """JSON text on one line: outside strings a newline is only whitespace, inside them it is escaped."""
    if b"\n" in raw or b"\r" in raw:
        return raw.replace(b"\r", b" ").replace(b"\n", b" ")
    return raw


def encode_invoke(frame: InvokeFrame) -> bytes:
    return _encoder.encode(frame) + b"\n"


SHUTDOWN = b'{"t":"shutdown"}\n'
