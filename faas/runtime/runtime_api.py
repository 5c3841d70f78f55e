"""One execution environment for a custom runtime (provided.*): the package's `bootstrap`, speaking AWS's
Lambda Runtime API (version 2018-06-01) over HTTP.

Each instance serves its own small HTTP listener on 127.0.0.1 and hands its address to the process as
AWS_LAMBDA_RUNTIME_API. The runtime long-polls `GET .../invocation/next` for an event and answers it with
`POST .../invocation/{id}/response` or `.../error`; a runtime that cannot start reports `POST .../init/error`.
The public interface is `Instance`'s, so the pool can hold either kind.

A custom runtime writes no sentinel to its log, so output is attributed by time: everything read before the
first `/next` is init output; everything read from then until an invocation's result arrives (plus a short
drain, until the pipe holds no unread bytes) belongs to that invocation.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import fcntl
import os
import shutil
import signal
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from faas.runtime.instance import (
    _LOG_CHUNK,
    _SIGNAL_WORDS,
    InitFailure,
    InstanceSpec,
    Outcome,
    _ids,
    _LogCollector,
    _peak_rss_mb,
)
from faas.runtime.protocol import InvokeFrame, single_line
from faas.runtime.spawner import DIE_WITH_PARENT, in_cgroup

API_VERSION = "2018-06-01"
_PREFIX = f"/{API_VERSION}/runtime"
# The largest response the Runtime API accepts from a runtime (Lambda's 6 MB synchronous limit).
MAX_RESPONSE_BYTES = 6291556
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
# Output attribution: after a result arrives, wait until the log pipe is empty (or, where its fill level
# cannot be read, quiet for _DRAIN_QUIET), for at most _DRAIN_MAX.
_DRAIN_QUIET = 0.008
_DRAIN_MAX = 0.05
# After `init/error` the runtime should exit by itself; it is killed after this long.
_INIT_ERROR_GRACE = 0.5

_encode = msgspec.json.encode


def _api_error(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"errorMessage": message, "errorType": error_type}, status=status)


_ACCEPTED = b'{"status":"OK"}'


def _accepted() -> web.Response:
    return web.Response(status=202, body=_ACCEPTED, content_type="application/json")


def _decode_error(body: bytes, header: str | None) -> tuple[dict[str, Any] | None, str]:
    """An error report from the runtime: its JSON object (or None if the body is not one) and its type.
    The body's `errorType` wins; the Lambda-Runtime-Function-Error-Type header stands in for it."""
    obj: Any = None
    with contextlib.suppress(msgspec.DecodeError, UnicodeDecodeError):
        obj = msgspec.json.decode(body) if body.strip() else None
    if isinstance(obj, dict):
        error_type = obj.get("errorType") or header or "Runtime.Unknown"
        return obj, str(error_type)
    return None, header or "Runtime.Unknown"


def _error_fallback(body: bytes, error_type: str) -> dict[str, Any]:
    return {"errorMessage": body.decode("utf-8", "replace"), "errorType": error_type}


