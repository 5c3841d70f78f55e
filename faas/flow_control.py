"""Write flow control for asyncio protocols, as one future the writer can await."""

from __future__ import annotations

import asyncio


class WriteFlow:
    """The transport's pause_writing/resume_writing as a future: `writable` is None while writes may go on,
    else a future that resolves when they may again (or when `release_writer` gives up on it: the connection
    ended, or the write's deadline passed)."""

    writable: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.release_writer()
        self.writable = None

    def release_writer(self) -> None:
        waiter = self.writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
