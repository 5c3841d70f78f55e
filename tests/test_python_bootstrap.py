"""The Python worker bootstrap, driven over real pipes exactly as the server drives it.

Each test starts `python_bootstrap.py` in a subprocess with fd 3 (frames in), fd 4 (frames out) and one
log pipe as stdout+stderr, then speaks the JSON-lines protocol. Every read has a deadline, so a hung
worker fails the test instead of blocking it.
"""

import functools
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from worker_io import READ_TIMEOUT, Reader, WorkerHarness, sentinel

BOOTSTRAP = Path(__file__).resolve().parents[1] / "faas" / "runtime" / "worker" / "python_bootstrap.py"
LOG_LINE = re.compile(r"\[(?P<level>[A-Z]+)\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t(?P<rid>[^\t]*)\t(?P<msg>.*)\n")

# Puts the two protocol pipes on fds 3 and 4 (as the server does), then becomes the bootstrap.
LAUNCHER = textwrap.dedent(
    """
    import fcntl, os, sys
    src_in, src_out = int(sys.argv[1]), int(sys.argv[2])
    tmp_in = fcntl.fcntl(src_in, fcntl.F_DUPFD, 10)
    tmp_out = fcntl.fcntl(src_out, fcntl.F_DUPFD, 10)
    os.dup2(tmp_in, 3)
    os.dup2(tmp_out, 4)
    for fd in {src_in, src_out, tmp_in, tmp_out} - {3, 4}:
        os.close(fd)
    os.execv(sys.argv[3], sys.argv[3:])
    """
)


class Worker(WorkerHarness):
    def __init__(self, code_dir, handler, python=None, env=None, fds_by_env=False):
        super().__init__()
        self.code_dir = Path(code_dir)
        python = python or sys.executable
        in_r, self._in_w = os.pipe()
        self._out_r, out_w = os.pipe()
        self._log_r, log_w = os.pipe()
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "AWS_LAMBDA_FUNCTION_NAME": "my-fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/my-fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
            "AWS_REGION": "us-east-1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        environ.update(env or {})
        if fds_by_env:
            environ["_FAAS_FD_IN"] = str(in_r)
            environ["_FAAS_FD_OUT"] = str(out_w)
            argv = [python, str(BOOTSTRAP)]
        else:
            argv = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(in_r), str(out_w), python, str(BOOTSTRAP)]
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=str(self.code_dir),
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log_w,
                stderr=log_w,
                pass_fds=(in_r, out_w),
            )
        finally:
            for fd in (in_r, out_w, log_w):
                os.close(fd)
        self.frames = Reader(self._out_r)
        self.log = Reader(self._log_r)

    # -- protocol --------------------------------------------------------------------------------------

    def send_raw(self, data):
        os.write(self._in_w, data)

    def next_frame_raw(self, timeout=READ_TIMEOUT):
        """The next frame's bytes, with the worker's memory report and "drained" taken out (checked in
        test_rss_reported and test_drained_reply_when_the_log_pipe_was_read)."""
        line = super().next_frame_raw(timeout)
        self.last_rss = re.search(rb'"rss":(\d+)', line)
        line = re.sub(rb'"rss":\d+,|,"rss":\d+(?=\})', b"", line, count=1)
        return re.sub(rb'"drained":(true|false),|,"drained":(true|false)(?=\})', b"", line, count=1)

    def _close_input(self):
        os.close(self._in_w)

    def _close_fds(self):
        os.close(self._out_r)
        os.close(self._log_r)


@pytest.fixture
def code_dir(tmp_path):
    path = tmp_path / "task"
    path.mkdir()
    return path


@pytest.fixture
def spawn(code_dir):
    workers = []

    def start(handler="app.handler", files=None, **kwargs):
        for name, text in (files or {}).items():
            target = code_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text), encoding="utf-8")
        worker = Worker(code_dir, handler, **kwargs)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()


# --------------------------------------------------------------------------------------------------------
# Start-up