class _Call:
    """One invocation on its way through the Runtime API."""

    __slots__ = ("frame", "result", "sent")

    def __init__(self, frame: InvokeFrame, result: asyncio.Future[tuple[str, bytes, str | None]]):
        self.frame = frame
        # (kind, payload, error type): kind is "response" | "error" | "too_large" | "exit".
        self.result = result
        self.sent: float | None = None  # perf_counter() when the event went out on /next


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class RuntimeApiInstance:
    """A custom runtime's process and its Runtime API listener. Same interface as `Instance`."""

    def __init__(self, spec: InstanceSpec):
        self.spec = spec
        self.on_spawn: Callable[[int], None] | None = None
        self.cgroup: str | None = None  # the memory cgroup the bootstrap starts in
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.log_stream = ""
        self.proc: asyncio.subprocess.Process | None = None
        self.init_ms = 0.0
        self.init_output = b""
        self.invocations = 0
        self.last_used = time.monotonic()
        self.started_at = time.monotonic()
        self.address = ""  # host:port of the Runtime API, as the process sees it
        self._runner: web.AppRunner | None = None
        self._logs: _LogCollector | None = None
        self._log_transport: asyncio.ReadTransport | None = None
        self._log_fd: int | None = None
        self._tmp: Path | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._dead = False
        self._closing = False
        self._spawned = 0.0
        # Resolved with "ready" (first /next), "error" (init/error) or "exit" (the process ended first).
        self._init: asyncio.Future[str] | None = None
        self._init_error: dict[str, Any] | None = None
        self._current: _Call | None = None  # the invocation last handed out on /next
        self._queue: collections.deque[_Call] = collections.deque()  # invocations no /next has taken yet
        self._waiters: collections.deque[tuple[asyncio.Future[_Call | None], web.Request]] = collections.deque()

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc is not None and self.proc.returncode is None

    @property
    def _sandboxed(self) -> bool:
        return bool(getattr(self.spec, "sandboxed", False))

    @property
    def _response_limit(self) -> int:
        return min(MAX_RESPONSE_BYTES, self.spec.max_frame_bytes)

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self, env: dict[str, str], log_stream: str) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        self.log_stream = log_stream
        self._tmp = Path(spec.work_dir) / self.id
        # Inside the sandbox the process has a private /tmp of its own.
        tmp = Path("/tmp") if self._sandboxed else self._tmp / "tmp"
        if not self._sandboxed:
            tmp.mkdir(parents=True, exist_ok=True)
        self._init = loop.create_future()
        started = time.perf_counter()
        bootstrap = spec.command[0] if spec.command else ""
        problem = self._entrypoint_problem()
        if problem is not None:
            await self.stop()
            raise InitFailure(self._invalid_entrypoint(problem), b"", (time.perf_counter() - started) * 1000)
        await self._listen()
        log_r, log_w = os.pipe()
        try:
            full_env = dict(env)
            full_env.update(
                AWS_LAMBDA_RUNTIME_API=self.address, TMPDIR=str(tmp), AWS_LAMBDA_LOG_STREAM_NAME=log_stream,
            )
            self._spawned = time.perf_counter()
            self.proc = await asyncio.create_subprocess_exec(
                *DIE_WITH_PARENT, *in_cgroup(self.cgroup, spec.command),
                stdin=asyncio.subprocess.DEVNULL, stdout=log_w, stderr=log_w,
                cwd=spec.code_dir, env=full_env, start_new_session=True,
            )
            if self.on_spawn is not None:
                self.on_spawn(self.proc.pid)
        except OSError as exc:
            # The kernel would not run it: no interpreter for its #!, a binary for another machine, ...
            os.close(log_r)
            await self.stop()
            reason = (exc.strerror or str(exc)).lower()
            raise InitFailure(
                self._invalid_entrypoint(f"fork/exec {bootstrap}: {reason}"), b"",
                (time.perf_counter() - started) * 1000,
            ) from None
        except BaseException:
            os.close(log_r)
            raise
        finally:
            os.close(log_w)
        log_reader = asyncio.StreamReader(limit=_LOG_CHUNK * 4)
        self._log_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(log_reader), os.fdopen(log_r, "rb", buffering=0)
        )
        self._log_fd = log_r
        self._logs = _LogCollector(log_reader)
        self._watcher = asyncio.create_task(self._watch_exit(), name=f"faas-runtime-api-exit-{self.id}")

        try:
            state = await asyncio.wait_for(asyncio.shield(self._init), spec.init_timeout_s)
        except asyncio.TimeoutError:
            output = await self._kill_and_collect()
            await self.stop()
            raise InitFailure(
                {"errorType": "Runtime.InitTimeout",
                 "errorMessage": f"Init phase timed out after {spec.init_timeout_s:.2f} seconds"},
                output, (time.perf_counter() - started) * 1000,
            ) from None
        if state == "ready":
            await self._drain_logs()
            self.init_output = self._logs.take()
            return
        init_ms = (time.perf_counter() - started) * 1000
        if state == "error" and self._init_error is not None:
            # The runtime is expected to exit after reporting; give it a moment, then make sure.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._watcher), _INIT_ERROR_GRACE)
            output = await self._kill_and_collect()
            error = self._init_error
        else:
            output = await self._kill_and_collect()
            error = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {{id}} Error: Runtime exited with error: {self._exit_reason()}",
            }
        await self.stop()
        raise InitFailure(error, output, init_ms)

    def _entrypoint_problem(self) -> str | None:
        """Why the bootstrap cannot be run, checked before spawning; None if it looks runnable."""
        spec = self.spec
        code_bootstrap = str(Path(spec.code_dir) / "bootstrap")
        opt_bootstrap = str(Path(spec.opt_dir) / "bootstrap") if spec.opt_dir else ""
        if self._sandboxed:
            # The command is the sandbox's; the bootstrap is the package's file, or the layers'.
            candidates = [p for p in (code_bootstrap, opt_bootstrap) if p]
        else:
            candidates = list(spec.command[:1])
        for path in candidates:
            if os.path.isfile(path):
                if not os.access(path, os.X_OK):
                    return f"fork/exec {path}: permission denied"
                # The exec happens behind a wrapper (setpriv), so check what the kernel would refuse here.
                with open(path, "rb") as fh:
                    magic = fh.read(4)
                return None if magic[:2] == b"#!" or magic == b"\x7fELF" else f"fork/exec {path}: exec format error"
        listed = dict.fromkeys(p for p in (*candidates, code_bootstrap, opt_bootstrap) if p)
        return f"Couldn't find valid bootstrap(s): [{' '.join(listed)}]"

    @staticmethod
    def _invalid_entrypoint(message: str) -> dict[str, Any]:
        return {"errorType": "Runtime.InvalidEntrypoint", "errorMessage": f"RequestId: {{id}} Error: {message}"}

    async def _listen(self) -> None:
        app = web.Application()
        app.router.add_get(f"{_PREFIX}/invocation/next", self._on_next)
        app.router.add_post(f"{_PREFIX}/invocation/{{request_id}}/response", self._on_response)
        app.router.add_post(f"{_PREFIX}/invocation/{{request_id}}/error", self._on_error)
        app.router.add_post(f"{_PREFIX}/init/error", self._on_init_error)
        app.router.add_route("*", "/{tail:.*}", self._on_unknown)  # so a wrong method is a 404 too
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.address = f"{host}:{port}"

    async def _watch_exit(self) -> None:
        assert self.proc is not None
        await self.proc.wait()
        if self._init is not None:
            _resolve(self._init, "exit")
        exited = ("exit", b"", None)
        if self._current is not None:
            _resolve(self._current.result, exited)
        while self._queue:
            _resolve(self._queue.popleft().result, exited)

    def _exit_reason(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is None:
            return "unknown"
        if code < 0:
            return f"signal: {_SIGNAL_WORDS.get(-code, f'signal {-code}')}"
        return f"exit status {code}"

    def _pipe_pending(self) -> int | None:
        """Bytes waiting in the log pipe, not yet read; None if that cannot be told."""
        transport = self._log_transport
        if transport is None or transport.is_closing() or self._log_fd is None:
            return None  # once closing, the fd may be closed and its number reused
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(self._log_fd, termios.FIONREAD, buf, True)
        except OSError:
            return None
        return buf[0]

    async def _drain_logs(self) -> None:
        """Let the output the runtime wrote before its last request reach the collector.

        Whatever a process wrote before it made a request is in the pipe by then: once the pipe holds no
        unread bytes and the collector has had its turn, that output is in `logs.current`. Where the pipe
        cannot be asked, wait until it has been quiet for _DRAIN_QUIET instead. Either way, for at most
        _DRAIN_MAX.
        """
        logs = self._logs
        if logs is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DRAIN_MAX
        seen = len(logs.current)
        while not logs.closed.is_set():
            if self._pipe_pending() == 0:
                # The transport has read everything; let the collector task take it from the reader.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if self._pipe_pending() == 0:
                    return
            if loop.time() >= deadline:
                return
            if self._pipe_pending() is not None:
                await asyncio.sleep(0.001)
                continue
            await asyncio.sleep(min(_DRAIN_QUIET, max(0.0, deadline - loop.time())))
            now = len(logs.current)
            if now == seen:
                return
            seen = now

    async def _kill_and_collect(self) -> bytes:
        await self._kill()
        if self._logs is None:
            return b""
        await self._logs.wait_closed(1.0)
        return self._logs.take()

    async def _kill(self) -> None:
        """Kill the whole process group: a shell bootstrap's children (curl, a handler's subprocesses, a
        daemon it left in the background) go with it, even when the bootstrap itself has already exited."""
        self._dead = True
        proc = self.proc
        if proc is None:
            return
        # The group outlives its leader while members remain, and its id is not reused meanwhile.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)

    async def stop(self, grace_s: float = 1.0) -> None:
        """Ask the runtime to exit (SIGTERM), then kill it; close the listener; remove the temp dir.
        Idempotent."""
        proc = self.proc
        if proc is not None and proc.returncode is None and not self._dead:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), grace_s)
        await self._kill()
        self._closing = True
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            _resolve(waiter, None)
        if self._watcher is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._watcher, 1.0)
            self._watcher = None
        if self._init is not None and not self._init.done():
            self._init.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._logs is not None:
            await self._logs.wait_closed(1.0)
            self._logs.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._logs.task
        if self._tmp is not None:
            await asyncio.to_thread(shutil.rmtree, self._tmp, True)
            self._tmp = None

    # -- invocations -----------------------------------------------------------------------------------

    async def invoke(self, frame: InvokeFrame, timeout_s: float) -> Outcome:
        assert self._logs is not None
        self.invocations += 1
        logs = self._logs
        call = _Call(frame, asyncio.get_running_loop().create_future())
        started = time.perf_counter()
        if self.proc is None or self.proc.returncode is not None:
            _resolve(call.result, ("exit", b"", None))
        else:
            self._dispatch(call)
        try:
            kind, body, error_type = await asyncio.wait_for(asyncio.shield(call.result), timeout_s)
        except asyncio.TimeoutError:
            duration = (time.perf_counter() - (call.sent or started)) * 1000
            memory = _peak_rss_mb(self.proc.pid) if self.proc else 0
            call.result.cancel()
            with contextlib.suppress(ValueError):
                self._queue.remove(call)
            output = await self._kill_and_collect()
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {frame.id} Error: Task timed out after {self.spec.timeout_s:.2f} seconds",
            }
            return Outcome(_encode(error), "Sandbox.Timedout", output, duration, memory,
                           reusable=False, timed_out=True)
        duration = (time.perf_counter() - (call.sent or started)) * 1000
        if kind == "exit":
            # The process ended mid-invocation (exit, a crash, the OOM killer) or before it took the event.
            # Whatever the runtime left running goes too (Lambda resets the whole sandbox), so the log
            # pipe closes once their output is in.
            await self._kill()
            await logs.wait_closed(1.0)
            reason = self._exit_reason()
            message = (
                f"RequestId: {frame.id} Error: Runtime exited without providing a reason"
                if reason == "exit status 0"
                else f"RequestId: {frame.id} Error: Runtime exited with error: {reason}"
            )
            error = {"errorType": "Runtime.ExitError", "errorMessage": message}
            return Outcome(_encode(error), "Runtime.ExitError", logs.take(), duration, 0, reusable=False)
        if kind == "too_large":
            # The runtime got a 413; Lambda's own runtimes treat that as fatal, so this one is not reused.
            self._dead = True
            await self._drain_logs()
            limit = self._response_limit
            error = {
                "errorMessage": f"Response payload size exceeded maximum allowed payload size ({limit} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            return Outcome(_encode(error), "Function.ResponseSizeTooLarge", logs.take(), duration, 0,
                           reusable=False)
        await self._drain_logs()
        memory = _peak_rss_mb(self.proc.pid) if self.proc else 0
        self.last_used = time.monotonic()
        return Outcome(body, error_type if kind == "error" else None, logs.take(), duration, memory,
                       reusable=True)

    def _dispatch(self, call: _Call) -> None:
        """Hand the call to a waiting /next, or queue it for the next one."""
        while self._waiters:
            waiter, request = self._waiters.popleft()
            if waiter.done():
                continue
            transport = request.transport
            if transport is None or transport.is_closing():
                _resolve(waiter, None)  # that runtime connection is gone
                continue
            waiter.set_result(call)
            return
        self._queue.append(call)

    # -- the Runtime API -------------------------------------------------------------------------------

    async def _on_next(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            return _api_error(500, "ServiceShuttingDown", "The execution environment is shutting down")
        if self._init is not None and not self._init.done():
            self.init_ms = (time.perf_counter() - self._spawned) * 1000
            _resolve(self._init, "ready")
        elif self._init_error is not None:
            return _api_error(403, "InvalidStateTransition", "The runtime reported an init error")
        current = self._current
        if current is not None and not current.result.done():
            return _api_error(
                403, "InvalidStateTransition",
                f"Invocation {current.frame.id} is in progress: post its response or error first",
            )
        call = None
        while call is None:
            if self._queue:
                call = self._queue.popleft()
            else:
                waiter: asyncio.Future[_Call | None] = asyncio.get_running_loop().create_future()
                entry = (waiter, request)
                self._waiters.append(entry)
                try:
                    call = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                        self._queue.appendleft(waiter.result())  # type: ignore[arg-type]
                    raise
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(entry)
                if call is None:
                    return _api_error(500, "ServiceShuttingDown", "The execution environment is shutting down")
            if call.result.done():  # timed out or abandoned while queued
                call = None
        frame = call.frame
        headers = {
            "Lambda-Runtime-Aws-Request-Id": frame.id,
            "Lambda-Runtime-Deadline-Ms": str(frame.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": frame.arn,
        }
        if frame.trace_id:
            headers["Lambda-Runtime-Trace-Id"] = frame.trace_id
        for name, raw in (("Lambda-Runtime-Client-Context", frame.client_context),
                          ("Lambda-Runtime-Cognito-Identity", frame.identity)):
            text = bytes(raw).strip()
            if text and text != b"null":
                headers[name] = single_line(text).decode("utf-8", "replace")
        call.sent = time.perf_counter()
        self._current = call
        return web.Response(status=200, body=bytes(frame.event), headers=headers, content_type="application/json")

    def _call_for(self, request: web.Request) -> tuple[_Call | None, web.Response | None]:
        request_id = request.match_info["request_id"]
        call = self._current
        if call is None or call.frame.id != request_id:
            return None, _api_error(400, "InvalidRequestID", "Invalid request ID")
        if call.result.done():
            return None, _api_error(400, "InvalidStateTransition",
                                    f"A response or error was already accepted for {request_id}")
        return call, None

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The request body, or None when it is larger than a response may be."""
        limit = self._response_limit
        if request.content_length is not None and request.content_length > limit:
            return None
        body = bytearray()
        async for chunk in request.content.iter_chunked(_LOG_CHUNK):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    def _too_large(self) -> web.Response:
        return _api_error(413, "RequestEntityTooLarge",
                          f"Exceeded maximum allowed payload size ({self._response_limit} bytes).")

    async def _on_response(self, request: web.Request) -> web.StreamResponse:
        return await self._end_call(request, lambda body: ("response", body, None))

    async def _on_error(self, request: web.Request) -> web.StreamResponse:
        def error(body: bytes) -> tuple[str, bytes, str | None]:
            obj, error_type = _decode_error(body, request.headers.get(ERROR_TYPE_HEADER))
            payload = body if obj is not None else _encode(_error_fallback(body, error_type))
            return "error", payload, error_type

        return await self._end_call(request, error)

    async def _end_call(
        self, request: web.Request, outcome: Callable[[bytes], tuple[str, bytes, str | None]]
    ) -> web.StreamResponse:
        """What a response and an error POST share: find the invocation, read the body within the limit,
        and resolve the invocation with `outcome(body)`."""
        call, refusal = self._call_for(request)
        if call is None:
            return refusal  # type: ignore[return-value]
        body = await self._read_body(request)
        if call.result.done():
            return _api_error(400, "InvalidStateTransition", "The invocation has already ended")
        if body is None:
            _resolve(call.result, ("too_large", b"", None))
            return self._too_large()
        _resolve(call.result, outcome(body))
        return _accepted()

    async def _on_init_error(self, request: web.Request) -> web.StreamResponse:
        if self._init is None or self._init.done():
            return _api_error(403, "InvalidStateTransition", "Init error reported after init completed")
        body = await self._read_body(request) or b""
        obj, error_type = _decode_error(body, request.headers.get(ERROR_TYPE_HEADER))
        self._init_error = obj if obj is not None else _error_fallback(body, error_type)
        _resolve(self._init, "error")
        return _accepted()

    async def _on_unknown(self, request: web.Request) -> web.StreamResponse:
        return _api_error(404, "NotFound", f"Unknown Runtime API resource: {request.method} {request.path}")
