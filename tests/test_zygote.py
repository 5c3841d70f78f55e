"""The zygote spawner: Python instances forked from a warm interpreter, seen through the real server (boto3) and
driven directly (`Zygotes` on the test's event loop, the bootstrap spoken to over its frame socket)."""

from __future__ import annotations

import asyncio
import contextlib
import base64
import concurrent.futures
import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import msgspec
import pytest
from botocore.exceptions import BotoCoreError

from conftest import Server, create_function, make_zip, unique, wait_for
from faas.runtime.instance import Instance, InstanceSpec
from faas.runtime.protocol import InvokeFrame
from faas.runtime.spawner import PYTHON_BOOTSTRAP, base_environment
from faas.runtime.zygote import ForkedProcess, Zygotes, ZygoteUnavailable, startup_conflict

FORK = {"FAAS_RUNTIME__SPAWNER": '"fork"'}
EXEC = {"FAAS_RUNTIME__SPAWNER": '"exec"'}

PROCESS = """
import os, random, signal, sys, tempfile, time
def handler(event, context):
    print("to stdout")
    print("to stderr", file=sys.stderr)
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    return {
        "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "pgid": os.getpgid(0),
        "cwd": os.getcwd(), "path0": sys.path[0], "path": sys.path, "argv": sys.argv,
        "env": dict(os.environ), "tmp": tempfile.gettempdir(), "tzname": list(time.tzname),
        "fds": fds, "stdin": sys.stdin.read(), "stdout": [sys.stdout.name, sys.stdout.encoding],
        "sigchld": int(signal.getsignal(signal.SIGCHLD)), "sigpipe": int(signal.getsignal(signal.SIGPIPE)),
        "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "random": random.random(), "request_id": context.aws_request_id,
        "modules": sorted(m for m in sys.modules if m in ("app", "helper", "shared")),
    }
"""

PID = "import os\ndef handler(event, context):\n    return [os.getpid(), os.getppid()]\n"


def invoke(lam, name: str, payload: dict | None = None, **kwargs):
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(payload or {}).encode(), **kwargs)
    return resp, json.loads(resp["Payload"].read())


def ok(lam, name: str, payload: dict | None = None):
    resp, body = invoke(lam, name, payload)
    assert "FunctionError" not in resp, body
    return body


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError("no Pss line")


@pytest.fixture(scope="module")
def fork_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("faas-fork"), env=FORK).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def flam(fork_server):
    return fork_server.client()


@pytest.fixture
def own_server(tmp_path):
    servers: list[Server] = []

    def start(**kwargs) -> Server:
        srv = Server(tmp_path / f"data{len(servers)}", **kwargs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        if srv.proc and srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)


# -- through the server ---------------------------------------------------------------------------------


def test_forked_instance_is_a_fresh_worker(fork_server, flam):
    name, _ = create_function(flam, PROCESS, MemorySize=256, Environment={"Variables": {"GREETING": "hi"}})
    resp, out = invoke(flam, name, LogType="Tail")
    assert "FunctionError" not in resp, out
    assert out["ppid"] != fork_server.proc.pid, "forked by the zygote, not exec'd by the server"
    assert out["sid"] == out["pgid"] == out["pid"], "its own session, so killpg reaches what it starts"
    env = out["env"]
    assert env["GREETING"] == "hi" and env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256" and env["TZ"] == ":UTC"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] and env["AWS_ENDPOINT_URL"] == fork_server.url
    assert not any(key.startswith("_FAAS") for key in env), "the channel's variables are the bootstrap's"
    assert out["cwd"] == env["LAMBDA_TASK_ROOT"] == out["path0"]
    assert not any("runtime/worker" in p for p in out["path"]), "the bootstrap's directory is not on sys.path"
    assert out["path"].index(out["path0"]) == 0 and any(p.endswith("site-packages") for p in out["path"])
    assert out["argv"] == [str(PYTHON_BOOTSTRAP)]
    assert os.path.isdir(env["TMPDIR"]) and out["tmp"] == env["TMPDIR"]
    assert out["tzname"] == ["UTC", "UTC"]
    assert out["fds"][:4] == [0, 1, 2, 3] and len(out["fds"]) == 5, "only stdio, the frame socket (and listdir's)"
    assert out["stdin"] == "" and out["stdout"][0] == "<stdout>"
    assert out["sigchld"] == int(signal.SIG_DFL) and out["sigpipe"] == int(signal.SIG_IGN) and out["sigint_default"]
    assert out["blocked"] == []
    assert out["request_id"] == resp["ResponseMetadata"]["RequestId"]
    log = base64.b64decode(resp["LogResult"]).decode()
    assert "to stdout\n" in log and "to stderr\n" in log
    init = float(re.search(r"Init Duration: ([\d.]+) ms", log).group(1))
    assert 0 < init < 1000
    # A second instance of another function: a different process, differently seeded.
    other, _ = create_function(flam, PROCESS)
    second = ok(flam, other)
    assert second["pid"] != out["pid"] and second["random"] != out["random"]
    assert second["ppid"] == out["ppid"], "one zygote per interpreter"