def test_ready_with_init_ms_and_module_output_before_init_sentinel(spawn):
    w = spawn(files={"app.py": 'print("loading module")\ndef handler(event, context):\n    return 1\n'})
    raw = w.next_frame_raw()
    assert raw.startswith(b'{"t":"ready","init_ms":') and raw.endswith(b"}\n")
    init_ms = json.loads(raw)["init_ms"]
    assert isinstance(init_ms, float) and 0 < init_ms < 10000
    assert w.output_of("init") == "loading module\n"
    w.close()
    assert w.proc.returncode == 0


def test_shutdown_frame_exits_zero(spawn):
    w = spawn(files={"app.py": "def handler(event, context):\n    return 1\n"})
    w.ready()
    assert w.shutdown_and_wait() == 0
    assert w.frames.read_to_eof() == b""


def test_fd_numbers_from_environment(spawn):
    w = spawn(files={"app.py": "def handler(event, context):\n    return 'ok'\n"}, fds_by_env=True)
    w.ready()
    assert w.invoke({})["payload"] == "ok"


def test_sys_path_has_task_root_first_and_not_the_bootstrap_dir(spawn, code_dir):
    w = spawn(
        files={
            "app.py": """
                import os, sys
                def handler(event, context):
                    return {"first": sys.path[0], "all": [os.path.realpath(p or ".") for p in sys.path],
                            "fd_flags": [os.get_inheritable(3), os.get_inheritable(4)]}
            """
        }
    )
    w.ready()
    payload = w.invoke({})["payload"]
    assert payload["first"] == str(code_dir)
    assert str(BOOTSTRAP.parent.resolve()) not in payload["all"]
    # The protocol fds are not handed down to the function's own child processes.
    assert payload["fd_flags"] == [False, False]


# --------------------------------------------------------------------------------------------------------
# Invocations


def test_result_payload_is_raw_compact_json_on_one_line(spawn):
    w = spawn(
        files={
            "app.py": """
                def handler(event, context):
                    return {"echo": event, "text": "line1\\nline2 \u00e9 \u2603 \U0001F600", "n": None}
            """
        }
    )
    w.ready()
    event = {"a": [1, 2.5, True], "b": {"c": "d"}}
    raw = w.invoke(event, request_id="r-raw", raw=True)
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    assert raw.startswith(b'{"t":"result","id":"r-raw","payload":{"echo":{"a":[1,2.5,true],"b":{"c":"d"}}')
    frame = json.loads(raw)
    assert frame["payload"] == {"echo": event, "text": "line1\nline2 \u00e9 \u2603 \U0001F600", "n": None}


def test_none_and_string_results(spawn):
    w = spawn(files={"app.py": "def handler(event, context):\n    return event.get('v')\n"})
    w.ready()
    assert w.invoke({"v": None}, raw=True).endswith(b'"payload":null}\n')
    assert w.invoke({"v": "hi"}, raw=True).endswith(b'"payload":"hi"}\n')


def test_module_state_survives_between_invocations(spawn):
    w = spawn(
        files={
            "app.py": """
                import os
                counter = 0
                def handler(event, context):
                    global counter
                    counter += 1
                    return {"count": counter, "pid": os.getpid()}
            """
        }
    )
    w.ready()
    first = w.invoke({}, request_id="a")["payload"]
    second = w.invoke({}, request_id="b")["payload"]
    assert (first["count"], second["count"]) == (1, 2)
    assert first["pid"] == second["pid"] == w.proc.pid


CONTEXT_APP = """
    import os
    def handler(event, context):
        ident = context.identity
        return {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "identity": [ident.cognito_identity_id, ident.cognito_identity_pool_id],
            "client_context": context.client_context,
            "tenant_id": context.tenant_id,
            "remaining": context.get_remaining_time_in_millis(),
            "remaining_type": type(context.get_remaining_time_in_millis()).__name__,
            "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        }
"""


