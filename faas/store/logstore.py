"""Invocation logs in their own SQLite file (`<data_dir>/logs.db`), apart from the registry, so that
writing logs never waits on, or holds up, the registry's writer.

`record()` is called on the invocation path and only appends to an in-memory buffer. One writer owns the
database (`faas.store.logdb.LogDatabase`): a process of its own (`faas.store.log_process`, the server's
default) or a thread. It takes the buffer every `flush_interval` (or sooner when `flush_records` are
waiting), splits each invocation's text into events and inserts them in one transaction. Reads run on the
writer after a flush, so a query sees every log recorded before it was made. A periodic pass deletes events
older than their group's retention, then the oldest events while the file holds more than `max_bytes`.

Logs are buffered by design: a crash may lose the last `flush_interval` of them (the invocation results are
not affected). When the writer falls behind by `max_pending_bytes`, new logs are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from faas.store.log_filter import Matcher
from faas.store.log_process import LogProcess, LogProcessExited
from faas.store.logdb import (
    EventPage,
    FilterPage,
    LogDatabase,
    LogGroupInfo,
    LogSettings,
    LogStreamInfo,
    Record,
    packed_header,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class LogStore:
    """Log groups, streams and events in `path`. Call `open()`, then `start()` for the periodic pass.

    The database work (`LogDatabase`'s methods, through `_submit`) happens on one thread of its own, or with
    `process=True` in a process of its own (`faas.store.log_process`), so that turning logs into rows never
    takes the GIL from the event loop."""

    def __init__(self, path: Path, settings: LogSettings | None = None, *, process: bool = False):
        self.path = path
        self.settings = settings or LogSettings()
        self.process = process
        self.dropped = 0  # invocation logs dropped because the writer was behind
        self._executor: ThreadPoolExecutor | None = None
        self._database: LogDatabase | None = None  # the thread writer's, used on its thread only
        self._reported_bytes = 0  # the process writer's stored_bytes, as of its last answer
        self._worker: LogProcess | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[Record] = []  # recorded, not yet sent to be written (thread writer)
        # The process writer's: the same records, msgpack-encoded as they are recorded, after 5 bytes left
        # for the array header (`packed_header`).
        self._packed = bytearray(5)
        self._packed_count = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._batch_bytes = 0  # log text recorded, not yet sent to be written
        self._pending_bytes = 0  # log text recorded, not yet written
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: set[asyncio.Future[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.process:
            await self._start_worker()
        else:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faas-logs")
            self._database = LogDatabase(self.path)
            await self._submit(LogDatabase.open)

    async def _start_worker(self) -> None:
        worker = LogProcess(self.path, self._stored)
        await worker.start()
        self._worker = worker
        await worker.call("open", ())  # before any call sent after this one

    def _stored(self, stored_bytes: int) -> None:
        self._reported_bytes = stored_bytes

    @property
    def stored_bytes(self) -> int:
        """All stored events' bytes, as CloudWatch counts them, as of the last write or pass."""
        return self._database.stored_bytes if self._database is not None else self._reported_bytes

    def start(self) -> None:
        self._task = asyncio.create_task(self._maintain_forever(), name="faas-log-retention")

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered (waiting up to `timeout`), then close the file. Idempotent."""
        if self._closed or not self._opened:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.wait_for(asyncio.shield(self.flush()), timeout)
        except Exception:
            log.warning("log store: buffered logs not written before shutdown", exc_info=True)
        try:
            await self._submit(LogDatabase.close)
        except Exception:
            log.warning("log store: not closed cleanly", exc_info=True)
        executor, self._executor = self._executor, None
        worker, self._worker = self._worker, None
        if executor is not None:
            executor.shutdown(wait=False)
        if worker is not None:
            await worker.stop(timeout)

    @property
    def _opened(self) -> bool:
        return self._executor is not None or self._worker is not None

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn`, a `LogDatabase` method, called with `args` on the database thread or in the log store's
        process."""
        if self._executor is not None:
            return asyncio.wrap_future(self._executor.submit(fn, self._database, *args))
        if self._worker is None:
            raise RuntimeError("log store is closed")
        if self._worker.alive:
            return self._worker.call(fn.__name__, args)
        return asyncio.ensure_future(self._after_restart(fn.__name__, args))

    async def _after_restart(self, method: str, args: tuple[Any, ...]) -> Any:
        """The log store's process died: start another (one for all the calls that find it gone), then call."""
        if self._restarting is None or self._restarting.done():
            log.warning("log store process gone; starting another")
            self._restarting = asyncio.create_task(self._start_worker())
        await asyncio.shield(self._restarting)
        assert self._worker is not None
        return await self._worker.call(method, args)

    async def _write_once_more(self, sent: asyncio.Future[None], packed: bytearray) -> None:
        """`sent`, a `_write_packed` in the log store's process, sent again to its successor when it died first
        (a transaction it had not committed is rolled back; one it had, but not answered, is written twice)."""
        try:
            await sent
        except LogProcessExited:
            await self._submit(LogDatabase.write_packed, packed)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """`_submit` after everything recorded so far is sent to be written, so `fn` sees it."""
        self._flush_now()
        return await self._submit(fn, *args)

    # -- writing ----------------------------------------------------------------------------------

    def record(self, function_name: str, log_group: str, stream: str, text: bytes, when: float) -> None:
        """Queue one invocation's log text for `stream` of `log_group`, its events stamped `when` (epoch
        seconds). Never blocks; drops the text when the writer is `max_pending_bytes` behind."""
        if self._closed or not text:
            return
        if self._pending_bytes + len(text) > self.settings.max_pending_bytes:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("log writer behind: %d invocation log(s) dropped (latest of %s)", self.dropped,
                            function_name)
            return
        if self.process:
            # Encoded now, a piece per invocation: pickling a batch at flush took the event loop ~0.5 ms per
            # thousand invocations in one go.
            self._encoder.encode_into((log_group, stream, text, when), self._packed, -1)
            self._packed_count += 1
            waiting = self._packed_count
        else:
            self._pending.append((log_group, stream, text, when))
            waiting = len(self._pending)
        self._batch_bytes += len(text)
        self._pending_bytes += len(text)
        if waiting >= self.settings.flush_records:
            self._flush_now()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.settings.flush_interval, self._flush_now)

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not (self._pending or self._packed_count) or not self._opened:
            return
        size, self._batch_bytes = self._batch_bytes, 0
        if self.process:
            packed, self._packed = self._packed, bytearray(5)
            packed[:5] = packed_header(self._packed_count)
            self._packed_count = 0
            sent = self._submit(LogDatabase.write_packed, packed)  # now: a read sent after this flush must find it
            future = asyncio.ensure_future(self._write_once_more(sent, packed))
        else:
            batch, self._pending = self._pending, []
            future = self._submit(LogDatabase.write, batch)
        self._inflight.add(future)
        future.add_done_callback(lambda f: self._written(f, size))

    def _written(self, future: asyncio.Future[None], size: int) -> None:
        self._inflight.discard(future)
        self._pending_bytes -= size
        if not future.cancelled() and future.exception() is not None:
            log.error("writing invocation logs failed", exc_info=future.exception())
        cap = self.settings.max_bytes
        if cap and self.stored_bytes > cap * 1.25:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything recorded so far."""
        self._flush_now()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    # -- retention and the size cap -----------------------------------------------------------------

    async def run_once(self, now: float | None = None) -> int:
        """One pass: drop events past their group's retention, then the oldest events over the size cap.
        Returns how many events were deleted."""
        return await self._read(LogDatabase.maintain, time.time() if now is None else now, self.settings)

    async def _maintain_forever(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.maintenance_interval)
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:  # the next pass tries again
                log.exception("log retention pass failed")

    # -- groups -------------------------------------------------------------------------------------

    async def create_group(self, name: str, now: float | None = None) -> bool:
        """False when the group already exists."""
        return await self._read(LogDatabase.create_group, name, int((now or time.time()) * 1000))

    async def delete_group(self, name: str) -> None:
        await self._read(LogDatabase.delete_group, name)

    async def set_retention(self, name: str, days: int | None) -> None:
        await self._read(LogDatabase.set_retention, name, days)

    async def groups(self, prefix: str | None, contains: str | None, after: str | None, limit: int,
                     names: list[str] | None = None) -> list[LogGroupInfo]:
        """Groups by name: those starting with `prefix`, or containing `contains` in any case, or named."""
        return await self._read(LogDatabase.list_groups, prefix, contains, after, limit, names)

    # -- streams ------------------------------------------------------------------------------------

    async def streams(self, group: str, prefix: str | None, by_time: bool, descending: bool,
                      after: tuple[Any, int] | None, limit: int) -> list[LogStreamInfo]:
        """A group's streams by name, or by last event time; `after` is the (key, id) of the previous page's
        last stream."""
        return await self._read(LogDatabase.list_streams, group, prefix, by_time, descending, after, limit)

    # -- events -------------------------------------------------------------------------------------

    async def events(self, group: str, stream: str, *, start_ms: int | None, end_ms: int | None,
                     token: tuple[str, int] | None, limit: int, from_head: bool) -> EventPage:
        """GetLogEvents: a page of one stream's events in arrival order. `token` is ("f", id): after that
        event, ("b", id): the page before it; without one, the first page (`from_head`) or the last."""
        return await self._read(LogDatabase.events, group, stream, start_ms, end_ms, token, limit, from_head)

    async def filter(self, group: str, *, streams: list[str] | None, stream_prefix: str | None,
                     start_ms: int | None, end_ms: int | None, cursor: tuple[int, int] | None, limit: int,
                     matcher: Matcher) -> FilterPage:
        """FilterLogEvents: events of a group's streams by time, then arrival, that the matcher accepts."""
        return await self._read(LogDatabase.filter, group, streams, stream_prefix, start_ms, end_ms, cursor, limit,
                                matcher)