def test_modules_are_per_instance(flam):
    code = ("import sys\nBEFORE = sorted(m for m in sys.modules if m in ('helper', 'calendar_mine'))\n"
            "import helper, calendar\n"
            "def handler(event, context):\n"
            "    return [BEFORE, helper.VALUE, helper.__file__, getattr(calendar, 'MINE', None)]\n")
    a, _ = create_function(flam, {"app.py": code, "helper.py": "VALUE = 'a'\n"})
    b, _ = create_function(flam, {"app.py": code, "helper.py": "VALUE = 'b'\n",
                                  "calendar.py": "MINE = 'shadowed'\n"})
    first, second = ok(flam, a), ok(flam, b)
    assert first[0] == [] and second[0] == [], "nothing of a function's code is loaded before it runs"
    assert first[1] == "a" and second[1] == "b"
    assert first[2] != second[2]
    assert first[3] is None, "the standard calendar module"
    assert second[3] == "shadowed", "a module in the code dir wins over the zygote's preloaded one"
    # Module-level state is per instance too: a warm instance keeps it, another function starts clean.
    counter = "COUNT = 0\ndef handler(event, context):\n    global COUNT\n    COUNT += 1\n    return COUNT\n"
    c, _ = create_function(flam, counter)
    d, _ = create_function(flam, counter)
    assert [ok(flam, c), ok(flam, c), ok(flam, d)] == [1, 2, 1]


def test_layers_on_pythonpath(flam):
    layer = flam.publish_layer_version(
        LayerName=unique("layer"),
        Content={"ZipFile": make_zip({"python/shared.py": "VALUE = 'from layer'\n",
                                      "python/lib/python3.11/site-packages/sitepkg/__init__.py": "NAME = 'site'\n"})},
    )["LayerVersionArn"]
    code = "import os, shared, sitepkg\ndef handler(e, c):\n    return [shared.VALUE, sitepkg.NAME, os.getppid()]\n"
    name, _ = create_function(flam, code, Layers=[layer])
    value, site, _ppid = ok(flam, name)
    assert (value, site) == ("from layer", "site")


def test_timeout_kills_the_child_and_the_next_invoke_works(flam):
    code = ("import os, time\ndef handler(event, context):\n    if event.get('sleep'):\n        time.sleep(30)\n"
            "    return os.getpid()\n")
    name, _ = create_function(flam, code, Timeout=1)
    pid = ok(flam, name)
    resp, body = invoke(flam, name, {"sleep": True})
    assert body == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {resp['ResponseMetadata']['RequestId']} Error: Task timed out after 1.00 seconds",
    }
    wait_for(lambda: not pid_alive(pid), timeout=5)
    assert ok(flam, name) != pid