def test_context_fields_remaining_time_and_trace_id(spawn):
    w = spawn(files={"app.py": CONTEXT_APP})
    w.ready()
    now = int(time.time() * 1000)
    payload = w.invoke(
        {}, request_id="ctx-1", deadline_ms=now + 10000, trace_id="Root=1-5759e988-bd862e3fe1be46a994272793"
    )["payload"]
    remaining = payload.pop("remaining")
    assert 5000 < remaining <= 10000
    assert payload == {
        "aws_request_id": "ctx-1",
        "function_name": "my-fn",
        "function_version": "$LATEST",
        "invoked_function_arn": "arn:aws:lambda:us-east-1:000000000000:function:my-fn",
        "memory_limit_in_mb": "256",
        "log_group_name": "/aws/lambda/my-fn",
        "log_stream_name": "2024/01/01/[$LATEST]0123456789abcdef",
        "identity": [None, None],
        "client_context": None,
        "tenant_id": None,
        "remaining_type": "int",
        "trace": "Root=1-5759e988-bd862e3fe1be46a994272793",
    }
    # A deadline already past gives 0; no trace id removes the variable; identity is filled in when sent.
    payload = w.invoke(
        {},
        request_id="ctx-2",
        deadline_ms=now - 5000,
        identity={"cognitoIdentityId": "us-east-1:abc", "cognitoIdentityPoolId": "us-east-1:pool"},
    )["payload"]
    assert payload["remaining"] == 0
    assert payload["trace"] is None
    assert payload["identity"] == ["us-east-1:abc", "us-east-1:pool"]
    assert payload["aws_request_id"] == "ctx-2"


def test_client_context_object(spawn):
    w = spawn(
        files={
            "app.py": """
                def handler(event, context):
                    cc = context.client_context
                    c = cc.client
                    return {
                        "client": [c.installation_id, c.app_title, c.app_version_name, c.app_version_code,
                                   c.app_package_name],
                        "custom": cc.custom,
                        "env": cc.env,
                    }
            """
        }
    )
    w.ready()
    client_context = {
        "client": {
            "installation_id": "inst-1",
            "app_title": "Title",
            "app_version_name": "1.0",
            "app_version_code": "100",
            "app_package_name": "com.example",
        },
        "custom": {"k": "v"},
        "env": {"platform": "Android"},
    }
    payload = w.invoke({}, client_context=client_context)["payload"]
    assert payload == {
        "client": ["inst-1", "Title", "1.0", "100", "com.example"],
        "custom": {"k": "v"},
        "env": {"platform": "Android"},
    }


def test_drained_reply_when_the_log_pipe_was_read(spawn):
    """A request that leaves nothing unread in the log pipe gets a "drained" reply and no sentinel; one whose
    output is still in the pipe gets a sentinel after it."""
    w = spawn(files={"app.py": """
        def handler(event, context):
            if event.get("say"):
                print(event["say"])
            return "ok"
    """})
    w.ready()
    assert w.invoke({}, request_id="quiet")["payload"] == "ok"
    assert "quiet" in w.drained
    assert w.invoke({"say": "hello"}, request_id="loud")["payload"] == "ok"
    assert "loud" not in w.drained
    assert w.output_of("loud") == "hello\n"
    assert w.invoke({}, request_id="quiet-again")["payload"] == "ok"
    assert "quiet-again" in w.drained
    assert w.log.read_available() == b""  # the reply came after any sentinel would have: none was written


def test_output_is_on_the_log_pipe_before_the_sentinel_and_frame(spawn):
    w = spawn(
        files={
            "app.py": """
                import logging, sys
                def handler(event, context):
                    print("from print")
                    context.log("from context.log\\n")
                    sys.stderr.write("from stderr\\n")
                    logging.getLogger("mine").warning("warned %s", 42)
                    logging.info("not shown at the default level")
                    sys.stdout.write("no newline")
                    return "done"
            """
        }
    )
    w.ready()
    assert w.invoke({}, request_id="req-log")["payload"] == "done"
    # The sentinel is written before the result frame, so by now it must already be in the pipe.
    text = w.log.read_available()
    assert text.endswith(sentinel("req-log"))
    lines = text[: -len(sentinel("req-log"))].decode()
    assert lines.startswith("from print\nfrom context.log\nfrom stderr\n")
    assert lines.endswith("no newline")
    match = LOG_LINE.search(lines)
    assert match and match.group("level", "rid", "msg") == ("WARNING", "req-log", "warned 42")
    assert "not shown" not in lines


