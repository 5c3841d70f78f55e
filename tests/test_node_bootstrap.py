"""The Node.js worker bootstrap, driven over a real socket pair and log pipe exactly as the server drives it.

Each test starts `node node_bootstrap.mjs` with one end of a socket pair passed as `_FAAS_FD_IN` and
`_FAAS_FD_OUT` (the same fd, as the server does) and one log pipe as stdout+stderr, then speaks the
JSON-lines protocol. Every read has a deadline, so a hung worker fails the test instead of blocking it.
"""

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from worker_io import ARN, READ_TIMEOUT, Reader, WorkerHarness, sentinel

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

BOOTSTRAP = Path(__file__).resolve().parents[1] / "faas" / "runtime" / "worker" / "node_bootstrap.mjs"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
# One console record: Lambda's text format; the message may span lines.
RECORD = re.compile(TIMESTAMP + r"\t(?P<rid>[^\t]*)\t(?P<level>[A-Z]+)\t(?P<msg>.*?)\n(?=" + TIMESTAMP + r"\t|\Z)", re.S)


def base_env(code_dir, handler):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(code_dir),
        "AWS_LAMBDA_FUNCTION_NAME": "my-fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/my-fn",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
        "AWS_REGION": "us-east-1",
    }


class Worker(WorkerHarness):
    def __init__(self, code_dir, handler, env=None):
        super().__init__()
        self.code_dir = Path(code_dir)
        ours, theirs = socket.socketpair()
        log_r, log_w = os.pipe()
        environ = base_env(self.code_dir, handler)
        environ.update(env or {})
        environ["_FAAS_FD_IN"] = environ["_FAAS_FD_OUT"] = str(theirs.fileno())
        try:
            self.proc = subprocess.Popen(
                [NODE, str(BOOTSTRAP)],
                cwd=str(self.code_dir),
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log_w,
                stderr=log_w,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            os.close(log_r)
            raise
        finally:
            theirs.close()
            os.close(log_w)
        self.sock = ours
        self._log_r = log_r
        self.frames = Reader(ours.fileno())
        self.log = Reader(log_r)

    def send_raw(self, data):
        self.sock.sendall(data)

    def _close_input(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _close_fds(self):
        self.sock.close()
        os.close(self._log_r)


@pytest.fixture
def code_dir(tmp_path):
    path = tmp_path / "task"
    path.mkdir()
    return path


def write_files(root, files):
    for name, text in (files or {}).items():
        target = Path(root) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def spawn(code_dir):
    workers = []

    def start(handler="app.handler", files=None, **kwargs):
        write_files(code_dir, files)
        worker = Worker(code_dir, handler, **kwargs)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()


def records(output):
    """(request id, level, message) of each console record in a stretch of log output."""
    assert re.fullmatch("(?:" + RECORD.pattern + ")*", output, re.S), output
    return [m.group("rid", "level", "msg") for m in RECORD.finditer(output)]


def logged_error(output, label):
    """The JSON Lambda's runtime prints after `label` (e.g. "Invoke Error") in an ERROR record."""
    for rid, level, msg in records(output):
        if level == "ERROR" and msg.startswith(label + " \t"):
            return rid, json.loads(msg[len(label) + 2 :])
    raise AssertionError("no %r record in %r" % (label, output))


@functools.lru_cache(maxsize=None)
def node_has_module_hooks():
    probe = subprocess.run(
        [NODE, "-e", "const m = require('module'); process.stdout.write(String(!!(m.registerHooks || m.register)))"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    return probe.stdout == b"true"


# --------------------------------------------------------------------------------------------------------
# Start-up and shutdown


def test_ready_with_init_ms_and_module_output_before_init_sentinel(spawn):
    w = spawn(files={"app.js": "console.log('loading', {a: 1});\nexports.handler = async () => 1;\n"})
    raw = w.next_frame_raw()
    assert raw.startswith(b'{"t":"ready","init_ms":') and raw.endswith(b"}\n")
    init_ms = json.loads(raw)["init_ms"]
    assert isinstance(init_ms, (int, float)) and 0 < init_ms < 10000
    assert records(w.output_of("init")) == [("undefined", "INFO", "loading { a: 1 }")]
    w.sock.shutdown(socket.SHUT_WR)
    assert w.wait() == 0
    assert w.log.read_to_eof() == b""


def test_shutdown_frame_exits_zero(spawn):
    w = spawn(files={"app.js": "exports.handler = async () => 1;\n"})
    w.ready()
    assert w.shutdown_and_wait() == 0
    assert w.frames.read_to_eof() == b""


def test_eof_exits_zero(spawn):
    w = spawn(files={"app.js": "exports.handler = async () => 1;\n"})
    w.ready()
    w.sock.shutdown(socket.SHUT_WR)
    assert w.wait() == 0


def test_fd_variables_are_removed_from_the_environment(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async () => ({
                  fdIn: process.env._FAAS_FD_IN ?? null,
                  fdOut: process.env._FAAS_FD_OUT ?? null,
                  region: process.env.AWS_REGION,
                  cwd: process.cwd(),
                });
            """
        }
    )
    w.ready()
    payload = w.invoke({})["payload"]
    assert payload == {"fdIn": None, "fdOut": None, "region": "us-east-1", "cwd": str(w.code_dir)}


def test_separate_input_and_output_pipes(code_dir):
    """_FAAS_FD_IN and _FAAS_FD_OUT may name two different fds (here: two pipes)."""
    write_files(code_dir, {"app.js": "exports.handler = async (e) => e.x * 2;\n"})
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    log_r, log_w = os.pipe()
    env = base_env(code_dir, "app.handler")
    env.update(_FAAS_FD_IN=str(in_r), _FAAS_FD_OUT=str(out_w))
    try:
        proc = subprocess.Popen(
            [NODE, str(BOOTSTRAP)], cwd=str(code_dir), env=env, stdin=subprocess.DEVNULL,
            stdout=log_w, stderr=log_w, pass_fds=(in_r, out_w),
        )
    finally:
        for fd in (in_r, out_w, log_w):
            os.close(fd)
    try:
        frames = Reader(out_r)
        assert json.loads(frames.read_until(b"\n"))["t"] == "ready"
        os.write(in_w, b'{"t":"invoke","id":"p-1","deadline_ms":0,"arn":"a","event":{"x":21}}\n')
        assert frames.read_until(b"\n") == b'{"t":"result","id":"p-1","payload":42}\n'
        os.close(in_w)
        in_w = None
        assert proc.wait(timeout=READ_TIMEOUT) == 0
        assert Reader(log_r).read_to_eof() == sentinel("init") + sentinel("p-1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in (in_w, out_r, log_r):
            if fd is not None:
                os.close(fd)


# --------------------------------------------------------------------------------------------------------
# Module formats and handler names


@pytest.mark.parametrize(
    "handler, files, expected",
    [
        ("app.handler", {"app.js": "exports.handler = async (e) => ({kind: 'cjs', e});\n"}, "cjs"),
        (
            "app.handler",
            {"app.js": "module.exports = {handler: async (e) => ({kind: typeof require + '-cjs', e})};\n"},
            "function-cjs",
        ),
        ("app.handler", {"app.mjs": "export const handler = async (e) => ({kind: 'mjs', e});\n"}, "mjs"),
        (
            "app.handler",
            {
                "package.json": '{"type": "module"}',
                "app.js": "export const handler = async (e) => ({kind: typeof import.meta.url + '-esm-js', e});\n",
            },
            "string-esm-js",
        ),
        ("app.handler", {"app.cjs": "exports.handler = async (e) => ({kind: 'cjs-ext', e});\n"}, "cjs-ext"),
        # .js is tried before .mjs, as Lambda does.
        (
            "app.handler",
            {
                "app.js": "exports.handler = async (e) => ({kind: 'js-first', e});\n",
                "app.mjs": "export const handler = async (e) => ({kind: 'mjs-second', e});\n",
            },
            "js-first",
        ),
        (
            "src/lib/app.nested.deeper.fn",
            {"src/lib/app.js": "exports.nested = {deeper: {fn: async (e) => ({kind: 'nested', e})}};\n"},
            "nested",
        ),
        (
            "src/app.handler",
            {"src/app.mjs": "import {kind} from './kind.mjs';\nexport const handler = async (e) => ({kind, e});\n",
             "src/kind.mjs": "export const kind = 'relative-import';\n"},
            "relative-import",
        ),
        # No file of that name: a package in node_modules, as Lambda's last resort.
        (
            "mypkg.handler",
            {"node_modules/mypkg/package.json": '{"name": "mypkg", "main": "main.js"}',
             "node_modules/mypkg/main.js": "exports.handler = async (e) => ({kind: 'package', e});\n"},
            "package",
        ),
    ],
)
def test_module_formats(spawn, handler, files, expected):
    w = spawn(handler=handler, files=files)
    w.ready()
    assert w.invoke({"n": 1})["payload"] == {"kind": expected, "e": {"n": 1}}


# --------------------------------------------------------------------------------------------------------
# Results


def test_result_payload_is_raw_compact_json_on_one_line(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async (event) => ({echo: event, text: "line1\\nline2 \u00e9 \u2603 \U0001F600", n: null});
            """
        }
    )
    w.ready()
    event = {"a": [1, 2.5, True], "b": {"c": "d"}}
    raw = w.invoke(event, request_id="r-raw", raw=True)
    assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
    assert raw.startswith(b'{"t":"result","id":"r-raw","payload":{"echo":{"a":[1,2.5,true],"b":{"c":"d"}}')
    assert json.loads(raw)["payload"] == {"echo": event, "text": "line1\nline2 \u00e9 \u2603 \U0001F600", "n": None}


@pytest.mark.parametrize(
    "source, event, payload",
    [
        # A sync handler's value is used.
        ("exports.handler = (e) => e.x * 2;", {"x": 4}, b"8"),
        ("exports.handler = (e) => 'plain';", {}, b'"plain"'),
        # undefined, and values JSON drops, are null.
        ("exports.handler = async () => undefined;", {}, b"null"),
        ("exports.handler = async () => () => 1;", {}, b"null"),
        ("exports.handler = async () => NaN;", {}, b"null"),
        ("exports.handler = () => {};", {}, b"null"),
        # Nothing ever settles and the event loop empties: null, as Lambda.
        ("exports.handler = () => new Promise(() => {});", {}, b"null"),
        # Legacy context methods.
        ("exports.handler = (e, context) => { context.succeed({ok: 1}); };", {}, b'{"ok":1}'),
        ("exports.handler = (e, context) => { context.done(null, 'done'); };", {}, b'"done"'),
        ("exports.handler = (e, context) => { setTimeout(() => context.succeed('later'), 20); };", {}, b'"later"'),
        # The first of several ways to finish wins.
        ("exports.handler = async (e, context) => { context.succeed('first'); return 'second'; };", {}, b'"first"'),
        # Strings with lone surrogates still make valid UTF-8 frames.
        ("exports.handler = async () => 'a\\ud800b';", {}, b'"a\\ud800b"'),
    ],
)
def test_result_values(spawn, source, event, payload):
    w = spawn(files={"app.js": source + "\n"})
    w.ready()
    raw = w.invoke(event, request_id="v-1", raw=True)
    raw.decode("utf-8")  # strict
    assert raw == b'{"t":"result","id":"v-1","payload":' + payload + b"}\n"


def test_callback_handler_waits_for_the_empty_event_loop(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = (event, context, callback) => {
                  context.callbackWaitsForEmptyEventLoop = event.wait;
                  setTimeout(() => console.log('timer fired', event.n), 100);
                  callback(null, {n: event.n, waited: context.callbackWaitsForEmptyEventLoop});
                };
            """
        }
    )
    w.ready()
    # Default: the result goes out only once the timer has run, so its output belongs to this request.
    assert w.invoke({"n": 1, "wait": True}, request_id="cb-1")["payload"] == {"n": 1, "waited": True}
    assert [msg for _, _, msg in records(w.output_of("cb-1"))] == ["timer fired 1"]
    # callbackWaitsForEmptyEventLoop = false: the result goes out at once; the timer fires later.
    assert w.invoke({"n": 2, "wait": False}, request_id="cb-2")["payload"] == {"n": 2, "waited": False}
    assert w.output_of("cb-2") == ""
    assert records(w.log.read_until(b"timer fired 2\n").decode()) == [("cb-2", "INFO", "timer fired 2")]


@pytest.mark.parametrize(
    "source, error",
    [
        (
            "exports.handler = (e, c, callback) => callback(new RangeError('cb failed'));",
            {"errorType": "RangeError", "errorMessage": "cb failed"},
        ),
        (
            "exports.handler = (e, c, callback) => callback('cb string');",
            {"errorType": "string", "errorMessage": "cb string", "trace": []},
        ),
        (
            "exports.handler = (e, context) => context.fail();",
            {"errorType": "string", "errorMessage": "handled", "trace": []},
        ),
    ],
)
def test_callback_errors(spawn, source, error):
    w = spawn(files={"app.js": source + "\n"})
    w.ready()
    frame = w.invoke({}, request_id="cbe")
    assert frame["t"] == "error" and frame["id"] == "cbe"
    assert {k: frame["error"][k] for k in error} == error


def test_marshal_errors(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async (event) => {
                  if (event === 'circular') { const o = {}; o.self = o; return o; }
                  return {big: 10n};
                };
            """
        }
    )
    w.ready()
    frame = w.invoke("circular", request_id="m-1")
    assert frame["t"] == "error" and frame["id"] == "m-1"
    error = frame["error"]
    assert list(error) == ["errorType", "errorMessage", "trace"]
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"] == "Unable to stringify response body"
    assert error["trace"][0] == "TypeError: Converting circular structure to JSON"
    assert logged_error(w.output_of("m-1"), "Invoke Error")[1]["errorType"] == "Runtime.MarshalError"
    error = w.invoke("bigint", request_id="m-2")["error"]
    assert error["errorType"] == "Runtime.MarshalError"
    assert "BigInt" in error["trace"][0]
    # The worker keeps serving.
    assert w.invoke("circular", request_id="m-3")["t"] == "error"


def test_module_state_survives_between_invocations(spawn):
    w = spawn(
        files={
            "app.js": """
                let counter = 0;
                exports.handler = async () => ({count: ++counter, pid: process.pid});
            """
        }
    )
    w.ready()
    first = w.invoke({}, request_id="a")["payload"]
    second = w.invoke({}, request_id="b")["payload"]
    assert (first["count"], second["count"]) == (1, 2)
    assert first["pid"] == second["pid"] == w.proc.pid


def test_frames_sent_back_to_back_are_served_in_order(spawn):
    w = spawn(files={"app.js": "exports.handler = async (e) => { await new Promise(r => setTimeout(r, 20)); return e; };\n"})
    w.ready()
    w.send_raw(b"not json at all\n")
    for n in range(3):
        w.send_invoke(n, request_id="q-%d" % n)
    assert [w.next_frame() for _ in range(3)] == [
        {"t": "result", "id": "q-%d" % n, "payload": n} for n in range(3)
    ]
    assert records(w.output_of("q-0")) == [("undefined", "ERROR", "Malformed frame from the server ignored")]


# --------------------------------------------------------------------------------------------------------
# Context


CONTEXT_APP = """
    exports.handler = async (event, context) => ({
      json: JSON.parse(JSON.stringify(context)),
      keys: Object.keys(context),
      identity: context.identity === undefined ? 'undefined' : context.identity,
      clientContext: context.clientContext === undefined ? 'undefined' : context.clientContext,
      remaining: context.getRemainingTimeInMillis(),
      methods: [typeof context.done, typeof context.succeed, typeof context.fail],
      trace: process.env._X_AMZN_TRACE_ID ?? null,
    });
"""


def test_context_fields_remaining_time_and_trace_id(spawn):
    w = spawn(files={"app.js": CONTEXT_APP})
    w.ready()
    now = int(time.time() * 1000)
    payload = w.invoke(
        {}, request_id="ctx-1", deadline_ms=now + 10000, trace_id="Root=1-5759e988-bd862e3fe1be46a994272793"
    )["payload"]
    remaining = payload.pop("remaining")
    assert 5000 < remaining <= 10000
    assert payload == {
        # JSON.stringify(context) as Lambda's Node runtime prints it, in its key order.
        "json": {
            "callbackWaitsForEmptyEventLoop": True,
            "functionVersion": "$LATEST",
            "functionName": "my-fn",
            "memoryLimitInMB": "256",
            "logGroupName": "/aws/lambda/my-fn",
            "logStreamName": "2024/01/01/[$LATEST]0123456789abcdef",
            "invokedFunctionArn": ARN,
            "awsRequestId": "ctx-1",
        },
        "keys": [
            "callbackWaitsForEmptyEventLoop", "succeed", "fail", "done", "functionVersion", "functionName",
            "memoryLimitInMB", "logGroupName", "logStreamName", "clientContext", "identity",
            "invokedFunctionArn", "awsRequestId", "getRemainingTimeInMillis",
        ],
        "identity": "undefined",
        "clientContext": "undefined",
        "methods": ["function", "function", "function"],
        "trace": "Root=1-5759e988-bd862e3fe1be46a994272793",
    }
    # A deadline already past gives 0; no trace id removes the variable; identity and client context
    # are passed through as sent.
    identity = {"cognitoIdentityId": "us-east-1:abc", "cognitoIdentityPoolId": "us-east-1:pool"}
    client_context = {"client": {"installation_id": "inst-1"}, "custom": {"k": "v"}, "env": {"platform": "x"}}
    payload = w.invoke(
        {}, request_id="ctx-2", deadline_ms=now - 5000, identity=identity, client_context=client_context
    )["payload"]
    assert payload["remaining"] == 0
    assert payload["trace"] is None
    assert payload["identity"] == identity
    assert payload["clientContext"] == client_context
    assert payload["json"]["awsRequestId"] == "ctx-2"


# --------------------------------------------------------------------------------------------------------
# Console and output


def test_console_records_and_raw_output_come_before_the_sentinel(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async () => {
                  console.log('log %s %d', 'a', 42);
                  console.info('info', {k: [1]});
                  console.warn('warn');
                  console.error('error');
                  console.debug('debug');
                  console.trace('trace');
                  console.log('multi\\nline');
                  console.log();
                  process.stdout.write('raw out\\n');
                  process.stderr.write('raw err\\n');
                  process.stdout.write('no newline');
                  return 'done';
                };
            """
        }
    )
    w.ready()
    frame = w.invoke({}, request_id="c-1")
    assert frame == {"t": "result", "id": "c-1", "payload": "done"}
    output = w.output_of("c-1")
    head, tail = output.split("raw out\n")
    assert records(head) == [
        ("c-1", "INFO", "log a 42"),
        ("c-1", "INFO", "info { k: [ 1 ] }"),
        ("c-1", "WARN", "warn"),
        ("c-1", "ERROR", "error"),
        ("c-1", "DEBUG", "debug"),
        ("c-1", "TRACE", "trace"),
        ("c-1", "INFO", "multi\nline"),
        ("c-1", "INFO", "undefined"),
    ]
    assert tail == "raw err\nno newline"


def test_large_output_keeps_its_order_and_precedes_the_sentinel(spawn):
    """More than a pipe holds: the worker blocks on the log pipe rather than queueing behind the sentinel."""
    w = spawn(
        files={
            "app.js": """
                exports.handler = async () => {
                  for (let i = 0; i < 50; i++) process.stdout.write(String(i % 10).repeat(8191) + '\\n');
                  console.log('after');
                  return 'ok';
                };
            """
        }
    )
    w.ready()
    w.send_invoke({}, request_id="big")
    output = w.output_of("big")  # read the log first: the frame only comes once it has been drained
    assert w.next_frame() == {"t": "result", "id": "big", "payload": "ok"}
    lines = output.split("\n")
    assert [line[:1] * len(line) == line and len(line) == 8191 for line in lines[:50]] == [True] * 50
    assert [line[0] for line in lines[:50]] == [str(i % 10) for i in range(50)]
    assert records("\n".join(lines[50:])) == [("big", "INFO", "after")]


def test_log_level_filter(spawn):
    w = spawn(
        files={"app.js": "exports.handler = async () => { console.debug('d'); console.info('i'); console.warn('w'); console.error('e'); };\n"},
        env={"AWS_LAMBDA_LOG_LEVEL": "warn"},
    )
    w.ready()
    w.invoke({}, request_id="lvl")
    assert records(w.output_of("lvl")) == [("lvl", "WARN", "w"), ("lvl", "ERROR", "e")]


# --------------------------------------------------------------------------------------------------------
# Invocation errors


def test_thrown_error_shape_and_log(spawn, code_dir):
    w = spawn(
        files={
            "app.js": """
                function check(value) {
                  throw new TypeError('bad input: ' + value);
                }
                exports.handler = async (event) => {
                  check(event.v);
                };
            """
        }
    )
    w.ready()
    frame = w.invoke({"v": 7}, request_id="req-err")
    assert frame["t"] == "error" and frame["id"] == "req-err"
    error = frame["error"]
    assert list(error) == ["errorType", "errorMessage", "trace"]
    assert error["errorType"] == "TypeError"
    assert error["errorMessage"] == "bad input: 7"
    path = str(code_dir / "app.js")
    assert error["trace"][0] == "TypeError: bad input: 7"
    assert error["trace"][1].startswith("    at check (%s:3:" % path)
    assert error["trace"][2].startswith("    at exports.handler (%s:6:" % path)
    rid, logged = logged_error(w.output_of("req-err"), "Invoke Error")
    assert rid == "req-err"
    assert logged == {"errorType": "TypeError", "errorMessage": "bad input: 7", "stack": error["trace"]}
    # The worker keeps serving after an error.
    assert w.invoke({"v": 1}, request_id="req-2")["error"]["errorMessage"] == "bad input: 1"


@pytest.mark.parametrize(
    "source, error_type, message",
    [
        ("exports.handler = () => Promise.reject(new Error('nope'));", "Error", "nope"),
        ("exports.handler = () => { throw new SyntaxError('sync throw'); };", "SyntaxError", "sync throw"),
        (
            "class MyError extends Error { constructor(m) { super(m); this.name = 'MyError'; this.code = 7; } }\n"
            "exports.handler = async () => { throw new MyError('custom'); };",
            "MyError",
            "custom",
        ),
    ],
)
def test_error_types(spawn, source, error_type, message):
    w = spawn(files={"app.js": source + "\n"})
    w.ready()
    error = w.invoke({}, request_id="e-1")["error"]
    assert (error["errorType"], error["errorMessage"]) == (error_type, message)
    assert error["trace"][0] == "%s: %s" % (error_type, message)
    logged = logged_error(w.output_of("e-1"), "Invoke Error")[1]
    assert (logged["errorType"], logged["errorMessage"]) == (error_type, message)
    if error_type == "MyError":
        assert logged["code"] == 7  # own enumerable properties are printed, as Lambda does


@pytest.mark.parametrize(
    "source, error",
    [
        ("exports.handler = async () => { throw 'plain string'; };", {"errorType": "string", "errorMessage": "plain string"}),
        ("exports.handler = async () => { throw 42; };", {"errorType": "number", "errorMessage": "42"}),
        ("exports.handler = () => { throw {a: 1}; };", {"errorType": "object", "errorMessage": "[object Object]"}),
        ("exports.handler = () => Promise.reject();", {"errorType": "string", "errorMessage": "handled"}),
        ("exports.handler = async () => { throw null; };", {"errorType": "string", "errorMessage": "handled"}),
    ],
)
def test_non_error_thrown_values(spawn, source, error):
    w = spawn(files={"app.js": source + "\n"})
    w.ready()
    frame = w.invoke({}, request_id="ne")
    assert frame == {"t": "error", "id": "ne", "error": dict(error, trace=[])}
    # The log shows it wrapped in an Error, as Lambda's runtime prints it.
    logged = logged_error(w.output_of("ne"), "Invoke Error")[1]
    assert logged["errorType"] == "Error" and logged["errorMessage"] == error["errorMessage"]


@pytest.mark.parametrize("body, status", [("process.exit(3)", 3), ("process.exit()", 0), ("process.exitCode = 5; process.exit()", 5)])
def test_process_exit_in_handler_ends_without_a_frame(spawn, body, status):
    w = spawn(files={"app.js": "exports.handler = async () => {\n  console.log('last words');\n  %s;\n};\n" % body})
    w.ready()
    w.send_invoke({}, request_id="bye")
    assert w.frames.read_to_eof() == b""
    assert w.wait() == status
    assert records(w.log.read_to_eof().decode()) == [("bye", "INFO", "last words")]


def test_uncaught_exception_during_an_invocation(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async () => {
                  setTimeout(() => { throw new Error('late boom'); }, 10);
                  await new Promise((resolve) => setTimeout(resolve, 5000));
                  return 'never';
                };
            """
        }
    )
    w.ready()
    frame = w.invoke({}, request_id="u-1")
    assert frame["t"] == "error" and frame["id"] == "u-1"
    assert (frame["error"]["errorType"], frame["error"]["errorMessage"]) == ("Error", "late boom")
    assert frame["error"]["trace"][0] == "Error: late boom"
    rid, logged = logged_error(w.output_of("u-1"), "Uncaught Exception")
    assert rid == "u-1" and logged["errorMessage"] == "late boom"
    # Then the process ends, as Lambda's runtime does (exit status 129), so the environment is reset.
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 129


def test_unhandled_rejection_during_an_invocation(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async () => {
                  Promise.reject(new Error('lost'));
                  await new Promise((resolve) => setTimeout(resolve, 5000));
                };
            """
        }
    )
    w.ready()
    error = w.invoke({}, request_id="u-2")["error"]
    assert error["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert error["errorMessage"] == "Error: lost"
    assert error["trace"][0] == "Runtime.UnhandledPromiseRejection: Error: lost"
    logged = logged_error(w.output_of("u-2"), "Unhandled Promise Rejection")[1]
    assert (logged["errorType"], logged["reason"]) == ("Runtime.UnhandledPromiseRejection", "Error: lost")
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 128


def test_uncaught_exception_between_invocations_ends_the_process(spawn):
    w = spawn(
        files={
            "app.js": """
                exports.handler = async () => {
                  setTimeout(() => { throw new Error('after the reply'); }, 50);
                  return 'ok';
                };
            """
        }
    )
    w.ready()
    assert w.invoke({}, request_id="u-3")["payload"] == "ok"
    assert w.output_of("u-3") == ""
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 129
    rid, logged = logged_error(w.log.read_to_eof().decode(), "Uncaught Exception")
    assert rid == "u-3" and logged["errorMessage"] == "after the reply"


# --------------------------------------------------------------------------------------------------------
# Init errors


def _init_error(w):
    frame = w.next_frame()
    assert frame["t"] == "init_error", frame
    error = frame["error"]
    output = w.output_of("init")
    rid, logged = logged_error(output, "Uncaught Exception")
    assert rid == "undefined"
    if isinstance(logged, dict):
        assert (logged["errorType"], logged["errorMessage"]) == (error["errorType"], error["errorMessage"])
    else:  # a thrown non-Error is printed as JSON of itself
        assert logged == error["errorMessage"]
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 129
    return error


@pytest.mark.parametrize(
    "handler, files, error_type, message",
    [
        ("nodot", {}, "Runtime.MalformedHandlerName", "Bad handler"),
        ("", {}, "Runtime.MalformedHandlerName", "Bad handler"),
        (
            "../app.handler",
            {},
            "Runtime.MalformedHandlerName",
            "'../app.handler' is not a valid handler name. Use absolute paths when specifying root directories "
            "in handler names.",
        ),
        (
            "missing.handler",
            {},
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'missing'\nRequire stack:\n- %s" % BOOTSTRAP,
        ),
        (
            "app.handler",
            {"app.js": "require('not-a-real-dependency');\n"},
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'not-a-real-dependency'\nRequire stack:\n- {code}/app.js\n- %s" % BOOTSTRAP,
        ),
        (
            "app.handler",
            {"app.mjs": "import x from 'not-a-real-dependency';\nexport const handler = async () => x;\n"},
            "Runtime.ImportModuleError",
            "Error [ERR_MODULE_NOT_FOUND]: Cannot find package 'not-a-real-dependency' imported from {code}/app.mjs",
        ),
        ("app.nope", {"app.js": "exports.handler = async () => 1;\n"}, "Runtime.HandlerNotFound", "app.nope is undefined or not exported"),
        ("app.value", {"app.js": "exports.value = 42;\n"}, "Runtime.HandlerNotFound", "app.value is not a function"),
        ("app.handler", {"app.mjs": "export default {handler: async () => 1};\n"}, "Runtime.HandlerNotFound", "app.handler is undefined or not exported"),
    ],
)
def test_init_errors(spawn, code_dir, handler, files, error_type, message):
    w = spawn(handler=handler, files=files)
    error = _init_error(w)
    message = message.replace("{code}", str(code_dir))
    assert list(error) == ["errorType", "errorMessage", "trace"]
    assert (error["errorType"], error["errorMessage"]) == (error_type, message)
    # Lambda's trace: the runtime error's own stack, its message first.
    first_lines = ("%s: %s" % (error_type, message)).split("\n")
    assert error["trace"][: len(first_lines)] == first_lines


@pytest.mark.parametrize(
    "name, source",
    [("app.js", "exports.handler = async () => {\n  return (;\n};\n"), ("app.mjs", "export const handler = async ( => 1;\n")],
)
def test_init_syntax_error(spawn, name, source):
    w = spawn(files={name: source})
    error = _init_error(w)
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert error["errorMessage"].startswith("SyntaxError: ")
    assert error["trace"][0] == "Runtime.UserCodeSyntaxError: " + error["errorMessage"]


def test_init_exception_from_module_code(spawn, code_dir):
    w = spawn(files={"app.js": "console.log('before');\n\nthrow new RangeError('boom at import');\n"})
    error = _init_error(w)
    assert (error["errorType"], error["errorMessage"]) == ("RangeError", "boom at import")
    assert error["trace"][0] == "RangeError: boom at import"
    assert error["trace"][1].startswith("    at Object.<anonymous> (%s:3:" % (code_dir / "app.js"))


@pytest.mark.parametrize(
    "files, error",
    [
        ({"app.js": "throw 'not an error';\n"}, {"errorType": "string", "errorMessage": "not an error", "trace": []}),
        (
            {"app.mjs": "await Promise.reject(new Error('top-level await'));\nexport const handler = () => 1;\n"},
            {"errorType": "Error", "errorMessage": "top-level await"},
        ),
        # An exception thrown by the module's own async work before init is over.
        (
            {"app.mjs": "setTimeout(() => { throw new Error('async init'); }, 0);\n"
                        "await new Promise((r) => setTimeout(r, 3000));\nexport const handler = () => 1;\n"},
            {"errorType": "Error", "errorMessage": "async init"},
        ),
    ],
)
def test_other_init_failures(spawn, files, error):
    w = spawn(files=files)
    got = _init_error(w)
    assert {k: got[k] for k in error} == error


def test_exit_during_init_ends_without_a_frame(spawn):
    w = spawn(files={"app.js": "process.exit(4);\n"})
    assert w.frames.read_to_eof() == b""
    assert w.wait() == 4


# --------------------------------------------------------------------------------------------------------
# NODE_PATH (layers)


LAYER_FILES = {
    "nodejs/node_modules/greeter/package.json": '{"name": "greeter", "main": "index.js"}',
    "nodejs/node_modules/greeter/index.js": "exports.greet = (n) => 'hello ' + n;\n",
    # ESM only: no "require" condition, so only the ESM resolver can find it.
    "nodejs/node_modules/esm-greeter/package.json": '{"name": "esm-greeter", "type": "module", "exports": {"import": "./index.js"}}',
    "nodejs/node_modules/esm-greeter/index.js": "export const greet = (n) => 'hi ' + n;\n",
}


def test_node_path_for_require(spawn, tmp_path):
    opt = tmp_path / "opt"
    write_files(opt, LAYER_FILES)
    w = spawn(
        files={"app.js": "const {greet} = require('greeter');\nexports.handler = async (e) => greet(e.name);\n"},
        env={"NODE_PATH": "%s:%s" % (opt / "nodejs" / "node_modules", tmp_path / "task")},
    )
    w.ready()
    assert w.invoke({"name": "cjs"})["payload"] == "hello cjs"


def test_node_path_for_import(spawn, tmp_path):
    if not node_has_module_hooks():
        pytest.skip("this node has no module.register/registerHooks")
    opt = tmp_path / "opt"
    write_files(opt, LAYER_FILES)
    w = spawn(
        files={
            "app.mjs": """
                import {greet} from 'esm-greeter';
                import greeter from 'greeter';
                export const handler = async (e) => {
                  const late = await import('esm-greeter');
                  return [greet(e.name), greeter.greet(e.name), late.greet === greet];
                };
            """
        },
        env={"NODE_PATH": "%s:%s" % (opt / "nodejs" / "node_modules", tmp_path / "task")},
    )
    w.ready()
    assert w.invoke({"name": "esm"})["payload"] == ["hi esm", "hello esm", True]


def test_import_without_node_path_is_an_import_error(spawn, tmp_path):
    write_files(tmp_path / "opt", LAYER_FILES)
    w = spawn(files={"app.mjs": "import {greet} from 'esm-greeter';\nexport const handler = async () => greet('x');\n"})
    error = _init_error(w)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "Cannot find package 'esm-greeter'" in error["errorMessage"]
