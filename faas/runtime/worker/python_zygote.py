"""Runs as a Python zygote: imports the bootstrap once, then forks one instance per request.

Standalone like `python_bootstrap.py` (standard library only, nothing from `faas`, CPython 3.8 and later), and
started by the server as `<python> python_zygote.py FD`, where FD is one end of a SOCK_SEQPACKET socket pair.
One message is one compact JSON object; file descriptors travel beside it as SCM_RIGHTS:

    zygote -> server  {"op":"ready","pid":P}                               once the bootstrap is imported
    server -> zygote  {"op":"spawn","id":N,"argv":[...],"env":{...},"cwd":C,"fds":[1,2,3]}  + one fd per entry
    zygote -> server  {"op":"spawned","id":N,"pid":P}  + the child's pidfd when the platform has pidfd_open
                      | {"op":"spawned","id":N,"error":TEXT}
    zygote -> server  {"op":"exit","pid":P,"code":C}                       C as Popen.returncode: -N for signal N
    server -> zygote  {"op":"stop"}

The zygote reaps its children (SIGCHLD through a wakeup pipe) and reports each exit. When the server goes away
(EOF) or asks it to stop, it SIGKILLs every child's process group and exits.

Forking is split in two so that most of its cost is paid before anyone waits: when idle, the zygote keeps
`_SPARES` children forked ahead. A spare has done what does not depend on the request (its own session, the
zygote's start-up signal dispositions, an empty signal mask, every inherited descriptor closed but its own
socket to the zygote) and waits. A spawn request goes to a spare (or to a child forked on the spot when none is
left), which then becomes what `<python> python_bootstrap.py` would have been, started with `env` in `cwd`:
the given fds in place (stdin on /dev/null), `os.environ`, cwd, timezone, `sys.path` (PYTHONPATH first, then
the interpreter's own paths), fresh stdio objects and a reseeded `random`. Loaded modules that the function's
own directories shadow are dropped from `sys.modules`, so the function's copy is imported as a fresh
interpreter would. It then runs the bootstrap's `main`, with init time counted from the spawn request.
"""

import array
import fcntl
import gc
import io
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_BOOTSTRAP = os.path.join(_HERE, "python_bootstrap.py")
_MAX_MESSAGE = 1 << 20
_MAX_FDS = 16
_SPARES = 2
# Spares are forked this long after a spawn, so that forking does not compete with the start of its instance.
_SPARE_DELAY_S = 0.003

# Imported once here so instances find them loaded: the bootstrap's own needs and standard modules that
# functions (and boto3) commonly import. Standard library only: code of functions never runs in the zygote.
_PRELOAD = (
    "json", "logging", "traceback", "importlib", "importlib.util", "importlib.machinery", "decimal", "re",
    "datetime", "base64", "binascii", "hashlib", "hmac", "uuid", "typing", "dataclasses", "enum", "collections",
    "functools", "itertools", "contextlib", "copy", "string", "struct", "zlib", "gzip", "io", "random",
    "calendar", "email.utils", "urllib.parse", "http.client", "socket", "ssl", "select", "selectors",
    "threading", "queue", "concurrent.futures", "tempfile", "shutil", "pathlib", "subprocess", "platform",
    "inspect", "textwrap", "weakref", "operator", "numbers", "fractions", "math", "warnings", "locale",
)


def _real(path):
    try:
        return os.path.realpath(path or os.getcwd())
    except Exception:
        return path