def test_log_level_from_environment(spawn):
    w = spawn(
        files={"app.py": "import logging\ndef handler(event, context):\n    logging.info('info line')\n"},
        env={"AWS_LAMBDA_LOG_LEVEL": "INFO"},
    )
    w.ready()
    w.invoke({}, request_id="lvl")
    match = LOG_LINE.search(w.output_of("lvl"))
    assert match and match.group("level", "rid", "msg") == ("INFO", "lvl", "info line")


def test_handler_exception_has_user_frames_only(spawn, code_dir):
    w = spawn(
        files={
            "app.py": """
                def check(value):
                    raise ValueError("bad input: %s" % value)

                def handler(event, context):
                    check(event["v"])
            """
        }
    )
    w.ready()
    frame = w.invoke({"v": 7}, request_id="req-err")
    assert frame["t"] == "error" and frame["id"] == "req-err"
    error = frame["error"]
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    path = str(code_dir / "app.py")
    assert error["errorMessage"] == "bad input: 7"
    assert error["errorType"] == "ValueError"
    assert error["requestId"] == "req-err"
    assert [entry.splitlines()[0] for entry in error["stackTrace"]] == [
        '  File "%s", line 6, in handler' % path,
        '  File "%s", line 3, in check' % path,
    ]
    assert error["stackTrace"][0].splitlines()[1] == '    check(event["v"])'
    assert "python_bootstrap" not in "".join(error["stackTrace"])
    output = w.output_of("req-err")
    assert output.startswith("[ERROR] ValueError: bad input: 7\nTraceback (most recent call last):\n")
    assert "".join(error["stackTrace"]) in output
    # The worker keeps serving after an error.
    w.send({"t": "invoke", "id": "req-ok", "deadline_ms": 0, "arn": "x", "event": {"v": 1}})
    assert w.next_frame()["error"]["errorMessage"] == "bad input: 1"


def test_not_callable_handler_has_empty_stack_trace(spawn):
    w = spawn(files={"app.py": "handler = 42\n"})
    w.ready()
    error = w.invoke({})["error"]
    assert error["errorType"] == "TypeError"
    assert error["stackTrace"] == []


def test_marshal_errors(spawn):
    w = spawn(
        files={
            "app.py": """
                def handler(event, context):
                    return {"set": {1, 2}} if event == "set" else float("nan")
            """
        }
    )
    w.ready()
    frame = w.invoke("set", request_id="m-1")
    assert frame == {
        "t": "error",
        "id": "m-1",
        "error": {
            "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
            "errorType": "Runtime.MarshalError",
            "requestId": "m-1",
            "stackTrace": [],
        },
    }
    assert w.output_of("m-1").startswith("[ERROR] Runtime.MarshalError: Unable to marshal response: Object")
    # NaN is not JSON: refused rather than written into a frame the server cannot decode.
    error = w.invoke("nan", request_id="m-2")["error"]
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"].startswith("Unable to marshal response: Out of range float values")


def test_decimal_results_are_numbers(spawn):
    w = spawn(
        files={
            "app.py": """
                from decimal import Decimal
                def handler(event, context):
                    return {"price": Decimal("19.990"), "exp": Decimal("1E+2"), "neg": Decimal("-0.5"),
                            "list": [Decimal("3"), "faasdecimal"], "float": 1.5}
            """
        }
    )
    w.ready()
    raw = w.invoke({}, raw=True)
    assert raw.endswith(
        b'"payload":{"price":19.990,"exp":1E+2,"neg":-0.5,"list":[3,"faasdecimal"],"float":1.5}}\n'
    )
    assert json.loads(raw)["payload"]["exp"] == 100


def test_lone_surrogates_do_not_break_the_frame(spawn):
    w = spawn(files={"app.py": "def handler(event, context):\n    return 'a\\ud800b'\n"})
    w.ready()
    raw = w.invoke({}, raw=True)
    raw.decode("utf-8")  # strict: valid UTF-8
    assert json.loads(raw)["payload"] == "a\ufffdb"


