"""The invoke front: the listening socket's protocol, which answers plain Invoke requests itself and hands
every other connection to aiohttp.

aiohttp's web stack (request objects, routing, middlewares, response objects) costs about 45 us of CPU per
request on a small VM, a third of a warm invocation's whole cost in the server. A warm Invoke needs none of it,
so each connection starts here: while its requests are simple Invokes, they are parsed (a strict subset of
HTTP/1.1), validated with the same model plan, answered by the same `invoke_reply` as the aiohttp route, and
written directly. The first request that is anything else (another operation, a function URL, chunked or
`Expect: 100-continue` bodies, `Connection: close`, HTTP/1.0, a payload over the synchronous limit, a header
this parser does not take) hands the connection, with every byte not yet answered, to aiohttp's own
protocol for good: aiohttp then parses it from its first byte, so anything unusual meets aiohttp's parser and
answers, never a second opinion.

Requests on one connection are answered in order; bytes of a pipelined request wait until the one before it
is answered. Idle connections close after `keepalive_timeout` (aiohttp's default, 75 s). `FrontSite` replaces
aiohttp's TCPSite; on stop it lets requests in progress finish (within the shutdown timeout) before the
application's services close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict, MultiDict

from faas import ids
from faas.api.invoke import invoke_reply
from faas.api.model import LAMBDA_MODEL, Reply, check_input, collect_input, error_reply, input_plan
from faas.errors import LambdaError, ServiceException
from faas.flow_control import WriteFlow
from faas.services import SERVICES

log = logging.getLogger(__name__)

_INVOKE_PATH = re.compile(r"/2015-03-31/functions/([A-Za-z0-9_.:$%-]+)/invocations")
# Header lines: a name (an RFC 9110 token), a colon, a value without control characters (else aiohttp's parser
# decides); checked for the whole head at once.
_FIELDS = re.compile(r"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*)*")
_HANDED_OVER = frozenset({"transfer-encoding", "expect", "upgrade", "te"})
_MAX_HEAD = 16384  # a head still unfinished after this much is aiohttp's to judge
_BARE_LF = re.compile(rb"(?:^|[^\r])\n")  # a line ended without CR: this front never sees the head end
_PAUSE_AT = 1 << 20  # pipelined bytes buffered while a request runs before reading pauses
_EMPTY_QUERY: MultiDict[str] = MultiDict()
# Connections waiting to be accepted. asyncio's default (100) overflows when a burst of clients connects
# while the loop is busy, and each dropped SYN costs its client a 1 s retransmission timeout.
BACKLOG = 1024


class _Head:
    __slots__ = ("function_name", "query", "headers", "length")

    def __init__(self, function_name: str, query: MultiDict[str], headers: CIMultiDict[str], length: int):
        self.function_name = function_name
        self.query = query
        self.headers = headers
        self.length = length


def parse_head(head: bytes) -> _Head | None:
    """An Invoke request's head (without its final blank line), or None when this front does not take it."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    first, _, fields = text.partition("\r\n")
    if fields and _FIELDS.fullmatch(text, len(first)) is None:
        return None
    parts = first.split(" ")
    if len(parts) != 3 or parts[0] != "POST" or parts[2] != "HTTP/1.1":
        return None
    path, _, query = parts[1].partition("?")
    match = _INVOKE_PATH.fullmatch(path)
    if match is None:
        return None
    name = match.group(1)
    if "%" in name:  # botocore escapes the colons of an ARN; anything else escaped goes to aiohttp
        name = name.replace("%3A", ":").replace("%3a", ":")
        if "%" in name:
            return None
    headers: CIMultiDict[str] = CIMultiDict()
    length = None
    host = False
    for line in fields.split("\r\n") if fields else ():
        field, _, value = line.partition(":")
        value = value.strip(" \t")
        lower = field.lower()
        if lower in _HANDED_OVER:
            return None
        if lower == "content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif lower == "connection":
            if value.lower() != "keep-alive":
                return None
        elif lower == "host":
            if host or ".lambda-url." in value:
                return None  # a function URL request (by host name), or a second Host
            host = True
        headers.add(field, value)
    if length is None or not host:
        return None
    params = MultiDict(parse_qsl(query, keep_blank_values=True)) if query else _EMPTY_QUERY
    return _Head(name, params, headers, length)


