"""What the broker sources (MQTT, RabbitMQ) share: gathering a batch from an inbox their client fills, and the
decoded form of a message body that filters match against."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import msgspec


def decoded_for_filter(data: bytes) -> Any:
    """A body as FilterCriteria see it: JSON when it parses, else text, else base64."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        pass
    try:
        return data.decode()
    except UnicodeDecodeError:
        return base64.b64encode(data).decode()


async def _next(inbox: asyncio.Queue[Any], lost: asyncio.Future[Any], timeout: float | None,
                closed: Callable[[], Exception]) -> Any:
    """The next item, or None after `timeout`; raises once `lost` is done (the broker redelivers whatever was
    not acknowledged, so nothing already received is worth handling)."""
    if not lost.done():
        getter = asyncio.ensure_future(inbox.get())
        try:
            await asyncio.wait({getter, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()  # a no-op once it has its item; Queue.get keeps the item when cancelled earlier
        if not lost.done() and getter.done() and not getter.cancelled():
            return getter.result()
    if lost.done():
        lost.result()
        raise closed()
    return None


async def gather(inbox: asyncio.Queue[Any], lost: asyncio.Future[Any], size: int, window: float,
                 closed: Callable[[], Exception]) -> list[Any]:
    """Up to `size` items: waits for the first, then takes what is already waiting (window 0) or what arrives
    until `window` seconds after the first one. `closed` makes the error raised when the connection is lost."""
    batch = [await _next(inbox, lost, None, closed)]
    deadline = time.monotonic() + window
    while len(batch) < size:
        if not inbox.empty():
            batch.append(inbox.get_nowait())
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        item = await _next(inbox, lost, remaining, closed)
        if item is None:
            break
        batch.append(item)
    return batch