def test_sys_exit_is_a_runtime_exit_error(flam):
    code = "import sys\ndef handler(event, context):\n    sys.exit(event['code'])\n"
    name, _ = create_function(flam, code)
    resp, body = invoke(flam, name, {"code": 0})
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert resp["FunctionError"] == "Unhandled"
    assert body == {"errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {request_id} Error: Runtime exited without providing a reason"}
    resp, body = invoke(flam, name, {"code": 3})
    request_id = resp["ResponseMetadata"]["RequestId"]
    assert body == {"errorType": "Runtime.ExitError",
                    "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status 3"}
    code = "import os, signal\ndef handler(event, context):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    name, _ = create_function(flam, code)
    assert invoke(flam, name)[1]["errorMessage"].endswith("Runtime exited with error: signal: killed")


def test_startup_variables_are_exec_d(fork_server, flam):
    name, _ = create_function(flam, PID, Environment={"Variables": {"PYTHONHASHSEED": "0"}})
    assert ok(flam, name)[1] == fork_server.proc.pid, "a hash seed only takes effect in a new interpreter"


def test_idle_instances_cost_little_memory(flam):
    names = [create_function(flam, PID)[0] for _ in range(4)]
    pids = [ok(flam, name)[0] for name in names]
    pss = [pss_kb(pid) for pid in pids]
    assert max(pss) <= 10 * 1024, pss


def test_killed_zygote_does_not_break_the_server(own_server):
    srv = own_server(env=FORK)
    lam = srv.client()
    name, _ = create_function(lam, PID)
    pid, zygote = ok(lam, name)
    assert zygote != srv.proc.pid
    os.kill(zygote, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), timeout=10)  # its children go with it
    new_pid, parent = ok(lam, name)
    assert new_pid != pid and parent != zygote
    other, _ = create_function(lam, PID)
    assert ok(lam, other)[0] > 0
    assert "Traceback" not in "".join(srv.output)


def test_children_exit_when_the_server_is_killed(own_server):
    srv = own_server(env=FORK)
    lam = srv.client()
    busy, _ = create_function(lam, "import os, time\ndef handler(e, c):\n    open(e['marker'], 'w').write(str(os.getpid()))\n"
                                   "    time.sleep(60)\n", Timeout=120)
    idle, _ = create_function(lam, PID)
    pid, zygote = ok(lam, idle)
    marker = srv.data_dir.parent / "busy.pid"
    payload = json.dumps({"marker": str(marker)}).encode()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: lam.invoke(FunctionName=busy, Payload=payload))
        busy_pid = int(wait_for(lambda: marker.exists() and marker.read_text(), timeout=20))
        srv.stop(signal.SIGKILL)
        with pytest.raises(BotoCoreError):
            running.result(timeout=30)  # the connection dies with the server
    wait_for(lambda: not any(pid_alive(p) for p in (pid, busy_pid, zygote)), timeout=10)


def test_exec_spawner_still_works(own_server):
    srv = own_server(env=EXEC)
    lam = srv.client()
    name, _ = create_function(lam, PROCESS)
    resp, out = invoke(lam, name, LogType="Tail")
    assert "FunctionError" not in resp, out
    assert out["ppid"] == srv.proc.pid, "exec'd by the server"
    assert out["cwd"] == out["path0"] == out["env"]["LAMBDA_TASK_ROOT"]
    assert "Init Duration" in base64.b64decode(resp["LogResult"]).decode()


# -- Zygotes, driven directly ------------------------------------------------------------------------------


def _env(code_dir: Path, **extra: str) -> dict[str, str]:
    return {**base_environment(), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(code_dir), "LAMBDA_TASK_ROOT": str(code_dir), "_HANDLER": "app.handler",
            "_FAAS_FD_IN": "3", "_FAAS_FD_OUT": "3", **extra}


class _Worker:
    """A forked bootstrap and our ends of its frame socket and log pipe."""

    def __init__(self, proc: ForkedProcess, sock: socket.socket, log_r: int):
        self.proc, self.sock, self.log_r = proc, sock, log_r
        self.reader = sock.makefile("rb")

    def frame(self, timeout: float = 10.0) -> dict:
        self.sock.settimeout(timeout)
        line = self.reader.readline()
        frame = json.loads(line) if line else {}
        frame.pop("rss", None)  # the worker's memory report varies
        return frame

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
        os.close(self.log_r)