def _load_bootstrap():
    import importlib.util

    spec = importlib.util.spec_from_file_location("python_bootstrap", _BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not registered in sys.modules: a fresh worker has it as __main__ only
    return module


def _preload():
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:
            pass  # absent from this interpreter's standard library


def _exit_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


def _send(sock, message, fds=()):
    data = json.dumps(message, separators=(",", ":")).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def _receive(sock):
    """One message and the descriptors that came with it; (b"", []) at EOF."""
    cmsg_space = socket.CMSG_SPACE(_MAX_FDS * array.array("i").itemsize)
    data, ancillary, _flags, _addr = sock.recvmsg(_MAX_MESSAGE, cmsg_space, socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return data, list(fds)


def _close_all_but(keep):
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = range(os.sysconf("SC_OPEN_MAX"))
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


class _Spare(object):
    __slots__ = ("pid", "pidfd", "sock")

    def __init__(self, pid, sock, pidfd):
        self.pid = pid
        self.sock = sock
        self.pidfd = pidfd

    def close(self):
        self.sock.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class _Zygote(object):
    def __init__(self, ctl):
        self.ctl = ctl
        # What a fresh interpreter started by the server would have: recorded before anything is imported.
        here = _real(_HERE)
        self.base_path = [p for p in sys.path if _real(p) != here]
        self.dispositions = {}
        for sig in signal.valid_signals():
            try:
                self.dispositions[sig] = signal.getsignal(sig)
            except (OSError, ValueError):
                pass
        self.children = set()  # every live child, spares included
        self.spares = []
        self.spare_at = 0.0
        self.boot = _load_bootstrap()
        _preload()
        self.stdio = [(getattr(s, "encoding", None) or "utf-8", getattr(s, "errors", None) or "strict")
                      for s in (sys.__stdin__, sys.__stdout__, sys.__stderr__)]
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        gc.collect()
        gc.freeze()  # children do not rewrite the zygote's objects (and share their pages) on their first GC

    def send(self, message, fds=()):
        try:
            _send(self.ctl, message, fds)
        except OSError:
            self.shutdown()

    def serve(self):
        self.send({"op": "ready", "pid": os.getpid()})
        poller = select.poll()
        poller.register(self.ctl.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        while True:
            timeout = None
            if len(self.spares) < _SPARES:
                timeout = max(0, int((self.spare_at - time.monotonic()) * 1000))
            events = poller.poll(timeout)
            if not events:
                try:
                    self.spares.append(self.fork())
                except OSError:  # out of processes or memory for now: try again later
                    self.spare_at = time.monotonic() + 1.0
                continue
            for fd, _events in events:
                if fd == self.wake_r:
                    self.reap()
                    continue
                data, fds = _receive(self.ctl)
                if not data:
                    self.shutdown()
                try:
                    message = json.loads(data.decode("utf-8"))
                except ValueError:
                    message = {}
                op = message.get("op")
                if op == "spawn":
                    self.spawn(message, data, fds)
                    self.spare_at = time.monotonic() + _SPARE_DELAY_S
                else:
                    for received in fds:
                        os.close(received)
                    if op == "stop":
                        self.shutdown()

    def reap(self):
        try:
            while os.read(self.wake_r, 512):
                pass
        except OSError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            spare = next((s for s in self.spares if s.pid == pid), None)
            if spare is not None:
                self.spares.remove(spare)
                spare.close()
            else:
                self.send({"op": "exit", "pid": pid, "code": _exit_code(status)})

    def shutdown(self):
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)

    def spawn(self, message, data, fds):
        started = time.perf_counter()
        reply = {"op": "spawned", "id": message.get("id")}
        spare = None
        try:
            argv, targets = message["argv"], message["fds"]
            if len(targets) != len(fds):
                raise ValueError("%d descriptors for %d targets" % (len(fds), len(targets)))
            if len(argv) != 2 or (argv[1] != _BOOTSTRAP and _real(argv[1]) != _real(_BOOTSTRAP)):
                raise ValueError("this zygote only runs %s" % _BOOTSTRAP)
            # The request as it came, after the time it arrived: init time counts from there.
            assignment = repr(started).encode() + b"\n" + data
            while spare is None:
                spare = self.spares.pop(0) if self.spares else self.fork()
                try:
                    spare.sock.sendmsg([assignment], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                except OSError:  # it died while waiting; the next one
                    spare.close()
                    spare = None
        except Exception as exc:
            reply["error"] = "%s: %s" % (type(exc).__name__, exc)
        else:
            reply["pid"] = spare.pid
        finally:
            for fd in fds:
                os.close(fd)
        self.send(reply, [spare.pidfd] if spare is not None and spare.pidfd is not None else [])
        if spare is not None:
            spare.close()

    def fork(self):
        """A new spare: a child waiting, in its own session, for the request that makes it an instance."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sync_r, sync_w = os.pipe()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                os.close(sync_w)  # the parent goes on once the child leads its own process group
                _Child(self, theirs).run()
            except BaseException:
                try:
                    text = "faas zygote: could not start the instance\n" + traceback.format_exc()
                    os.write(2, text.encode("utf-8", "replace"))
                except BaseException:
                    pass
            finally:
                os._exit(1)
        theirs.close()
        os.close(sync_w)
        try:
            os.read(sync_r, 1)
        finally:
            os.close(sync_r)
        self.children.add(pid)
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)  # exact even if the pid is reused after it exits
            except OSError:
                pidfd = None
        return _Spare(pid, ours, pidfd)


class _Child(object):
    """Inside a forked child: waits for its request, becomes the instance, runs the bootstrap. Never returns."""

    def __init__(self, zygote, sock):
        self.zygote = zygote
        self.sock = sock

    def run(self):
        z = self.zygote
        signal.set_wakeup_fd(-1)
        for sig, handler in z.dispositions.items():
            if handler is None:
                continue  # installed outside Python: left as inherited
            try:
                if signal.getsignal(sig) != handler:
                    signal.signal(sig, handler)
            except (OSError, ValueError, RuntimeError):
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # Python objects over the zygote's descriptors must never close a number that is reused later.
        z.ctl.detach()
        for spare in z.spares:
            spare.sock.detach()
        _close_all_but({0, 1, 2, self.sock.fileno()})
        self.warm_up()
        data, fds = _receive(self.sock)
        if not data:
            os._exit(0)  # the zygote is gone
        started, _, data = data.partition(b"\n")
        request = json.loads(data.decode("utf-8"))
        self.place_fds(dict(zip(request["fds"], fds)))
        env = request["env"]
        os.environ.clear()
        os.environ.update(env)
        os.chdir(request["cwd"])
        time.tzset()
        tempfile = sys.modules.get("tempfile")
        if tempfile is not None:
            tempfile.tempdir = None  # recomputed from this environment's TMPDIR
        random = sys.modules.get("random")
        if random is not None:
            random.seed()
        first = _python_path(env)
        _drop_shadowed(first)
        sys.path[:] = _dedup([_HERE] + first + z.base_path)
        sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
        streams = self.stdio((0, 1, 2), bool(env.get("PYTHONUNBUFFERED")))
        sys.stdin, sys.stdout, sys.stderr = streams
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = streams
        argv = request["argv"]
        sys.argv[:] = list(argv[1:])
        if hasattr(sys, "orig_argv"):
            sys.orig_argv = list(argv)
        sys.modules["__main__"] = z.boot
        z.boot.main(started=float(started))

    def place_fds(self, fd_map):
        own = self.sock.detach()
        high = max([2] + list(fd_map)) + 1
        moved = {}  # target -> a copy above every target, so no dup2 below overwrites a source
        for target, fd in fd_map.items():
            moved[target] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high)
        missing = [target for target in (0, 1, 2) if target not in moved]
        if missing:
            null = os.open(os.devnull, os.O_RDWR)
            for target in missing:
                moved[target] = fcntl.fcntl(null, fcntl.F_DUPFD_CLOEXEC, high)
            os.close(null)
        for target, fd in moved.items():
            os.dup2(fd, target)  # inheritable, as fds 0-2 and pass_fds are after an exec
        for fd in set(moved.values()) | set(fd_map.values()) | {own}:
            if fd not in moved:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def stdio(self, fds, unbuffered):
        """stdin, stdout and stderr objects over `fds`, made as the interpreter makes them at start-up."""
        streams = []
        for index, fd in enumerate(fds):
            encoding, errors = self.zygote.stdio[index]
            write = index != 0
            raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
            raw.name = ("<stdin>", "<stdout>", "<stderr>")[index]
            if write and unbuffered:
                buffer = raw
            else:
                buffer = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
            line_buffering = write and not unbuffered and (index == 2 or raw.isatty())
            text = io.TextIOWrapper(buffer, encoding=encoding, errors=errors, newline="\n",
                                    line_buffering=line_buffering, write_through=write and unbuffered)
            text.mode = "w" if write else "r"
            streams.append(text)
        return streams

    def warm_up(self):
        """Rehearse, on throw-away data, what a request will make this child do. Each page it writes is copied
        from the zygote's on the first write; taking those faults now takes them off the cold start. Stops as
        soon as the request is there."""
        for step in (self._warm_environ, self._warm_paths, self._warm_stdio, self._warm_imports):
            if select.select([self.sock], [], [], 0)[0]:
                return
            step()

    def _warm_environ(self):
        saved = dict(os.environ)
        json.loads(json.dumps({"argv": ["python"], "env": saved, "cwd": "/", "fds": [1, 2, 3]}))
        os.environ.clear()
        os.environ.update(saved)

    def _warm_paths(self):
        _drop_shadowed([])
        for path in _dedup(list(sys.path)):
            _real(path)

    def _warm_stdio(self):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for unbuffered in (True, False):
                for stream in self.stdio((null, null, null), unbuffered):
                    stream.flush()
        finally:
            os.close(null)

    def _warm_imports(self):
        import importlib.util
        import logging

        logging.Formatter("%(message)s", "%Y-%m-%d").format(logging.LogRecord("x", 20, "x", 1, "x", None, None))
        importlib.util.find_spec("_faas_no_such_module")
        compile("def handler(event, context):\n    return event\n", "<warm-up>", "exec")


def _python_path(env):
    """PYTHONPATH's entries, as an interpreter puts them on sys.path at start-up (absolute)."""
    value = env.get("PYTHONPATH", "")
    return [os.path.abspath(entry) for entry in value.split(os.pathsep)] if value else []


def _drop_shadowed(directories):
    """Forget loaded modules that a function's directory (first on sys.path) provides itself."""
    loaded = {name.partition(".")[0] for name in sys.modules}
    shadowed = set()
    for directory in directories:
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            name = entry.partition(".")[0]
            if name not in loaded or name in shadowed:
                continue
            if entry == name:
                if os.path.isfile(os.path.join(directory, entry, "__init__.py")):
                    shadowed.add(name)
            elif entry.endswith((".py", ".so", ".pyc")):
                shadowed.add(name)
    for name in shadowed:
        origin = getattr(getattr(sys.modules.get(name), "__spec__", None), "origin", None)
        if name in sys.builtin_module_names or origin in ("built-in", "frozen") or name == "__main__":
            continue
        for loaded_name in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded_name]


def _dedup(paths):
    seen = set()
    out = []
    for path in paths:
        key = os.path.normcase(os.path.abspath(path)) if path else path
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def main():
    ctl = socket.socket(fileno=int(sys.argv[1]))
    ctl.setblocking(True)
    zygote = _Zygote(ctl)
    try:
        zygote.serve()
    except BaseException:
        traceback.print_exc()
    finally:
        zygote.shutdown()


if __name__ == "__main__":
    main()
