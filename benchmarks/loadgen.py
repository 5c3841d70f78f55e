"""The load generator: a separate process that runs jobs sent to it, one JSON line each, and answers one
JSON line per job.

The harness holds a `LoadGenerator` (this module, parent side); the process runs `python -m
benchmarks.loadgen` (child side): asyncio on uvloop, one aiohttp `ClientSession` per job with keep-alive
connections. Every result carries the generator's own CPU time over the measured window, so a report can
show whether the generator, rather than the server, was the limit.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parents[1]


class Request(msgspec.Struct):
    path: str
    body: bytes = b""
    headers: dict[str, str] = {}


class Closed(msgspec.Struct, tag="closed"):
    """`concurrency` workers, each sending its next request when the previous one is answered. Requests
    sent during `warmup` seconds are not counted."""

    url: str
    body: bytes
    concurrency: int
    duration: float
    warmup: float = 0.5
    timeout: float = 30.0
    client: str = "raw"  # or "aiohttp" (see _RawClient)


class Open(msgspec.Struct, tag="open"):
    """Requests scheduled at `rate` per second regardless of answers; latency counts from the scheduled
    time. A request due while `max_inflight` are outstanding is dropped (not sent)."""

    url: str
    body: bytes
    rate: float
    duration: float
    max_inflight: int = 256
    timeout: float = 10.0
    client: str = "raw"


class Burst(msgspec.Struct, tag="burst"):
    """`n` requests at once, on connections opened (GET `preconnect_path`) before the clock starts."""

    url: str
    body: bytes
    n: int
    preconnect_path: str = "/health"
    timeout: float = 120.0


class Sequence(msgspec.Struct, tag="sequence"):
    """Requests one after another on one keep-alive connection; each reply is returned whole."""

    base_url: str
    requests: list[Request]
    timeout: float = 60.0


Job = Closed | Open | Burst | Sequence


class Reply(msgspec.Struct):
    ms: float
    status: int
    body: bytes
    headers: dict[str, str]


class Outcome(msgspec.Struct):
    """What a job measured. `latencies_ms` holds successful requests only; `errors` counts the others by
    kind ("429", "500", "function-error", "timeout", an exception name)."""

    latencies_ms: list[float] = []
    ok: int = 0
    errors: dict[str, int] = {}
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    dropped: int = 0
    max_lag_ms: float = 0.0
    replies: list[Reply] = []
    failure: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def cpu_share(self) -> float:
        """The generator's CPU time over the window, as a share of one core."""
        return self.cpu_s / self.elapsed_s if self.elapsed_s else 0.0


# -- parent side ------------------------------------------------------------------------------------


class LoadGenerator:
    """The generator process, started once and fed jobs. Use as a context manager."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Outcome)

    def start(self) -> LoadGenerator:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.loadgen"], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        return self

    def run(self, job: Job) -> Outcome:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self._encoder.encode(job) + b"\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited (code {proc.wait()})")
        outcome = self._decoder.decode(line)
        if outcome.failure:
            raise RuntimeError(f"load generator: {outcome.failure}")
        return outcome

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- child side -------------------------------------------------------------------------------------


def _kind(status: int, function_error: bool) -> str | None:
    """What went wrong with an answer (None: nothing): its status, or a function error."""
    if status != 200:
        return str(status)
    return "function-error" if function_error else None


def _exception_kind(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__


class _RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of `_RawClient`: one request at a time, answers read by
    Content-Length (what both servers send for these requests). The answer goes to `answered(conn,
    (status, function_error))`, or an exception when the connection is lost first."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.answered: Callable[[_RawConnection, tuple[int, bool] | BaseException], None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.answered is None:
            return
        head = bytes(self.buf[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:stop if stop >= 0 else len(head)])
        if len(self.buf) < end + 4 + length:
            return
        del self.buf[:end + 4 + length]
        answered, self.answered = self.answered, None
        answered(self, (int(head[9:12]), b"\r\nx-amz-function-error:" in head))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        answered, self.answered = self.answered, None
        if answered is not None:
            answered(self, ConnectionResetError("connection lost"))


def _settle(future: asyncio.Future[tuple[int, bool]], answer: tuple[int, bool] | BaseException) -> None:
    if future.done():
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)


class _RawClient:
    """POSTs one fixed request over a pool of keep-alive connections, each written as one segment and
    parsed by hand: the generator's own cost per request is a fraction of aiohttp's client, so more of the
    machine is left to the server under test (both servers are driven the same way). `client="aiohttp"` in
    a job uses aiohttp's ClientSession instead."""

    def __init__(self, url: str, body: bytes, timeout: float):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.request = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        self.timeout = timeout
        self.idle: list[_RawConnection] = []

    async def connect(self) -> _RawConnection:
        _, conn = await asyncio.get_running_loop().create_connection(_RawConnection, self.host, self.port)
        return conn

    def send(self, conn: _RawConnection,
             answered: Callable[[_RawConnection, tuple[int, bool] | BaseException], None]) -> None:
        """The request on `conn`; its answer goes to `answered`."""
        assert conn.transport is not None
        conn.answered = answered
        conn.transport.write(self.request)

    async def post(self) -> tuple[int, bool]:
        """(status, whether X-Amz-Function-Error was set)."""
        conn = self.idle.pop() if self.idle else await self.connect()
        waiter: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self.send(conn, lambda _, answer: _settle(waiter, answer))
        try:
            async with asyncio.timeout(self.timeout):
                answer = await waiter
        except BaseException:
            conn.answered = None
            assert conn.transport is not None
            conn.transport.close()
            raise
        if not conn.lost:
            self.idle.append(conn)
        return answer

    async def __aenter__(self) -> _RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()