async def _spawn(zygotes: Zygotes, code_dir: Path, **extra: str) -> _Worker:
    ours, theirs = socket.socketpair()
    log_r, log_w = os.pipe()
    try:
        proc = await zygotes.spawn(sys.executable, [sys.executable, str(PYTHON_BOOTSTRAP)], _env(code_dir, **extra),
                                   str(code_dir), {1: log_w, 2: log_w, 3: theirs.fileno()})
    except BaseException:
        ours.close()
        os.close(log_r)
        raise
    finally:
        theirs.close()
        os.close(log_w)
    return _Worker(proc, ours, log_r)


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text(
        "import os\ndef handler(event, context):\n    return [event, os.getpid(), os.environ.get('EXTRA')]\n")
    return tmp_path / "code"


async def test_spawn_speaks_the_worker_protocol(code_dir):
    async with Zygotes() as zygotes:
        worker = await _spawn(zygotes, code_dir, EXTRA="x")
        try:
            ready = await asyncio.to_thread(worker.frame)
            assert ready["t"] == "ready" and 0 < ready["init_ms"] < 1000
            invoke = {"t": "invoke", "id": "r1", "deadline_ms": int(time.time() * 1000) + 5000, "arn": "a",
                      "event": {"n": 1}}
            worker.sock.sendall(json.dumps(invoke).encode() + b"\n")
            result = await asyncio.to_thread(worker.frame)
            # The init sentinel is still unread in the log pipe: not drained.
            assert result == {"t": "result", "id": "r1", "drained": False, "payload": [{"n": 1}, worker.proc.pid, "x"]}
            assert worker.proc.returncode is None
            worker.sock.sendall(b'{"t":"shutdown"}\n')
            assert await asyncio.wait_for(worker.proc.wait(), 10) == 0
        finally:
            worker.close()


async def test_exit_statuses_and_killpg(code_dir):
    (code_dir / "app.py").write_text("raise SystemExit(7)\n")
    async with Zygotes() as zygotes:
        worker = await _spawn(zygotes, code_dir)
        try:
            assert await asyncio.wait_for(worker.proc.wait(), 10) == 7
        finally:
            worker.close()
        (code_dir / "app.py").write_text("def handler(e, c):\n    return 1\n")
        worker = await _spawn(zygotes, code_dir)
        try:
            assert (await asyncio.to_thread(worker.frame))["t"] == "ready"
            os.killpg(worker.proc.pid, signal.SIGKILL)
            assert await asyncio.wait_for(worker.proc.wait(), 10) == -signal.SIGKILL
        finally:
            worker.close()


async def test_children_are_killed_when_the_zygote_dies(code_dir):
    async with Zygotes() as zygotes:
        worker = await _spawn(zygotes, code_dir)
        try:
            assert (await asyncio.to_thread(worker.frame))["t"] == "ready"
            zygote = zygotes.pid(sys.executable)
            assert zygote
            os.kill(zygote, signal.SIGKILL)
            assert await asyncio.wait_for(worker.proc.wait(), 10) == -signal.SIGKILL
            assert not pid_alive(worker.proc.pid)
        finally:
            worker.close()
        # The next spawn starts a new zygote.
        worker = await _spawn(zygotes, code_dir)
        try:
            assert (await asyncio.to_thread(worker.frame))["t"] == "ready"
            assert zygotes.pid(sys.executable) not in (None, zygote)
        finally:
            worker.close()


async def test_close_is_idempotent_and_final(code_dir):
    zygotes = Zygotes()
    worker = await _spawn(zygotes, code_dir)
    try:
        assert (await asyncio.to_thread(worker.frame))["t"] == "ready"
        zygote = zygotes.pid(sys.executable)
        await zygotes.close()
        await zygotes.close()
        assert await asyncio.wait_for(worker.proc.wait(), 10) == -signal.SIGKILL
        assert not pid_alive(zygote)
    finally:
        worker.close()
    assert not zygotes.accepts([sys.executable, str(PYTHON_BOOTSTRAP)], _env(code_dir))
    with pytest.raises(ZygoteUnavailable):
        await _spawn(zygotes, code_dir)


