"""Reading a worker's frames and log pipe in the bootstrap tests: a buffered reader bounded by deadlines."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time

READ_TIMEOUT = 20.0


def sentinel(request_id: str) -> bytes:
    """What a worker writes to its log pipe when a request's output is complete."""
    return b"\x1e" + request_id.encode() + b"\x1e"


class Reader:
    """Buffered reads from a pipe or socket fd, each bounded by a deadline."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.eof = False

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data within %.0fs; have %r" % (READ_TIMEOUT, self.buf[-500:]))
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            raise TimeoutError("no data within %.0fs; have %r" % (READ_TIMEOUT, self.buf[-500:]))
        try:
            chunk = os.read(self.fd, 65536)
        except ConnectionResetError:
            chunk = b""
        if chunk:
            self.buf += chunk
        else:
            self.eof = True

    def read_until(self, token: bytes, timeout: float = READ_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while token not in self.buf:
            if self.eof:
                raise EOFError("EOF before %r; have %r" % (token, self.buf[-500:]))
            self._fill(deadline)
        head, _, self.buf = self.buf.partition(token)
        return head + token

    def read_available(self) -> bytes:
        """Whatever is already in the pipe, without waiting."""
        while not self.eof and select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
            self.buf += chunk
        data, self.buf = self.buf, b""
        return data

    def read_to_eof(self, timeout: float = READ_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(deadline)
        data, self.buf = self.buf, b""
        return data


ARN = "arn:aws:lambda:us-east-1:000000000000:function:my-fn"


class WorkerHarness:
    """What the Python and Node.js bootstrap tests share: invoke frames out, frames and the log pipe read with
    deadlines, ready/output/close. A subclass starts the process (setting `proc`, `frames`, `log`) and says how
    bytes reach it (`send_raw`) and how its input is closed and its fds released."""

    proc: subprocess.Popen
    frames: Reader
    log: Reader

    def __init__(self) -> None:
        self.drained: set[str] = set()  # requests whose reply said no sentinel follows
        self._closed = False

    def send_raw(self, data: bytes) -> None:
        raise NotImplementedError

    def _close_input(self) -> None:
        raise NotImplementedError

    def _close_fds(self) -> None:
        raise NotImplementedError

    def send(self, frame: dict) -> None:
        self.send_raw(json.dumps(frame, separators=(",", ":")).encode() + b"\n")

    def send_invoke(self, event=None, request_id="req-1", deadline_ms=None, **extra) -> None:
        if deadline_ms is None:
            deadline_ms = int(time.time() * 1000) + 30000
        frame = {"t": "invoke", "id": request_id, "deadline_ms": deadline_ms, "arn": ARN, "trace_id": None,
                 "client_context": None, "identity": None, "event": event}
        frame.update(extra)
        self.send(frame)

    def invoke(self, event=None, request_id="req-1", raw=False, **extra):
        self.send_invoke(event, request_id, **extra)
        line = self.next_frame_raw()
        return line if raw else json.loads(line)

    def next_frame_raw(self, timeout: float = READ_TIMEOUT) -> bytes:
        line = self.frames.read_until(b"\n", timeout)
        if b'"drained":true' in line:
            request_id = re.search(rb'"id":"([^"]*)"', line)
            if request_id is not None:
                self.drained.add(request_id.group(1).decode())
        return line

    def next_frame(self, timeout: float = READ_TIMEOUT) -> dict:
        return json.loads(self.next_frame_raw(timeout))

    def ready(self) -> dict:
        frame = self.next_frame()
        assert frame["t"] == "ready", frame
        self.log.read_until(sentinel("init"))
        return frame

    def output_of(self, request_id: str) -> str:
        """The log text of one request, up to its sentinel (sentinel stripped); "" for a request whose reply
        said the pipe was drained (it wrote nothing this reader had not read)."""
        if request_id in self.drained:
            return ""
        return self.log.read_until(sentinel(request_id))[: -len(sentinel(request_id))].decode()

    def wait(self, timeout: float = READ_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_input()  # EOF: the worker exits 0
        try:
            self.proc.wait(timeout=READ_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._close_fds()

    def shutdown_and_wait(self) -> int:
        self.send({"t": "shutdown"})
        return self.wait()