class _AiohttpClient:
    def __init__(self, url: str, body: bytes, limit: int, timeout: float):
        self.url, self.body = url, body
        self.session = _session(limit, timeout)

    async def post(self) -> tuple[int, bool]:
        async with self.session.post(self.url, data=self.body) as resp:
            await resp.read()
            return resp.status, "X-Amz-Function-Error" in resp.headers

    async def __aenter__(self) -> _AiohttpClient:
        await self.session.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.__aexit__(*exc)


def _client(kind: str, url: str, body: bytes, limit: int, timeout: float) -> _RawClient | _AiohttpClient:
    if kind == "raw":
        return _RawClient(url, body, timeout)
    if kind == "aiohttp":
        return _AiohttpClient(url, body, limit, timeout)
    raise ValueError(f"unknown client {kind!r} (raw or aiohttp)")


def _session(limit: int, timeout: float):
    import aiohttp

    connector = aiohttp.TCPConnector(limit=limit, force_close=False, enable_cleanup_closed=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                 auto_decompress=False)


async def _closed(job: Closed) -> Outcome:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    now = time.perf_counter()
    measure_from = now + job.warmup
    measure_to = measure_from + job.duration
    cpu_marks: list[float] = []

    async def worker() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= measure_to:
                return
            kind = None
            try:
                kind = _kind(*await client.post())
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error
                kind = _exception_kind(exc)
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= measure_to:
                if kind is None:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors[kind] += 1

    async def cpu_clock() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu_marks.append(time.process_time())
        await asyncio.sleep(max(0.0, measure_to - time.perf_counter()))
        cpu_marks.append(time.process_time())

    async with _client(job.client, job.url, job.body, job.concurrency, job.timeout) as client:
        await asyncio.gather(cpu_clock(), *(worker() for _ in range(job.concurrency)))
    return Outcome(latencies_ms=latencies, ok=len(latencies), errors=dict(errors), elapsed_s=job.duration,
                   cpu_s=cpu_marks[1] - cpu_marks[0])


class _Ticker:
    """A periodic timer the event loop watches: a Linux timerfd (through ctypes; Python 3.11's os has no
    timerfd functions) on CLOCK_MONOTONIC, firing at `first_ns` and every `interval_ns` after. Its
    nanosecond resolution paces an open-loop schedule where uvloop's timers (whole milliseconds) cannot, and
    without a pacing thread, which costs the generator two more wake-ups per request (the thread's, then the
    loop's) and a GIL hand-over. `create` gives None where there is no timerfd."""

    TFD_TIMER_ABSTIME = 1

    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def create(cls, first_ns: int, interval_ns: int) -> _Ticker | None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            timerfd_create, timerfd_settime = libc.timerfd_create, libc.timerfd_settime
        except (OSError, AttributeError):
            return None
        fd = timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        # struct itimerspec: the interval, then the first expiry (absolute), each {seconds, nanoseconds}.
        spec = (ctypes.c_long * 4)(*divmod(interval_ns, 10**9), *divmod(first_ns, 10**9))
        if timerfd_settime(fd, cls.TFD_TIMER_ABSTIME, spec, None) != 0:
            os.close(fd)
            return None
        return cls(fd)

    def drain(self) -> None:
        try:
            os.read(self.fd, 8)  # how many expiries since the last read; the schedule counts for itself
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


