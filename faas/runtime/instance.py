"""One execution environment: a worker process serving one invocation at a time.

The worker talks JSON lines over a socket pair; its stdout and stderr share one pipe, which is the function's
log. After each request the worker writes a sentinel to that pipe, so the server knows which output belongs
to which request even though the log and the frames travel on different channels; a reply that says the pipe
was already drained (the server had read every byte of output when the reply was sent) comes without one.
A Python worker is forked by a zygote (`zygote.py`) when the server has zygotes and they accept the instance;
every other worker is exec'd.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import math
import os
import shutil
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from faas.flow_control import WriteFlow
from faas.runtime.protocol import (
    INIT_ID,
    SENTINEL_MARK,
    SHUTDOWN,
    InvokeFrame,
    WorkerFrame,
    encode_invoke,
    worker_frame_decoder,
)
from faas.runtime.spawner import DIE_WITH_PARENT, in_cgroup
from faas.runtime.zygote import ProcessHandle, Zygotes, ZygoteUnavailable
from faas.runtime.zygote import installed as installed_zygotes

log = logging.getLogger(__name__)

_LOG_CHUNK = 65536
_ids = itertools.count(1)
# Lambda's runtime reports a signalled exit in Go's words ("signal: killed").
_SIGNAL_WORDS = {
    signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "aborted",
    signal.SIGTERM: "terminated", signal.SIGBUS: "bus error", signal.SIGFPE: "floating point exception",
    signal.SIGILL: "illegal instruction", signal.SIGINT: "interrupt", signal.SIGHUP: "hangup",
}


class InstanceSpec(msgspec.Struct, frozen=True):
    """Everything needed to start a worker for one function version."""

    function_name: str
    version: str
    runtime: str
    handler: str
    code_dir: str
    memory_mb: int
    timeout_s: int
    # argv of the worker: an interpreter and its bootstrap (JSON lines), or a custom runtime's `bootstrap`.
    command: tuple[str, ...]
    work_dir: str  # instance temp dirs are created beneath it
    protocol: str = "jsonl"  # or "runtime-api" (AWS's HTTP Runtime API, for provided.* runtimes)
    opt_dir: str = ""  # the merged layers (Lambda's /opt), "" without layers
    sandboxed: bool = False  # the command runs inside the sandbox, which gives it a private /tmp
    tmp_mb: int = 0  # the size of that /tmp (a tmpfs: it counts against the instance's memory limit)
    init_timeout_s: float = 10.0
    max_frame_bytes: int = 16 * 1024 * 1024
    max_stream_bytes: int = 20 * 1024 * 1024  # a response streamed to a client (buffered ones: max_frame_bytes)


class InitFailure(Exception):
    """The worker did not become ready: an error at import time, a crash, or a timeout."""

    def __init__(self, error: dict, output: bytes, init_ms: float):
        super().__init__(error.get("errorMessage"))
        self.error = error
        self.output = output
        self.init_ms = init_ms


class Outcome(msgspec.Struct):
    """What one invocation produced, before it is shaped into an API response."""

    payload: bytes
    error_type: str | None  # None on success
    output: bytes
    duration_ms: float
    max_memory_mb: int
    reusable: bool
    timed_out: bool = False
    # A handler that streamed: its content type, and whether the chunks went to `on_chunk` (then `payload` is
    # empty, or the error). Without `on_chunk` the chunks are collected into `payload`.
    content_type: str | None = None
    streamed: bool = False


# Receives a streamed response's bytes as the worker writes them, with the stream's content type.
ChunkCallback = Callable[[bytes, str | None], Awaitable[None]]


class _StreamTooLarge(Exception):
    pass


class _Chunks:
    """The chunk frames of one invocation: handed on as they come, or collected."""

    def __init__(self, on_chunk: ChunkCallback | None, limit: int):
        self.on_chunk = on_chunk
        self.limit = limit
        self.size = 0
        self.content_type: str | None = None
        self.collected = bytearray()

    async def add(self, frame: WorkerFrame) -> None:
        if frame.content_type and self.content_type is None:
            self.content_type = frame.content_type
        self.size += len(frame.data)
        if self.size > self.limit:
            raise _StreamTooLarge
        if self.on_chunk is None:
            self.collected += frame.data
        elif frame.data:
            await self.on_chunk(frame.data, self.content_type)


def _peak_rss_mb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return max(1, math.ceil(int(line.split()[1]) / 1024))
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _Splitter:
    """Splits the log pipe's bytes at the worker's sentinels; what came before a request's sentinel is its
    output (`take()`), and `wait()` returns once the sentinel has been seen."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self.current = bytearray()
        self._expect: bytes | None = None
        self._seen = asyncio.Event()
        self.closed = asyncio.Event()

    def expect(self, request_id: str) -> None:
        self._expect = SENTINEL_MARK + request_id.encode() + SENTINEL_MARK
        self._seen.clear()

    def take(self) -> bytes:
        out = bytes(self.current)
        self.current.clear()
        return out

    async def wait(self, timeout: float) -> None:
        if self._seen.is_set():
            return
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            async with asyncio.timeout(timeout):
                await self._seen.wait()

    async def wait_closed(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)

    def _feed(self, chunk: bytes) -> None:
        self._pending += chunk
        self._scan()

    def _finish(self) -> None:
        self.current += self._pending
        self._pending.clear()
        self.closed.set()
        self._seen.set()

    def _scan(self) -> None:
        buf = self._pending
        while buf:
            start = buf.find(SENTINEL_MARK)
            if start < 0:
                self.current += buf
                buf.clear()
                return
            self.current += buf[:start]
            del buf[:start]
            expect = self._expect
            if expect is not None and buf.startswith(expect):
                del buf[: len(expect)]
                self._expect = None
                self._seen.set()
                continue
            if expect is not None and len(buf) < len(expect) and expect.startswith(bytes(buf)):
                return  # maybe a sentinel cut in two; wait for the rest
            self.current += buf[:1]  # a mark that starts no sentinel is the function's own output
            del buf[:1]