class Front:
    """What the connections of one listening socket share."""

    def __init__(self, app: web.Application, server: web.Server, keepalive_timeout: float = 75.0):
        self.svc = app[SERVICES]
        self.metrics = self.svc.metrics
        self.plan = input_plan(app[LAMBDA_MODEL], "Invoke")
        self.max_body = self.svc.config.limits.sync_payload_bytes
        self.server = server
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[InvokeConnection] = set()
        self.closing = False
        self._date_at = 0
        self._date = b""
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> InvokeConnection:
        return InvokeConnection(self)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_timeout / 4, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for longer than the keep-alive timeout."""
        now = time.monotonic()
        for conn in list(self.connections):
            if not conn.busy and now - conn.idle_since > self.keepalive_timeout:
                conn.close()
        self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_timeout / 4, self._sweep)

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = f"Date: {formatdate(now, usegmt=True)}\r\nServer: {SERVER_SOFTWARE}\r\n".encode()
        return self._date

    async def close(self, timeout: float) -> None:
        """Stop: idle connections close now, busy ones after their answer (or after `timeout`)."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if not conn.busy:
                conn.close()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()

    async def answer(self, head: _Head, body: bytes) -> Reply:
        request_id = ids.request_id()
        self.metrics.front_requests += 1
        try:
            params = collect_input(self.plan, {"FunctionName": head.function_name}, head.headers, head.query, body)
            check_input("Invoke", self.plan, params)
            return await invoke_reply(self.svc, params, request_id, head.headers.get("X-Amzn-Trace-Id"))
        except LambdaError as err:
            return error_reply(err, request_id)
        except Exception:
            log.exception("unhandled error serving Invoke of %s", head.function_name)
            return error_reply(ServiceException("An internal error occurred."), request_id)


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class InvokeConnection(WriteFlow, asyncio.Protocol):
    """One client connection, until it is handed to aiohttp."""

    def __init__(self, front: Front):
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.idle_since = time.monotonic()
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._reading_paused = False
        self._task: asyncio.Task[None] | None = None  # the request being answered (the loop keeps weak refs)

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tcp_keepalive(transport)  # type: ignore[arg-type]
        if self.front.closing:
            transport.close()
            return
        self.front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._buf += data
        if not self.busy:
            self._next()
        elif len(self._buf) > _PAUSE_AT and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._eof = True
        if not self.busy:
            self._next()
        return True  # an answer in progress may still be written

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        self.release_writer()

    # -- requests --------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start answering the next whole request in the buffer, hand the connection over, or wait for more."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD or (self._eof and buf) or _BARE_LF.search(buf):
                self._hand_over()
            elif self._eof or self.front.closing:
                self.close()
            return
        if self.front.closing:
            self.close()
            return
        head = parse_head(bytes(buf[:end])) if end else None
        if head is None or head.length > self.front.max_body:
            self._hand_over()
            return
        start = end + 4
        if len(buf) - start < head.length:
            if self._eof:
                self._hand_over()  # a truncated request: aiohttp's answer
            return
        body = bytes(buf[start:start + head.length])
        del buf[:start + head.length]
        self.busy = True
        self._task = asyncio.get_running_loop().create_task(self._serve(head, body))

    async def _serve(self, head: _Head, body: bytes) -> None:
        try:
            reply = await self.front.answer(head, body)
            if not self._closed and not self.transport.is_closing():  # type: ignore[union-attr]
                self._write(reply)
                if self.writable is not None:
                    await self.writable
        finally:
            self.busy = False
            self._task = None
            self.idle_since = time.monotonic()
        if self._closed:
            return
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._next()

    def _write(self, reply: Reply) -> None:
        status, headers, body = reply
        lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()]
        lines.append("".join([f"{k}: {v}\r\n" for k, v in headers.items()]).encode())
        if status != 204:
            lines.append(b"Content-Length: %d\r\n" % (len(body) if body else 0))
        lines.append(self.front.date())
        lines.append(b"\r\n")
        if body and status != 204:
            if len(body) <= 65536:
                lines.append(body)
            else:
                self.transport.write(b"".join(lines))  # type: ignore[union-attr]
                lines = [body]
        self.transport.write(b"".join(lines))  # type: ignore[union-attr]

    def _hand_over(self) -> None:
        """aiohttp's protocol takes the connection from here on, starting with the bytes not yet answered."""
        transport = self.transport
        assert transport is not None
        self._leave()
        self.front.metrics.front_handovers += 1
        handler: Any = self.front.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data, self._buf = bytes(self._buf), bytearray()
        if data:
            handler.data_received(data)
        if self._eof:
            handler.eof_received()
        if self._reading_paused:
            transport.resume_reading()

    def _leave(self) -> None:
        """This connection is no longer the front's: closed, lost or handed to aiohttp."""
        self._closed = True
        self.front.connections.discard(self)

    def close(self) -> None:
        self._leave()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._leave()
        if self.transport is not None:
            self.transport.abort()


class FrontSite(web.TCPSite):
    """aiohttp's TCPSite with the invoke front as the listening socket's protocol."""

    __slots__ = ("front", "_timeout", "_keepalive")

    def __init__(self, runner: web.AppRunner, host: str, port: int, shutdown_timeout: float,
                 keepalive_timeout: float = 75.0) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=BACKLOG)
        self.front: Front | None = None
        self._timeout = shutdown_timeout
        self._keepalive = keepalive_timeout

    async def start(self) -> None:
        self._runner._reg_site(self)  # noqa: SLF001 - what BaseSite.start does
        runner = self._runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        self.front = Front(runner.app, runner.server, self._keepalive)
        self.front.start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.front, self._host, self._port, reuse_address=True,
                                                backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await super().stop()  # stops listening
        if self.front is not None:
            with contextlib.suppress(Exception):
                await self.front.close(self._timeout)