async def _open_ticked(job: Open) -> Outcome | None:
    """`_open` with the raw client, driven by a `_Ticker` and callbacks: no task, future or timer per
    request, so the generator's cost per request is small next to the server's. None: no timerfd here."""
    loop = asyncio.get_running_loop()
    client = _RawClient(job.url, job.body, job.timeout)
    total = int(job.rate * job.duration)
    interval = max(1, round(1e9 / job.rate))
    start = time.clock_gettime_ns(time.CLOCK_MONOTONIC) + 10_000_000
    ticker = _Ticker.create(start, interval)
    if ticker is None:
        return None
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    inflight: dict[_RawConnection, int] = {}  # connection -> when its request was due
    connecting = 0
    sent = dropped = max_lag = 0
    done = loop.create_future()
    cpu0 = time.process_time()
    marks: list[float] = []

    def finish_if_done() -> None:
        if sent >= total and not inflight and not connecting and not done.done():
            done.set_result(None)

    def answered(conn: _RawConnection, answer: tuple[int, bool] | BaseException) -> None:
        due = inflight.pop(conn)
        if isinstance(answer, BaseException):
            errors[_exception_kind(answer)] += 1
        else:
            kind = _kind(*answer)
            if kind is None:
                latencies.append((time.clock_gettime_ns(time.CLOCK_MONOTONIC) - due) / 1e6)
            else:
                errors[kind] += 1
            if not conn.lost:
                client.idle.append(conn)
        finish_if_done()

    async def connect_and_send(due: int) -> None:
        nonlocal connecting
        try:
            conn = await client.connect()
        except OSError as exc:
            errors[_exception_kind(exc)] += 1
            return
        finally:
            connecting -= 1
        inflight[conn] = due
        client.send(conn, answered)

    def tick() -> None:
        nonlocal sent, dropped, max_lag, connecting
        ticker.drain()
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        # Everything due goes out; when the loop runs late, late requests go out at once and their latency
        # still counts from when they were due.
        while sent < total and start + sent * interval <= now:
            due = start + sent * interval
            sent += 1
            if len(inflight) + connecting >= job.max_inflight:
                dropped += 1
                continue
            max_lag = max(max_lag, now - due)
            if client.idle:
                conn = client.idle.pop()
                inflight[conn] = due
                client.send(conn, answered)
            else:
                connecting += 1
                loop.create_task(connect_and_send(due))
        if sent >= total:
            loop.remove_reader(ticker.fd)
            marks.append(time.process_time())
            marks.append(now)
            finish_if_done()

    def sweep() -> None:
        """Requests unanswered after `timeout` count as timeouts; their connections are closed."""
        limit = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - int(job.timeout * 1e9)
        for conn, due in list(inflight.items()):
            if due < limit:
                conn.answered = None
                del inflight[conn]
                errors["timeout"] += 1
                assert conn.transport is not None
                conn.transport.close()
        finish_if_done()
        if not done.done():
            loop.call_later(0.1, sweep)

    loop.add_reader(ticker.fd, tick)
    loop.call_later(0.1, sweep)
    try:
        await done
    finally:
        if not marks:
            loop.remove_reader(ticker.fd)
        ticker.close()
        await client.__aexit__()
    cpu1, end_of_schedule = marks
    return Outcome(latencies_ms=latencies, ok=len(latencies), errors=dict(errors),
                   elapsed_s=(end_of_schedule - start) / 1e9, cpu_s=cpu1 - cpu0, dropped=dropped,
                   max_lag_ms=max_lag / 1e6)


