"""The log store's own process, child side (`python -m faas.store.log_child`, started by
`faas.store.log_process.LogProcess`, which describes the protocol): a `LogDatabase` whose methods it runs as
the frames on its stdin ask, answering each on its stdout. It imports no more than the database needs
(no asyncio, no web stack): it is a process for as long as the server runs.
"""

from __future__ import annotations

import logging
import pickle
import signal
import struct
import sys
from pathlib import Path
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")  # a frame's length, before its pickle


def _frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None


def _answer(call_id: int, ok: bool, value: Any, stored: int) -> bytes:
    try:
        return pickle.dumps((call_id, ok, value, stored), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - a result or error that will not pickle is reported as one that does
        return pickle.dumps((call_id, False, RuntimeError(f"{value!r} cannot be sent: {exc}"), stored))


def main() -> None:
    from faas.store.logdb import LogDatabase, Pacer

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    first = _frame(inp)
    if first is None:
        return
    database = LogDatabase(Path(pickle.loads(first)), Pacer())
    while (frame := _frame(inp)) is not None:
        call_id, method, args = pickle.loads(frame)
        try:
            answer = _answer(call_id, True, getattr(database, method)(*args), database.stored_bytes)
        except Exception as exc:  # noqa: BLE001 - the caller's to raise
            answer = _answer(call_id, False, exc, database.stored_bytes)
        out.write(HEADER.pack(len(answer)) + answer)
        out.flush()


if __name__ == "__main__":
    main()
