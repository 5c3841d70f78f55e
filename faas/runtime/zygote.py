"""Zygote spawner: Python instances forked from a warm interpreter instead of exec'd.

Exec'ing `<python> python_bootstrap.py` costs tens of milliseconds before the function's own code runs
(interpreter start-up, site-packages `.pth` files, the bootstrap's imports). A zygote pays that once: it is one
long-lived child of the server per interpreter path (`worker/python_zygote.py`, started lazily with that
interpreter), which imports the bootstrap and common standard modules, calls `gc.freeze()`, and then forks one
child per instance. The server never forks itself. While idle, a zygote keeps two children forked ahead
("spares"), which have already done what does not depend on the request and have rehearsed the rest, so the
copy-on-write page faults of a fresh fork are behind them too: a request only specialises a spare (fds,
environment, cwd, sys.path, stdio) and runs the bootstrap's `main`. About 2 ms from request to `ready`, against
~45 ms for an exec; an idle instance costs ~4 MB PSS, about half an exec'd one.

Server and zygote talk over a SOCK_SEQPACKET socket pair: one JSON message per packet, the child's fds (frame
socket, log pipe) passed beside it with SCM_RIGHTS; the protocol is described in `python_zygote.py`. Forked
children are the zygote's, so it reaps them and reports `{"pid", "code"}`; `ForkedProcess` offers what
`Instance` uses of `asyncio.subprocess.Process` (`pid`, `returncode`, `wait()`), resolved by those reports.
With each spawn the zygote also passes a pidfd, so the server can still kill exactly that child, and see it go,
after the zygote itself has gone.

Lifecycle: a zygote that dies is replaced on the next spawn; its live children are SIGKILLed by the server
(what PR_SET_PDEATHSIG would do) and their handles resolve as killed. If the server dies instead, the zygote
reads EOF, SIGKILLs its children's process groups and exits; the children would also exit on EOF of their
frame sockets. A zygote that cannot start (or dies within seconds of starting) is not retried for 30 s.
`Zygotes.close()` stops every zygote: idempotent, bounded by a timeout.

What is not forked (`Zygotes.accepts` is false, the instance is exec'd as before): the exec spawner
(`runtime.spawner = "exec"`), sandboxed instances, non-Python and custom runtimes, and environments that set a
variable an interpreter or the dynamic loader reads only at start-up differently from the zygote (PYTHONHASHSEED,
PYTHONWARNINGS, locale, LD_PRELOAD, a new LD_LIBRARY_PATH directory that exists, ...). Known differences from
exec: children share the zygote's hash seed and site-packages `.pth` processing, and `ps` shows the zygote's
command line for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Protocol, Self

from faas.runtime.spawner import PYTHON_BOOTSTRAP, WORKER_DIR, base_environment

log = logging.getLogger(__name__)

ZYGOTE_SCRIPT = WORKER_DIR / "python_zygote.py"
# Python variables read after start-up (or applied by the zygote in the child); every other PYTHON* is not.
_APPLIED_PYTHON_VARS = frozenset({"PYTHONPATH", "PYTHONBREAKPOINT", "PYTHONASYNCIODEBUG"})
_STARTUP_VARS = frozenset({"LANG", "LC_ALL", "LC_CTYPE", "LD_PRELOAD", "LD_BIND_NOW", "GLIBC_TUNABLES"})
_COOLDOWN_S = 30.0
_MIN_LIFETIME_S = 5.0
_MAX_REPLY = 65536


class ZygoteUnavailable(Exception):
    """No zygote can fork this instance; the caller execs it instead."""


class ProcessHandle(Protocol):
    """What `Instance` uses of a worker process."""

    pid: int
    returncode: int | None

    async def wait(self) -> int: ...


def startup_conflict(env: Mapping[str, str], zygote_env: Mapping[str, str]) -> str | None:
    """The first variable of `env` that a fork cannot apply because it is read only when a process starts, or
    None when `env` can be forked from a zygote started with `zygote_env`."""
    for key in env.keys() | zygote_env.keys():
        startup = (key.startswith("PYTHON") and key not in _APPLIED_PYTHON_VARS) or key in _STARTUP_VARS \
            or key.startswith("MALLOC_")
        if startup and env.get(key) != zygote_env.get(key):
            return key
    # The loader fixes its search path at start-up; a directory the zygote did not have could hold libraries.
    own = set(zygote_env.get("LD_LIBRARY_PATH", "").split(":"))
    for entry in env.get("LD_LIBRARY_PATH", "").split(":"):
        if entry and entry not in own and os.path.isdir(entry):
            return "LD_LIBRARY_PATH"
    return None


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ForkedProcess:
    """A child of a zygote. `returncode` follows Popen: the exit status, or -N after signal N."""

    def __init__(self, pid: int, pidfd: int | None):
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._exited = asyncio.Event()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def _exit(self, code: int) -> None:
        if self.returncode is not None:
            return
        self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set()

    def _orphaned(self, loop: asyncio.AbstractEventLoop) -> None:
        """The zygote is gone: kill the child and resolve as killed once it has exited."""
        if self.returncode is not None:
            return
        pidfd = self._pidfd
        if pidfd is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self._exit(-signal.SIGKILL)
            return
        if not select.select([pidfd], [], [], 0)[0]:  # still running, so the pid (and its group) is its own
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)

        def gone() -> None:
            loop.remove_reader(pidfd)
            self._exit(-signal.SIGKILL)

        loop.add_reader(pidfd, gone)


class _Zygote:
    """One zygote process and the children it reported."""

    def __init__(self, interpreter: str, env: dict[str, str]):
        self.interpreter = interpreter
        self.env = env
        self.pid = 0
        self.started_at = time.monotonic()
        self.dead = False
        self.closing = False
        self.proc: asyncio.subprocess.Process | None = None
        self._loop = asyncio.get_running_loop()
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[int] = self._loop.create_future()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._send_lock = asyncio.Lock()
        self._children: dict[int, ForkedProcess] = {}

    async def start(self, timeout: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                self.interpreter, str(ZYGOTE_SCRIPT), str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), env=self.env, cwd="/",
                start_new_session=True,  # a Ctrl-C at the server's terminal is the server's to handle
            )
        except BaseException as exc:
            ours.close()
            if isinstance(exc, OSError):
                raise ZygoteUnavailable(f"cannot run {self.interpreter}: {exc}") from exc
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._loop.add_reader(ours.fileno(), self._on_readable)
        try:
            self.pid = await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except BaseException as exc:
            self.closing = True  # the caller reports it
            self.kill("did not start")
            if isinstance(exc, TimeoutError):
                raise ZygoteUnavailable(f"zygote for {self.interpreter} did not start within {timeout:g} s") from None
            raise
        self.started_at = time.monotonic()

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, fds: Mapping[int, int],
                    timeout: float) -> ForkedProcess:
        if self.dead or self._sock is None:
            raise ZygoteUnavailable(f"zygote for {self.interpreter} is gone")
        request_id = next(self._ids)
        targets = sorted(fds)
        message = {"op": "spawn", "id": request_id, "argv": list(argv), "env": dict(env), "cwd": cwd,
                   "fds": targets}
        data = json.dumps(message, separators=(",", ":")).encode()
        reply = self._pending[request_id] = self._loop.create_future()
        try:
            await self._send(data, [fds[t] for t in targets])
            return await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            self.kill("did not answer a spawn request in time")
            raise ZygoteUnavailable(f"zygote for {self.interpreter} did not answer within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _send(self, data: bytes, fds: list[int]) -> None:
        # One sender at a time: when the socket is full, waiters park on add_writer, and asyncio keeps a single
        # writer callback per fd, so concurrent senders would overwrite each other's and wait forever.
        async with self._send_lock:
            await self._send_one(data, fds)

    async def _send_one(self, data: bytes, fds: list[int]) -> None:
        while True:
            if self.dead or self._sock is None:
                raise ZygoteUnavailable(f"zygote for {self.interpreter} is gone")
            try:
                socket.send_fds(self._sock, [data], fds)
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                raise ZygoteUnavailable(f"zygote for {self.interpreter}: {exc}") from exc
            writable = self._loop.create_future()
            fd = self._sock.fileno()
            self._loop.add_writer(fd, _set_once, writable)
            try:
                await writable
            finally:
                if not self.dead:
                    self._loop.remove_writer(fd)

    def _on_readable(self) -> None:
        while self._sock is not None:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self._sock, _MAX_REPLY, 4, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except OSError as exc:
                self.died(f"control socket failed: {exc}")
                return
            if not data:
                for fd in fds:
                    os.close(fd)
                self.died("exited")
                return
            try:
                message = json.loads(data)
            except ValueError:
                message = {}
            self._handle(message, fds)

    def _handle(self, message: dict, fds: list[int]) -> None:
        op = message.get("op")
        if op == "exit":
            child = self._children.pop(message.get("pid"), None)
            if child is not None:
                child._exit(int(message.get("code", -signal.SIGKILL)))
        elif op == "spawned":
            reply = self._pending.pop(message.get("id"), None)
            error = message.get("error")
            if error or not isinstance(message.get("pid"), int):
                for fd in fds:
                    os.close(fd)
                if reply is not None and not reply.done():
                    reply.set_exception(ZygoteUnavailable(f"zygote could not fork: {error}"))
                return
            for extra in fds[1:]:
                os.close(extra)
            child = ForkedProcess(message["pid"], fds[0] if fds else None)
            # Tracked even when nobody waits any more (a cancelled start): its exit is still reported.
            self._children[child.pid] = child
            if reply is not None and not reply.done():
                reply.set_result(child)
        elif op == "ready":
            if not self._ready.done():
                self._ready.set_result(int(message.get("pid", 0)))
        else:
            for fd in fds:
                os.close(fd)

    def kill(self, reason: str) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.died(reason)

    def died(self, reason: str) -> None:
        """The zygote is gone (or given up on): fail what waits on it, kill its children. Idempotent."""
        if self.dead:
            return
        self.dead = True
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            self._sock = None
        gone = ZygoteUnavailable(f"zygote for {self.interpreter} {reason}")
        if not self._ready.done():
            self._ready.set_exception(gone)
            self._ready.exception()  # retrieved: nobody may be waiting any more
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(gone)
        self._pending.clear()
        children = list(self._children.values())
        self._children.clear()
        for child in children:
            child._orphaned(self._loop)
        if not self.closing:
            log.warning("zygote for %s (pid %s) %s; %d instance(s) killed", self.interpreter, self.pid or "?",
                        reason, len(children))

    async def close(self, timeout: float) -> None:
        self.closing = True
        if not self.dead and self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(b'{"op":"stop"}')
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self.died("stopped")


class Zygotes:
    """The server's zygotes, one per interpreter path, started on first use.

    `accepts()` says whether an instance may be forked; `spawn()` forks it, or raises ZygoteUnavailable (the
    caller then execs). One per server, created in `app.py` and closed after the pools, since stopping an
    instance waits for its exit status, which comes through its zygote."""

    def __init__(self, *, enabled: bool = True, start_timeout: float = 10.0, spawn_timeout: float = 5.0,
                 environment: dict[str, str] | None = None):
        self.enabled = enabled
        self.start_timeout = start_timeout
        self.spawn_timeout = spawn_timeout
        # A zygote's environment is what every worker inherits, plus what function environments always set.
        self.environment = environment if environment is not None else {
            **base_environment(), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
        }
        self._zygotes: dict[str, _Zygote] = {}
        self._retired: list[_Zygote] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._cooldown: dict[str, float] = {}
        self._closed = False

    def accepts(self, command: Sequence[str], env: Mapping[str, str], *, protocol: str = "jsonl",
                sandboxed: bool = False) -> bool:
        """Whether an instance with this argv and environment can be forked rather than exec'd."""
        if not self.enabled or self._closed or protocol != "jsonl" or sandboxed or len(command) != 2:
            return False
        if command[1] != str(PYTHON_BOOTSTRAP) and os.path.realpath(command[1]) != os.path.realpath(PYTHON_BOOTSTRAP):
            return False
        if self._cooldown.get(command[0], 0.0) > time.monotonic():
            return False
        return startup_conflict(env, self.environment) is None

    def pid(self, interpreter: str) -> int | None:
        """The running zygote's pid for an interpreter, if there is one."""
        zygote = self._zygotes.get(interpreter)
        return zygote.pid if zygote is not None and not zygote.dead else None

    async def spawn(self, interpreter: str, argv: Sequence[str], env: Mapping[str, str], cwd: str,
                    fds: Mapping[int, int]) -> ForkedProcess:
        """Fork `argv` (the interpreter and python_bootstrap.py) with exactly `env`, in `cwd`, with `fds`
        (the child's fd number -> a descriptor of ours, duplicated into the child). stdin is /dev/null and no
        other descriptor is inherited."""
        zygote = await self._zygote(interpreter)
        try:
            return await zygote.spawn(argv, env, cwd, fds, self.spawn_timeout)
        except ZygoteUnavailable:
            if zygote.dead and time.monotonic() - zygote.started_at < _MIN_LIFETIME_S:
                self._cooldown[interpreter] = time.monotonic() + _COOLDOWN_S
            raise

    async def _zygote(self, interpreter: str) -> _Zygote:
        zygote = self._zygotes.get(interpreter)
        if zygote is not None and not zygote.dead:
            return zygote
        async with self._locks.setdefault(interpreter, asyncio.Lock()):
            if self._closed:
                raise ZygoteUnavailable("zygotes are closed")
            zygote = self._zygotes.get(interpreter)
            if zygote is not None and not zygote.dead:
                return zygote
            self._retired = [z for z in self._retired if z.proc is not None and z.proc.returncode is None]
            if zygote is not None:
                self._retired.append(zygote)
            if self._cooldown.get(interpreter, 0.0) > time.monotonic():
                raise ZygoteUnavailable(f"zygote for {interpreter} failed recently")
            zygote = _Zygote(interpreter, self.environment)
            began = time.perf_counter()
            try:
                await zygote.start(self.start_timeout)
            except ZygoteUnavailable as exc:
                self._retired.append(zygote)
                self._cooldown[interpreter] = time.monotonic() + _COOLDOWN_S
                log.warning("%s; its instances are exec'd for %.0f s", exc, _COOLDOWN_S)
                raise
            self._zygotes[interpreter] = zygote
            log.info("zygote for %s started in %.0f ms (pid %d)", interpreter,
                     (time.perf_counter() - began) * 1000, zygote.pid)
            return zygote

    def install(self) -> Self:
        """Make this the spawner of instances created without one (`installed()`)."""
        global _installed
        _installed = self
        return self

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every zygote (their remaining children are killed). Idempotent."""
        global _installed
        if _installed is self:
            _installed = None
        if self._closed:
            return
        self._closed = True
        zygotes = [*self._zygotes.values(), *self._retired]
        self._zygotes.clear()
        self._retired.clear()
        await asyncio.gather(*(z.close(timeout) for z in zygotes))

    async def __aenter__(self) -> Self:
        return self.install()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


_installed: Zygotes | None = None


def installed() -> Zygotes | None:
    """The server's zygotes (see `Zygotes.install`), or None: instances are then exec'd."""
    return _installed