async def _open(job: Open) -> Outcome:
    if job.client == "raw":
        outcome = await _open_ticked(job)
        if outcome is not None:
            return outcome
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    total = int(job.rate * job.duration)
    interval = 1.0 / job.rate
    inflight = 0
    dropped = 0
    max_lag = 0.0
    tasks: set[asyncio.Task[None]] = set()

    async def one(intended: float) -> None:
        nonlocal inflight
        kind = None
        try:
            kind = _kind(*await client.post())
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            kind = _exception_kind(exc)
        inflight -= 1
        if kind is None:
            latencies.append((time.perf_counter() - intended) * 1000)
        else:
            errors[kind] += 1

    loop = asyncio.get_running_loop()
    due_now = asyncio.Event()
    stop = threading.Event()

    def pace(start: float) -> None:
        """Wake the loop when each request falls due. uvloop's timers count whole milliseconds (a shorter sleep
        returns at once, and spinning would take a core the server needs); a thread's sleep is finer."""
        j = 0
        while j < total and not stop.is_set():
            delay = start + j * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            if not due_now.is_set():  # else the loop has not got round to the last one: it sends this too
                loop.call_soon_threadsafe(due_now.set)
            j = max(j + 1, int((time.perf_counter() - start) / interval) + 1)

    async with _client(job.client, job.url, job.body, job.max_inflight, job.timeout) as client:
        cpu0 = time.process_time()
        start = time.perf_counter() + 0.01
        pacer = threading.Thread(target=pace, args=(start,), name="pacer", daemon=True)
        pacer.start()
        i = 0
        while i < total:
            due_now.clear()
            now = time.perf_counter()
            # Send everything that is due; when the loop runs late, late requests go out at once and their
            # latency still counts from when they were due.
            while i < total and start + i * interval <= now:
                intended = start + i * interval
                i += 1
                if inflight >= job.max_inflight:
                    dropped += 1
                    continue
                max_lag = max(max_lag, now - intended)
                inflight += 1
                task = asyncio.create_task(one(intended))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if i < total:
                await due_now.wait()
        end_of_schedule = time.perf_counter()
        cpu1 = time.process_time()
        stop.set()
        pacer.join()
        if tasks:
            await asyncio.gather(*tasks)
    return Outcome(latencies_ms=latencies, ok=len(latencies), errors=dict(errors),
                   elapsed_s=end_of_schedule - start, cpu_s=cpu1 - cpu0, dropped=dropped,
                   max_lag_ms=max_lag * 1000)


async def _burst(job: Burst) -> Outcome:
    base = job.url.split("/", 3)
    health = f"{base[0]}//{base[2]}{job.preconnect_path}"
    errors: Counter[str] = Counter()
    replies: list[Reply] = []

    async def warm_connection(session) -> None:
        async with session.get(health) as resp:
            await resp.read()

    async def one(session, t0: float) -> None:
        try:
            async with session.post(job.url, data=job.body) as resp:
                body = await resp.read()
                kind = _kind(resp.status, "X-Amz-Function-Error" in resp.headers)
                replies.append(Reply((time.perf_counter() - t0) * 1000, resp.status, body, {}))
        except Exception as exc:  # noqa: BLE001 - every failure is a counted error
            kind = _exception_kind(exc)
        if kind is not None:
            errors[kind] += 1

    async with _session(job.n, job.timeout) as session:
        await asyncio.gather(*(warm_connection(session) for _ in range(job.n)))
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session, t0) for _ in range(job.n)))
        elapsed = time.perf_counter() - t0
        cpu1 = time.process_time()
    ok = [r.ms for r in replies if r.status == 200]
    return Outcome(latencies_ms=ok, ok=job.n - sum(errors.values()), errors=dict(errors), elapsed_s=elapsed,
                   cpu_s=cpu1 - cpu0, replies=replies)


async def _sequence(job: Sequence) -> Outcome:
    replies: list[Reply] = []
    cpu0 = time.process_time()
    t_start = time.perf_counter()
    async with _session(1, job.timeout) as session:
        for req in job.requests:
            t0 = time.perf_counter()
            async with session.post(job.base_url + req.path, data=req.body, headers=req.headers) as resp:
                body = await resp.read()
                replies.append(Reply((time.perf_counter() - t0) * 1000, resp.status, body, dict(resp.headers)))
    return Outcome(ok=sum(1 for r in replies if r.status == 200), elapsed_s=time.perf_counter() - t_start,
                   cpu_s=time.process_time() - cpu0, replies=replies)


async def _run(job: Job) -> Outcome:
    if isinstance(job, Closed):
        return await _closed(job)
    if isinstance(job, Open):
        return await _open(job)
    if isinstance(job, Burst):
        return await _burst(job)
    return await _sequence(job)


def _serve_jobs() -> None:
    decoder = msgspec.json.Decoder(Job)
    encoder = msgspec.json.Encoder()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    out = sys.stdout.buffer
    with runner:
        for line in sys.stdin.buffer:
            # No cyclic collection while a job runs: a full pass over the generator's own heap stalls its loop for
            # tens of milliseconds, and an open-loop schedule would then send a burst the server never caused.
            gc.collect()
            gc.disable()
            try:
                outcome = runner.run(_run(decoder.decode(line)))
            except Exception as exc:  # noqa: BLE001 - reported to the harness, which raises it
                outcome = Outcome(failure=f"{type(exc).__name__}: {exc}")
            finally:
                gc.enable()
            out.write(encoder.encode(outcome) + b"\n")
            out.flush()


if __name__ == "__main__":
    _serve_jobs()
