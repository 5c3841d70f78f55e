"""Server processes the harness starts and stops: `faas serve` on a fresh data dir, and the bare baseline.

Both listen on 127.0.0.1 with a port the kernel picks, and print a "listening on URL" line when ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


class ServerRefused(RuntimeError):
    """The server exited before it listened; `output` is what it printed."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


class SpawnerUnsupported(RuntimeError):
    """The server would not start with `runtime.spawner` set to the name asked for."""

    def __init__(self, spawner: str, reason: str):
        super().__init__(f"spawner {spawner!r} not accepted by this server: {reason}")
        self.spawner = spawner
        self.reason = reason


class _Process:
    """A child process that prints `<marker> URL` on a line when ready; its output is kept for errors."""

    marker = ""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.argv = argv
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self.leaked: list[int] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Self:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=REPO, env=self.env, stdin=subprocess.DEVNULL)
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    if len(self.output) < 2000:
                        self.output.append(line)
                    if not ready.is_set() and line.startswith(self.marker):
                        self.url = line.split()[3]
                        ready.set()
            except (ValueError, OSError):
                pass

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerRefused(f"{self.argv[2]} did not start", "".join(self.output))
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"refusing to benchmark a non-loopback address: {self.url}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. Processes below the server that outlive it by more than a
        few seconds are killed and listed in `leaked` (a server should stop its workers itself)."""
        proc = self.proc
        if proc is None:
            return
        below = {pid: _start_time(pid) for pid in descendants(proc.pid)} if proc.poll() is None else {}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        deadline = time.monotonic() + 3.0
        while below and time.monotonic() < deadline:
            below = {pid: t for pid, t in below.items() if t is not None and _start_time(pid) == t}
            if below:
                time.sleep(0.1)
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if below:
            self.leaked = sorted(below)
            print(f"warning: {len(below)} process(es) outlived {self.argv[2]} and were killed: {self.leaked}",
                  file=sys.stderr)

    def __enter__(self) -> Self:
        """Starts the process unless it is running already; leaving the block stops it."""
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FaasServer(_Process):
    """`python -m faas serve --port 0` on its own temporary data dir, removed on `stop()`."""

    marker = "faas listening on "

    def __init__(self, env: dict[str, str] | None = None):
        self.data_dir = tempfile.mkdtemp(prefix="faas-bench-")
        super().__init__([sys.executable, "-m", "faas", "serve", "--host", "127.0.0.1", "--port", "0",
                          "--data-dir", self.data_dir], {"FAAS_SERVER__SHUTDOWN_TIMEOUT": "5", **(env or {})})

    def stop(self, timeout: float = 30.0) -> None:
        try:
            super().stop(timeout)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class BaselineServer(_Process):
    """`python -m benchmarks.baseline`: the same route, no platform behind it."""

    marker = "baseline listening on "

    def __init__(self, body: bytes):
        super().__init__([sys.executable, "-m", "benchmarks.baseline", "--port", "0", "--body", body.decode()])


def start_faas(spawner: str | None = None, env: dict[str, str] | None = None) -> tuple[FaasServer, str]:
    """A started faas server using `spawner` (None: the server's default), and a note for the report
    ("" when the server took the setting as asked).

    A server without the `runtime.spawner` key refuses to start with it; "exec" then runs without the key
    (exec is such a server's only spawner) and the note says so; any other name raises SpawnerUnsupported.
    """
    extra = dict(env or {})
    if spawner is None:
        return FaasServer(extra).start(), ""
    try:
        server = FaasServer({**extra, "FAAS_RUNTIME__SPAWNER": f'"{spawner}"'}).start()
        return server, ""
    except ServerRefused as exc:
        if "spawner" not in exc.output:
            raise
        reason = _last_line(exc.output)
    if spawner != "exec":
        raise SpawnerUnsupported(spawner, reason)
    server = FaasServer(extra).start()
    return server, ("this server has no runtime.spawner setting (it refused the key), so exec ran with "
                    "the server's default, which is exec")


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (with the pid, it names one process), or None."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_times(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds so far of each live process among `pids` (clock-tick resolution)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return out


class CpuMeter:
    """CPU used, as shares of one core, by a server process and (separately) by its descendants between
    `start()` and `stop()`. Descendants that exit in between are missed."""

    def __init__(self, pid: int):
        self.pid = pid
        self._t0 = 0.0
        self._before: dict[int, float] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = cpu_times([self.pid, *descendants(self.pid)])

    def stop(self) -> tuple[float, float]:
        wall = time.monotonic() - self._t0
        after = cpu_times([self.pid, *descendants(self.pid)])
        used = {pid: t - self._before.get(pid, 0.0) for pid, t in after.items()}
        own = used.pop(self.pid, 0.0)
        return own / wall, sum(used.values()) / wall


def settle(pid: int, timeout: float = 5.0) -> float:
    """Wait until a server and its descendants are idle (at most one clock tick of CPU in 0.2 s), or the
    timeout passes; return the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        before = cpu_times([pid, *descendants(pid)])
        time.sleep(0.2)
        after = cpu_times([pid, *descendants(pid)])
        if sum(t - before.get(p, 0.0) for p, t in after.items()) <= 1.0 / _TICKS:
            break
    return time.monotonic() - t0


def per_spawner(spawners: list[str], env: dict[str, str] | None, notes: list[str],
                measure: Callable[[FaasServer], T]) -> dict[str, T]:
    """`measure` run on a server of its own for each spawner, by spawner name; what kept a spawner from being
    measured, and processes that outlived a server, go to `notes`."""
    figures: dict[str, T] = {}
    for spawner in spawners:
        try:
            server, note = start_faas(spawner, env)
        except SpawnerUnsupported as exc:
            notes.append(f"{spawner}: not measured; the server refused runtime.spawner = \"{spawner}\" "
                         f"({exc.reason})")
            continue
        with server:
            figures[spawner] = measure(server)
        if note:
            notes.append(f"{spawner}: {note}")
        if server.leaked:
            notes.append(f"{spawner}: {len(server.leaked)} process(es) outlived the server (killed by the harness)")
    return figures