@pytest.mark.parametrize(
    "body, status, stderr",
    [
        ("sys.exit(3)", 3, ""),
        ("sys.exit()", 0, ""),
        ("sys.exit('bye')", 1, "bye\n"),
        ("raise KeyboardInterrupt", 130, ""),
    ],
)
def test_exit_in_handler_ends_the_process_without_a_frame(spawn, body, status, stderr):
    w = spawn(files={"app.py": "import sys\ndef handler(event, context):\n    print('last words')\n    %s\n" % body})
    w.ready()
    w.send({"t": "invoke", "id": "bye", "deadline_ms": 0, "arn": "x", "event": {}})
    assert w.frames.read_to_eof() == b""
    assert w.wait() == status
    assert w.log.read_to_eof().decode() == "last words\n" + stderr


@pytest.mark.parametrize(
    "handler, module_path",
    [("pkg/sub/mod.fn", "pkg/sub/mod.py"), ("pkg.sub.mod.fn", "pkg/sub/mod.py"), ("ns/plain.fn", "ns/plain.py")],
)
def test_nested_module_handlers(spawn, handler, module_path):
    files = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        module_path: "def fn(event, context):\n    return __name__\n",
    }
    w = spawn(handler=handler, files=files)
    w.ready()
    assert w.invoke({})["payload"] == module_path[:-3].replace("/", ".")


# --------------------------------------------------------------------------------------------------------
# Init errors


def _init_error(w):
    frame = w.next_frame()
    assert frame["t"] == "init_error", frame
    error = frame["error"]
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["requestId"] == ""
    output = w.output_of("init")
    assert output.startswith(
        "[ERROR] %s: %s\nTraceback (most recent call last):\n" % (error["errorType"], error["errorMessage"])
    )
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 1
    return error


@pytest.mark.parametrize(
    "handler, files, error_type, message",
    [
        (
            "nodot",
            {},
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)",
        ),
        ("missing.handler", {}, "Runtime.ImportModuleError", "Unable to import module 'missing': No module named 'missing'"),
        (
            "app.handler",
            {"app.py": "import not_a_real_dependency\n"},
            "Runtime.ImportModuleError",
            "Unable to import module 'app': No module named 'not_a_real_dependency'",
        ),
        (
            "lib/app.handler",
            {"lib/app.py": "from os import no_such_name\n"},
            "Runtime.ImportModuleError",
            "Unable to import module 'lib/app': cannot import name 'no_such_name' from 'os'",
        ),
        (
            "app.nope",
            {"app.py": "def handler(event, context):\n    return 1\n"},
            "Runtime.HandlerNotFound",
            "Handler 'nope' missing on module 'app'",
        ),
        ("sys.handler", {}, "Runtime.BuiltInModuleConflict", "Cannot use built-in module sys as a handler module"),
    ],
)
def test_init_errors_with_empty_stack_trace(spawn, handler, files, error_type, message):
    w = spawn(handler=handler, files=files)
    error = _init_error(w)
    assert error["errorType"] == error_type
    # The "from os" form gets the module's path appended on newer Pythons.
    assert error["errorMessage"] == message or error["errorMessage"].startswith(message + " (")
    assert error["stackTrace"] == []


def test_init_syntax_error(spawn, code_dir):
    source = "x = 1\ny = = 2\n"
    w = spawn(files={"app.py": source})
    path = str(code_dir / "app.py")
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        expected = str(exc)
    error = _init_error(w)
    assert error == {
        "errorMessage": "Syntax error in module 'app': %s" % expected,
        "errorType": "Runtime.UserCodeSyntaxError",
        "requestId": "",
        "stackTrace": ['  File "%s" Line 2\n    y = = 2\n' % path],
    }


def test_init_exception_from_module_code(spawn, code_dir):
    w = spawn(files={"app.py": 'import os\n\nraise RuntimeError("boom at import")\n'})
    error = _init_error(w)
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "boom at import"
    assert error["stackTrace"][-1] == (
        '  File "%s", line 3, in <module>\n    raise RuntimeError("boom at import")\n' % (code_dir / "app.py")
    )
    assert "python_bootstrap" not in "".join(error["stackTrace"])


def test_exit_during_init_ends_without_a_frame(spawn):
    w = spawn(files={"app.py": "import sys\nsys.exit(4)\n"})
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 4


# --------------------------------------------------------------------------------------------------------
# Other interpreters


