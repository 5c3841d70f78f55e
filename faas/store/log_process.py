"""The log store's own process, parent side: `LogStore(..., process=True)` runs its database work
(`faas.store.logdb.LogDatabase`'s methods) in a child (`faas.store.log_child`) instead of on a thread of the
server.

Why: turning each invocation's text into rows is Python, and on a thread it shares the GIL with the event
loop. At thousands of invocations a second a flush held the GIL for milliseconds in pieces, and each time the
loop wanted it back it waited up to a switch interval (plus a thread wake-up). `benchmarks/log_stall.py`, a
busy loop recording 6,500 logs a second: 55-125 ms lost to stalls over 0.2 ms in 4 s with the thread, 9-22 ms
with this process. Here the loop only encodes each record as it comes and sends one frame per flush.

The parent (`LogProcess`) and the child (`python -m faas.store.log_child`) exchange frames on the child's
stdin and stdout: a 4-byte big-endian length, then a pickle. The first frame to the child is the database's
path; then each call is `(call id, method name, args)`, run in order by the child's `LogDatabase`, and
answered `(call id, ok, result or exception, stored_bytes)`. The child ignores SIGINT and SIGTERM (it runs in
its own session, and the server decides when logs are flushed) and exits when its stdin closes, so it never
outlives the server. When it dies anyway, calls in flight fail with `LogProcessExited` and the next call
starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faas.store.log_child import HEADER

log = logging.getLogger(__name__)


class LogProcessExited(RuntimeError):
    """The log store's process ended before answering a call (which it may or may not have carried out)."""


class LogProcess:
    """Parent side: `call(method name, args)` gives a future of the method's result in the child.
    `on_stored(bytes)` hears the child's `stored_bytes` after every call."""

    def __init__(self, path: Path, on_stored: Callable[[int], None]):
        self.path = path
        self.on_stored = on_stored
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "faas.store.log_child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C at the server's terminal is the server's to handle
        )
        self._send(pickle.dumps(str(self.path)))
        self._reader = asyncio.create_task(self._read(self.proc), name="faas-log-process")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self._reader is not None \
            and not self._reader.done()

    def call(self, method: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        self._send(pickle.dumps((self._next_id, method, args), protocol=pickle.HIGHEST_PROTOCOL))
        return future

    def _send(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(HEADER.pack(len(data)))
        self.proc.stdin.write(data)  # not joined to the header: a batch is hundreds of kB

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                (size,) = HEADER.unpack(await proc.stdout.readexactly(HEADER.size))
                call_id, ok, value, stored = pickle.loads(await proc.stdout.readexactly(size))
                self.on_stored(stored)
                future = self._pending.pop(call_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except asyncio.IncompleteReadError:
            pass
        finally:
            code = await proc.wait()
            if self._pending:
                log.error("log store process exited (code %s) with %d call(s) unanswered", code, len(self._pending))
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(LogProcessExited(f"log store process exited (code {code})"))

    async def stop(self, timeout: float) -> None:
        """Close the child's stdin (it finishes what it was sent, then exits); kill it after `timeout`."""
        proc, reader = self.proc, self._reader
        if proc is None or reader is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout)
        except TimeoutError:
            log.warning("log store process did not exit within %g s; killing it", timeout)
            proc.kill()
            await reader