async def test_unusable_interpreter_is_unavailable(code_dir, tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    async with Zygotes(start_timeout=10) as zygotes:
        with pytest.raises(ZygoteUnavailable):
            await zygotes.spawn(str(broken), [str(broken), str(PYTHON_BOOTSTRAP)], _env(code_dir), str(code_dir), {})
        assert not zygotes.accepts([str(broken), str(PYTHON_BOOTSTRAP)], _env(code_dir)), "not retried at once"


def test_accepts():
    zygotes = Zygotes()
    python = [sys.executable, str(PYTHON_BOOTSTRAP)]
    env = {**zygotes.environment, "PYTHONPATH": "/var/task", "ANY": "thing", "LD_LIBRARY_PATH": "/nonexistent/lib"}
    assert zygotes.accepts(python, env)
    assert not zygotes.accepts(python, env, sandboxed=True)
    assert not zygotes.accepts(python, env, protocol="runtime-api")
    assert not zygotes.accepts(["node", str(PYTHON_BOOTSTRAP.with_name("node_bootstrap.mjs"))], env)
    assert not zygotes.accepts(["/var/task/bootstrap"], env)
    assert not Zygotes(enabled=False).accepts(python, env)
    for key, value in [("PYTHONHASHSEED", "0"), ("PYTHONWARNINGS", "error"), ("LANG", "C"), ("LD_PRELOAD", "x.so"),
                       ("LD_LIBRARY_PATH", "/usr/lib"), ("PYTHONUNBUFFERED", "")]:
        assert startup_conflict({**env, key: value}, zygotes.environment) == key
        assert not zygotes.accepts(python, {**env, key: value})


def _spec(code_dir: Path, work_dir: Path) -> InstanceSpec:
    return InstanceSpec(
        function_name="f", version="$LATEST", runtime="python3.11", handler="app.handler", code_dir=str(code_dir),
        memory_mb=128, timeout_s=5, command=(sys.executable, str(PYTHON_BOOTSTRAP)), work_dir=str(work_dir),
    )


def _frame(request_id: str) -> InvokeFrame:
    return InvokeFrame(id=request_id, deadline_ms=int(time.time() * 1000) + 5000, arn="arn",
                       event=msgspec.Raw(b'{"k": 1}'))


async def test_instance_forks_and_falls_back_to_exec(code_dir, tmp_path):
    env = {k: v for k, v in _env(code_dir).items() if not k.startswith("_FAAS")}
    async with Zygotes() as zygotes:
        instance = Instance(_spec(code_dir, tmp_path / "work"), spawner=zygotes)
        try:
            await instance.start(env, "stream")
            assert isinstance(instance.proc, ForkedProcess)
            outcome = await instance.invoke(_frame("r1"), 5.0)
            assert outcome.error_type is None and json.loads(outcome.payload)[0] == {"k": 1}
        finally:
            await instance.stop()
        assert instance.proc.returncode == 0
    # A zygote that cannot start in time: the instance is exec'd instead.
    async with Zygotes(start_timeout=0.001) as zygotes:
        instance = Instance(_spec(code_dir, tmp_path / "work"), spawner=zygotes)
        try:
            await instance.start(env, "stream")
            assert isinstance(instance.proc, asyncio.subprocess.Process)
            assert (await instance.invoke(_frame("r2"), 5.0)).error_type is None
        finally:
            await instance.stop()


async def test_many_concurrent_spawns_all_answer(code_dir):
    """Enough simultaneous requests to fill the control socket: every one must be answered (senders once
    overwrote each other's wait for the socket to drain, and the ones left behind hung)."""
    async with Zygotes() as zygotes:
        big = "y" * 4000  # large requests fill the socket's buffer sooner
        workers = await asyncio.wait_for(
            asyncio.gather(*(_spawn(zygotes, code_dir, EXTRA=big) for _ in range(150))), 60)
        try:
            assert len({w.proc.pid for w in workers}) == 150
        finally:
            for w in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGKILL)
            await asyncio.gather(*(asyncio.wait_for(w.proc.wait(), 20) for w in workers), return_exceptions=True)
            for w in workers:
                w.close()
