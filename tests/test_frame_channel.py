"""The server's end of a worker's frame socket (faas.runtime.instance._FrameChannel), over a real socket pair."""

from __future__ import annotations

import asyncio
import socket

import pytest

from faas.runtime.instance import FrameTooLarge, _FrameChannel


async def _pair(limit: int) -> tuple[_FrameChannel, socket.socket]:
    ours, theirs = socket.socketpair()
    _, channel = await asyncio.get_running_loop().create_unix_connection(lambda: _FrameChannel(limit), sock=ours)
    theirs.setblocking(False)
    return channel, theirs


async def test_frames_split_at_newlines_however_they_arrive():
    channel, worker = await _pair(1024)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(worker, b'{"a":1}\n{"b"')
        assert await channel.readline() == b'{"a":1}\n'
        reading = asyncio.ensure_future(channel.readline())
        await asyncio.sleep(0.01)
        assert not reading.done()  # half a frame is not a frame
        await loop.sock_sendall(worker, b':2}\n{"c":3}\n')
        assert await asyncio.wait_for(reading, 5) == b'{"b":2}\n'
        assert await channel.readline() == b'{"c":3}\n'
        await loop.sock_sendall(worker, b"x" * 1000 + b"\n")  # exactly at the limit, in one piece
        assert await channel.readline() == b"x" * 1000 + b"\n"
        channel.write(b'{"t":"invoke"}\n')
        await channel.drain()
        assert await loop.sock_recv(worker, 100) == b'{"t":"invoke"}\n'
        worker.close()
        assert await asyncio.wait_for(channel.readline(), 5) == b""  # the worker is gone
        assert await channel.readline() == b""
    finally:
        worker.close()
        channel.close()


@pytest.mark.parametrize("pieces", [[b"y" * 3000 + b"\n"], [b"y" * 900, b"y" * 900, b"y" * 900 + b"\n"],
                                    [b"z" * 2000]])
async def test_a_frame_over_the_limit_is_refused(pieces):
    channel, worker = await _pair(1024)
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(worker, b'{"ok":1}\n')
        for piece in pieces:
            await loop.sock_sendall(worker, piece)
        assert await channel.readline() == b'{"ok":1}\n'  # what came before the long frame is intact
        with pytest.raises(FrameTooLarge):
            await asyncio.wait_for(channel.readline(), 5)
    finally:
        worker.close()
        channel.close()


async def test_a_deadline_wakes_the_reader_and_is_cleared_for_the_next_invocation():
    channel, worker = await _pair(1024)
    try:
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(channel.readline())
        await asyncio.sleep(0.01)
        channel.expire()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reading, 5)
        await loop.sock_sendall(worker, b'{"late":1}\n')
        await asyncio.sleep(0.05)  # received before the next read
        assert await channel.readline() == b'{"late":1}\n'  # a reply already there wins over the deadline
        with pytest.raises(TimeoutError):
            await channel.readline()
        channel.rearm()
        await loop.sock_sendall(worker, b'{"next":1}\n')
        assert await asyncio.wait_for(channel.readline(), 5) == b'{"next":1}\n'
    finally:
        worker.close()
        channel.close()