@functools.lru_cache(maxsize=None)
def find_python(version):
    """A working `pythonX.Y` (PATH, then pyenv's versions), or None. Shims that cannot run are skipped."""
    candidates = [shutil.which("python" + version)]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", version + ".*", "bin", "python" + version)))
    candidates += ["/usr/bin/python" + version, "/usr/local/bin/python" + version]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.decode().strip() == version:
            return candidate
    return None


OTHER_APP = """
    import logging
    from decimal import Decimal
    calls = 0

    def fail():
        raise KeyError("missing")

    def handler(event, context):
        global calls
        calls += 1
        print("call", calls)
        logging.warning("warned")
        if event.get("fail"):
            fail()
        return {"calls": calls, "d": Decimal("2.50"), "remaining": context.get_remaining_time_in_millis() > 0,
                "mem": context.memory_limit_in_mb, "s": "\u00e9"}
"""


@pytest.mark.parametrize("version", ["3.8", "3.9", "3.10", "3.12", "3.13", "3.14"])
def test_runs_under_other_interpreters(spawn, code_dir, version):
    python = find_python(version)
    if python is None:
        pytest.skip("python%s is not installed" % version)
    w = spawn(files={"app.py": OTHER_APP}, python=python)
    w.ready()
    raw = w.invoke({}, request_id="o-1", raw=True)
    assert raw == b'{"t":"result","id":"o-1","payload":{"calls":1,"d":2.50,"remaining":true,"mem":"256","s":"\xc3\xa9"}}\n'
    output = w.output_of("o-1")
    assert output.startswith("call 1\n")
    assert LOG_LINE.search(output).group("rid") == "o-1"
    error = w.invoke({"fail": True}, request_id="o-2")["error"]
    assert error["errorType"] == "KeyError"
    assert error["errorMessage"] == "'missing'"
    assert len(error["stackTrace"]) == 2
    assert all(entry.startswith('  File "%s"' % (code_dir / "app.py")) for entry in error["stackTrace"])
    assert w.shutdown_and_wait() == 0


@pytest.mark.parametrize("version", ["3.8", "3.12"])
def test_init_errors_under_other_interpreters(spawn, version):
    python = find_python(version)
    if python is None:
        pytest.skip("python%s is not installed" % version)
    w = spawn(handler="app.handler", files={"app.py": "def handler(:\n"}, python=python)
    error = _init_error(w)
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert error["stackTrace"][0].endswith(" Line 1\n    def handler(:\n")


def test_one_socket_for_both_directions(code_dir):
    """The server may hand over a single socketpair end as both _FAAS_FD_IN and _FAAS_FD_OUT."""
    import socket

    (code_dir / "app.py").write_text("def handler(event, context):\n    return event['x'] * 2\n")
    ours, theirs = socket.socketpair()
    log_r, log_w = os.pipe()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "_HANDLER": "app.handler",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "_FAAS_FD_IN": str(theirs.fileno()),
        "_FAAS_FD_OUT": str(theirs.fileno()),
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, str(BOOTSTRAP)], cwd=str(code_dir), env=env, stdin=subprocess.DEVNULL,
            stdout=log_w, stderr=log_w, pass_fds=(theirs.fileno(),),
        )
    finally:
        theirs.close()
        os.close(log_w)
    try:
        frames = Reader(ours.fileno())
        assert json.loads(frames.read_until(b"\n"))["t"] == "ready"
        ours.sendall(b'{"t":"invoke","id":"s-1","deadline_ms":0,"arn":"a","event":{"x":21}}\n')
        # The init sentinel is still unread in the log pipe, so this reply is not "drained": a sentinel follows.
        assert re.sub(rb'"rss":\d+,', b"", frames.read_until(b"\n")) == \
            b'{"t":"result","id":"s-1","drained":false,"payload":42}\n'
        ours.shutdown(socket.SHUT_WR)  # EOF on the worker's input
        assert proc.wait(timeout=READ_TIMEOUT) == 0
        assert Reader(log_r).read_to_eof() == sentinel("init") + sentinel("s-1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ours.close()
        os.close(log_r)


def test_rss_reported(spawn):
    worker = spawn(files={"app.py": "def handler(event, context):\n    return 1\n"})
    worker.ready()
    worker.invoke({})
    assert worker.last_rss is not None and int(worker.last_rss.group(1)) > 1000, "peak RSS in kB"
