"""Small helpers for the background tasks every service runs."""

from __future__ import annotations

import asyncio
import contextlib


async def finish_or_cancel(task: asyncio.Task | None, timeout: float) -> None:
    """Let a background task end by itself within `timeout` (its owner has asked it to stop), then cancel it.
    Stopping services use this so a pass in progress can commit its writes but shutdown stays bounded."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