class _LogCollector(_Splitter):
    """Reads a log pipe through a StreamReader, in a task of its own."""

    def __init__(self, reader: asyncio.StreamReader):
        super().__init__()
        self._reader = reader
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while chunk := await self._reader.read(_LOG_CHUNK):
                self._feed(chunk)
        finally:
            self._finish()


class _LogProtocol(_Splitter, asyncio.Protocol):
    """The log pipe's protocol: output is split as it arrives, with no task between the pipe and the waiting
    invocation (one fewer wake-up on every warm invoke)."""

    def __init__(self, first_id: str) -> None:
        super().__init__()
        self.transport: asyncio.BaseTransport | None = None
        # Expected from the start: output (and the sentinel) may arrive before connect_read_pipe returns.
        self.expect(first_id)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> None:
        self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FrameTooLarge(ValueError):
    """A frame from the worker longer than the channel's limit."""


class _FrameChannel(WriteFlow, asyncio.Protocol):
    """The worker's frame socket: JSON lines in, frames out. A reply goes from `data_received` to the waiting
    invocation through one future, with no stream machinery between (this is every warm invoke's path)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._lines: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._overrun = False
        self._expired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._overrun:
            return
        buf = self._buf
        if not buf and data.find(b"\n") == len(data) - 1 and len(data) <= self.limit:
            self._lines.append(data)  # the usual case: exactly one whole frame
        else:
            scan = len(buf)
            buf += data
            start = 0
            while (end := buf.find(b"\n", scan)) >= 0:
                if end + 1 - start > self.limit:
                    self._overrun = True
                    break
                self._lines.append(bytes(buf[start:end + 1]))
                start = scan = end + 1
            del buf[:start]
            if len(buf) > self.limit:
                self._overrun = True
            if self._overrun:
                buf.clear()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        self.release_writer()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def rearm(self) -> None:
        """A new invocation: forget a deadline an earlier one met just as its reply arrived."""
        self._expired = False

    def expire(self) -> None:
        """The invocation's deadline passed: what waits on this channel raises TimeoutError (a timer handle
        per invocation costs less than an asyncio.timeout scope on the warm path)."""
        self._expired = True
        self._wake()
        self.release_writer()

    async def readline(self) -> bytes:
        """The next frame with its newline; b"" once the worker has closed its end (or is gone). Raises
        FrameTooLarge for a frame longer than the limit."""
        while True:
            if self._lines:
                return self._lines.popleft()
            if self._expired:
                raise TimeoutError
            if self._overrun:
                raise FrameTooLarge(f"a frame longer than {self.limit} bytes")
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        if self.writable is not None:
            await self.writable
        if self._expired:
            raise TimeoutError

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _sent(chunks: _Chunks | None) -> dict:
    """Outcome fields of a failed invocation whose first chunks may already have reached the client."""
    if chunks is None or chunks.on_chunk is None:
        return {}
    return {"content_type": chunks.content_type, "streamed": True}


class Instance:
    """A worker process. `start()` runs init; `invoke()` runs one request; `stop()` ends it."""

    def __init__(self, spec: InstanceSpec, spawner: Zygotes | None = None):
        self.spec = spec
        # Called with the worker's pid as soon as it exists, before the function's code runs (memory cgroups).
        self.on_spawn: Callable[[int], None] | None = None
        # The memory cgroup an exec'd worker starts in (forked ones are moved by on_spawn).
        self.cgroup: str | None = None
        # Forks Python workers; None: the server's installed zygotes, if any (else every worker is exec'd).
        self.spawner = spawner
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.log_stream = ""
        self.proc: ProcessHandle | None = None
        self.init_ms = 0.0
        self.invocations = 0
        self.last_used = time.monotonic()
        self.started_at = time.monotonic()
        self._channel: _FrameChannel | None = None
        self._logs: _LogProtocol | None = None
        self._tmp: Path | None = None
        self._dead = False
        self.init_output = b""

    @property
    def alive(self) -> bool:
        return not self._dead and self.proc is not None and self.proc.returncode is None

    async def start(self, env: dict[str, str], log_stream: str) -> None:
        spec = self.spec
        self.log_stream = log_stream
        self._tmp = Path(spec.work_dir) / self.id
        tmp = Path("/tmp") if spec.sandboxed else self._tmp / "tmp"
        if not spec.sandboxed:
            tmp.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        full_env = dict(env)
        full_env.update(TMPDIR=str(tmp), AWS_LAMBDA_LOG_STREAM_NAME=log_stream)
        zygotes = self.spawner if self.spawner is not None else installed_zygotes()
        launched = None
        if zygotes is not None and zygotes.accepts(spec.command, full_env, protocol=spec.protocol,
                                                   sandboxed=spec.sandboxed):
            try:
                launched = await self._launch(functools.partial(self._fork, zygotes, full_env))
            except ZygoteUnavailable as exc:
                # Exec'd on a fresh channel: a child forked just before its zygote failed may hold the first.
                log.debug("exec'ing an instance of %s: %s", spec.function_name, exc)
        if launched is None:
            launched = await self._launch(functools.partial(self._exec, full_env))
        server_sock, log_r = launched
        loop = asyncio.get_running_loop()
        _, self._logs = await loop.connect_read_pipe(
            lambda: _LogProtocol(INIT_ID), os.fdopen(log_r, "rb", buffering=0)
        )
        _, self._channel = await loop.create_unix_connection(
            lambda: _FrameChannel(spec.max_frame_bytes), sock=server_sock
        )
        try:
            line = await asyncio.wait_for(self._channel.readline(), spec.init_timeout_s)
        except asyncio.TimeoutError:
            await self._kill()
            raise InitFailure(
                {"errorType": "Runtime.InitTimeout",
                 "errorMessage": f"Init phase timed out after {spec.init_timeout_s:.2f} seconds"},
                self._logs.take(), (time.perf_counter() - started) * 1000,
            ) from None
        except (ValueError, ConnectionError):
            line = b""
        frame = worker_frame_decoder.decode(line) if line else None
        if frame is not None and frame.t == "ready":
            await self._logs.wait(1.0)
            self.init_ms = frame.init_ms or (time.perf_counter() - started) * 1000
            self.init_output = self._logs.take()
            return
        await self._kill()
        await self._logs.wait_closed(1.0)
        init_ms = (time.perf_counter() - started) * 1000
        if frame is not None and frame.t == "init_error" and frame.error:
            raise InitFailure(frame.error, self._logs.take(), init_ms)
        raise InitFailure(
            {"errorType": "Runtime.ExitError",
             "errorMessage": f"RequestId: {{id}} Error: Runtime exited with error: {self._exit_reason()}"},
            self._logs.take(), init_ms,
        )

    async def _launch(
        self, create: Callable[[socket.socket, int], Awaitable[ProcessHandle]]
    ) -> tuple[socket.socket, int]:
        """Start the worker on a new frame channel and log pipe; our ends of both."""
        server_sock, worker_sock = socket.socketpair()
        log_r, log_w = os.pipe()
        try:
            self.proc = await create(worker_sock, log_w)
            if self.on_spawn is not None:
                self.on_spawn(self.proc.pid)
        except BaseException:
            server_sock.close()
            os.close(log_r)
            raise
        finally:
            worker_sock.close()
            os.close(log_w)
        return server_sock, log_r

    async def _fork(self, zygotes: Zygotes, env: dict[str, str], worker_sock: socket.socket, log_w: int
                    ) -> ProcessHandle:
        spec = self.spec
        return await zygotes.spawn(
            spec.command[0], spec.command, {**env, "_FAAS_FD_IN": "3", "_FAAS_FD_OUT": "3"}, spec.code_dir,
            {1: log_w, 2: log_w, 3: worker_sock.fileno()},
        )

    async def _exec(self, env: dict[str, str], worker_sock: socket.socket, log_w: int) -> ProcessHandle:
        fd = str(worker_sock.fileno())
        return await asyncio.create_subprocess_exec(
            *DIE_WITH_PARENT, *in_cgroup(self.cgroup, self.spec.command),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_w, stderr=log_w,
            pass_fds=(worker_sock.fileno(),), cwd=self.spec.code_dir, start_new_session=True,
            env={**env, "_FAAS_FD_IN": fd, "_FAAS_FD_OUT": fd},
        )

    def _exit_reason(self) -> str:
        code = self.proc.returncode if self.proc else None
        if code is None:
            return "unknown"
        if code < 0:
            return f"signal: {_SIGNAL_WORDS.get(-code, f'signal {-code}')}"
        return f"exit status {code}"

    async def invoke(self, frame: InvokeFrame, timeout_s: float, on_chunk: ChunkCallback | None = None) -> Outcome:
        """Run one request. A streaming handler's chunks go to `on_chunk` as they arrive (the worker waits
        while it is busy), or, without it, are collected into the payload."""
        channel = self._channel
        assert channel is not None and self._logs is not None
        self.invocations += 1
        logs = self._logs
        logs.expect(frame.id)
        started = time.perf_counter()
        chunks: _Chunks | None = None
        reply: WorkerFrame | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        channel.rearm()
        timer = loop.call_at(deadline, channel.expire)
        try:
            channel.write(encode_invoke(frame))
            await channel.drain()
            line = await channel.readline()
            reply = worker_frame_decoder.decode(line) if line else None
            while reply is not None and reply.t == "chunk":
                if chunks is None:
                    spec = self.spec
                    chunks = _Chunks(on_chunk, spec.max_stream_bytes if on_chunk else spec.max_frame_bytes)
                if reply.id == frame.id:  # not a late write of an earlier stream that ended in an error
                    async with asyncio.timeout_at(deadline):  # a slow client must not outlast the deadline
                        await chunks.add(reply)
                line = await channel.readline()
                reply = worker_frame_decoder.decode(line) if line else None
        except (asyncio.TimeoutError, TimeoutError):
            duration = (time.perf_counter() - started) * 1000
            memory = _peak_rss_mb(self.proc.pid) if self.proc else 0
            await self._kill()
            await logs.wait_closed(0.5)
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {frame.id} Error: Task timed out after {self.spec.timeout_s:.2f} seconds",
            }
            return Outcome(msgspec.json.encode(error), "Sandbox.Timedout", logs.take(), duration, memory,
                           reusable=False, timed_out=True, **_sent(chunks))
        except ConnectionError:
            reply = None  # the worker is gone: reported below as the exit it was
        except msgspec.DecodeError:
            raise  # a worker bug, not a size problem (DecodeError is a ValueError)
        except (FrameTooLarge, _StreamTooLarge) as exc:
            # A frame over the limit (far past the response size AWS allows), or a stream past its limit.
            await self._kill()
            limit = self.spec.max_stream_bytes if isinstance(exc, _StreamTooLarge) and on_chunk else None
            return self._too_large(logs, (time.perf_counter() - started) * 1000, limit, chunks)
        finally:
            timer.cancel()
        duration = (time.perf_counter() - started) * 1000
        pid = self.proc.pid if self.proc else 0
        if reply is None:
            # EOF: the process exited mid-invocation (sys.exit, a crash, the OOM killer).
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 2.0)  # type: ignore[union-attr]
            await logs.wait_closed(1.0)
            self._dead = True
            reason = self._exit_reason()
            message = (
                f"RequestId: {frame.id} Error: Runtime exited without providing a reason"
                if reason == "exit status 0"
                else f"RequestId: {frame.id} Error: Runtime exited with error: {reason}"
            )
            error = {"errorType": "Runtime.ExitError", "errorMessage": message}
            return Outcome(msgspec.json.encode(error), "Runtime.ExitError", logs.take(), duration, 0,
                           reusable=False, **_sent(chunks))
        if not reply.drained:
            await logs.wait(1.0)
        memory = max(1, math.ceil(reply.rss / 1024)) if reply.rss else _peak_rss_mb(pid)
        self.last_used = time.monotonic()
        reusable = not reply.exiting
        if reply.t == "result":
            if reply.streamed or chunks is not None:
                content_type = (chunks.content_type if chunks else None) or reply.content_type
                payload = bytes(chunks.collected) if chunks and on_chunk is None else b""
                return Outcome(payload, None, logs.take(), duration, memory, reusable=reusable,
                               content_type=content_type, streamed=on_chunk is not None)
            payload = bytes(reply.payload) or b"null"
            return Outcome(payload, None, logs.take(), duration, memory, reusable=reusable)
        error = reply.error or {"errorType": "Runtime.Unknown", "errorMessage": "worker sent no error"}
        return Outcome(msgspec.json.encode(error), str(error.get("errorType") or "Unhandled"), logs.take(),
                       duration, memory, reusable=reusable, **_sent(chunks))

    def _too_large(self, logs: _Splitter, duration: float, limit: int | None = None,
                   chunks: _Chunks | None = None) -> Outcome:
        self._dead = True
        error = {
            "errorMessage": f"Response payload size exceeded maximum allowed payload size ({limit or 6291556} bytes).",
            "errorType": "Function.ResponseSizeTooLarge",
        }
        return Outcome(msgspec.json.encode(error), "Function.ResponseSizeTooLarge", logs.take(), duration, 0,
                       reusable=False, **_sent(chunks))

    async def _kill(self) -> None:
        self._dead = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        if self._channel is not None:
            self._channel.close()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Ask the worker to exit, then kill it; remove its temp dir. Idempotent."""
        proc = self.proc
        if proc is not None and proc.returncode is None and self._channel is not None and not self._dead:
            with contextlib.suppress(Exception):
                self._channel.write(SHUTDOWN)
                await asyncio.wait_for(self._channel.drain(), grace_s)
                await asyncio.wait_for(proc.wait(), grace_s)
        await self._kill()
        if self._logs is not None:
            await self._logs.wait_closed(1.0)
            self._logs.close()
        if self._tmp is not None:
            await asyncio.to_thread(shutil.rmtree, self._tmp, True)
            self._tmp = None
