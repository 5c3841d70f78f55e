"""Runs inside a Python function's worker process: imports the handler, then serves invocations.

Standalone on purpose: standard library only, nothing from `faas`, and valid on CPython 3.8 to 3.14,
because it runs under whichever interpreter the function's runtime names.

Started as `<python> python_bootstrap.py` with cwd = the code directory, fd 1 and fd 2 on one log pipe,
fd 3 carrying frames from the server and fd 4 frames to it (overridable by `_FAAS_FD_IN`/`_FAAS_FD_OUT`).
Frames are compact JSON, one per line:

    worker -> server  {"t":"ready","init_ms":F} | {"t":"init_error","error":{...}}   (then exit 1)
    server -> worker  {"t":"invoke","id":ID,"deadline_ms":MS,"arn":A,"trace_id":T,
                       "client_context":C,"identity":I,"event":E} | {"t":"shutdown"}
    worker -> server  {"t":"result","id":ID,"payload":RAW_JSON} | {"t":"error","id":ID,"error":{...}}

A handler streams its response by being a generator (or returning one): each item it yields is sent at
once, as {"t":"chunk","id":ID,"data":BASE64} frames of at most 1 MiB (the first also carries "content_type",
application/octet-stream), and {"t":"result","id":ID,"streamed":true} ends the stream. Items are bytes, or
str (sent as UTF-8). A dict yielded first is the HTTP response head for function URLs, Lambda's
http-integration prelude: {"statusCode": 201, "headers": {...}, "cookies": [...]} (the content type becomes
application/vnd.awslambda.http-integration-response, and the JSON prelude and 8 NUL bytes precede the body).
An exception raised while streaming ends the stream with an error frame.

Before each reply frame (and before ready/init_error, under the id "init") the worker flushes its
streams and writes b"\\x1e" + id + b"\\x1e" to fd 1, so the server knows that request's output is
complete; a reply may instead carry "drained":true, when the pipe held no unread bytes as the reply was
sent (the server has read all the output already) and no sentinel was written. EOF on the input or a
shutdown frame ends the process with status 0. A handler raising SystemExit or KeyboardInterrupt ends it at
once, with no frame.
"""

import time

_STARTED = time.perf_counter()  # first statement: init_ms is measured from here

import binascii
import fcntl
import json
import logging
import os
import resource
import struct
import sys
import termios
import traceback
import types

_SENTINEL_MARK = b"\x1e"
_INIT_ID = "init"
_STREAM_CONTENT_TYPE = "application/octet-stream"
_HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"
_CHUNK_BYTES = 1 << 20
_UNREAD = bytes(4)  # FIONREAD's answer: an int
# Response encoding. Lambda itself writes ", " / ": " separators; the server contract asks for compact
# text. NaN/Infinity are refused (Runtime.MarshalError) because the server's strict JSON decoder would
# reject a frame carrying them.
_SEPARATORS = (",", ":")
_ALLOW_NAN = False

_LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n"
_LOG_DATEFMT = "%Y-%m-%dT%H:%M:%S"
_LOG_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
    "CRITICAL": logging.CRITICAL,
}

# The request id that log records are stamped with: the invocation in progress (or the last one).
_current_request_id = ""


# ----------------------------------------------------------------------------------------------------
# Low-level output


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _flush_std():
    seen = []
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is None or stream in seen:  # streams compare by identity
            continue
        seen.append(stream)
        try:
            stream.flush()
        except Exception:
            pass


def _write_sentinel(request_id):
    """Marks the end of a request's output on the log pipe. Streams are flushed first."""
    _flush_std()
    try:
        _write_all(1, _SENTINEL_MARK + request_id.encode("utf-8", "replace") + _SENTINEL_MARK)
    except OSError:
        pass  # fd 1 closed by the function: the server falls back to its own timing


def _end_output(request_id):
    """Ends a request's output: True when the log pipe was already empty (the server has read all of it, so
    the reply says "drained" and no sentinel is needed: one write and one wake-up of the server fewer),
    False when a sentinel was written. Streams are flushed first."""
    _flush_std()
    try:
        # fd 1 and fd 2 are one pipe unless the function moved one of them.
        unread = struct.unpack("i", fcntl.ioctl(1, termios.FIONREAD, _UNREAD))[0] + \
            struct.unpack("i", fcntl.ioctl(2, termios.FIONREAD, _UNREAD))[0]
    except (OSError, ValueError):
        unread = None  # closed, or not something FIONREAD answers for: mark the end as always
    if unread == 0:
        return True
    _write_sentinel(request_id)
    return False


def _encode_text(text):
    """UTF-8 bytes of JSON text; lone surrogates (not valid UTF-8) become U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        import re

        return re.sub("[\ud800-\udfff]", "\ufffd", text).encode("utf-8")


# Built once: json.dumps with any non-default argument builds a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=_SEPARATORS, ensure_ascii=False, allow_nan=_ALLOW_NAN)
_dumps = _ENCODER.encode


class _NotPlain(Exception):
    """A result holds something json cannot write by itself (a Decimal, or an error to report)."""


def _not_plain(obj):
    raise _NotPlain


_PLAIN_ENCODER = json.JSONEncoder(separators=_SEPARATORS, ensure_ascii=False, allow_nan=_ALLOW_NAN,
                                  default=_not_plain)


def _safe_str(value):
    try:
        return str(value)
    except Exception:
        try:
            return "<unprintable %s object>" % type(value).__name__
        except Exception:
            return "<unprintable object>"


# ----------------------------------------------------------------------------------------------------
# Response marshalling


def _to_json(value):
    """Compact JSON text for a handler's result; `decimal.Decimal` values are written as numbers.

    Raises TypeError/ValueError (or anything json raises) when the value cannot be represented.
    """
    try:
        return _PLAIN_ENCODER.encode(value)
    except _NotPlain:
        pass  # written again below, where Decimals are handled and other objects reported
    decimals = []
    marker = []

    def default(obj):
        decimal = sys.modules.get("decimal")  # no Decimal can exist unless decimal was imported
        if decimal is not None and isinstance(obj, decimal.Decimal):
            if not obj.is_finite():
                if _ALLOW_NAN:
                    text = "NaN" if obj.is_nan() else ("-Infinity" if obj.is_signed() else "Infinity")
                else:
                    raise ValueError("Out of range Decimal values are not JSON compliant: %s" % obj)
            else:
                text = str(obj)  # e.g. "1.10", "1E+2", "-0": always a valid JSON number
            if not marker:
                marker.append("faasdecimal" + os.urandom(8).hex())
            decimals.append(text)
            # A placeholder string, swapped for the bare number below.
            return "%s_%d" % (marker[0], len(decimals) - 1)
        raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)

    text = json.dumps(
        value, separators=_SEPARATORS, ensure_ascii=False, allow_nan=_ALLOW_NAN, default=default
    )
    if decimals:
        import re

        pattern = re.compile('"%s_([0-9]+)"' % marker[0])
        text = pattern.sub(lambda m: decimals[int(m.group(1))], text)
    return text


# ----------------------------------------------------------------------------------------------------
# Errors


def _own_filename():
    return _own_filename.__code__.co_filename


def _user_frames(tb):
    """traceback.format_list() of a traceback, minus the bootstrap's own leading frames."""
    frames = traceback.extract_tb(tb)
    own = _own_filename()
    start = 0
    while start < len(frames) and frames[start].filename == own:
        start += 1
    return traceback.format_list(frames[start:])


def _error(message, error_type, request_id, stack_trace):
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack_trace,
    }


def _error_from_exception(exc, request_id):
    return _error(_safe_str(exc), type(exc).__name__, request_id, _user_frames(exc.__traceback__))


def _log_error(error):
    """The block Lambda prints for a failed init or invocation, straight to fd 2."""
    text = "[ERROR] %s: %s\nTraceback (most recent call last):\n%s" % (
        error["errorType"],
        error["errorMessage"],
        "".join(error["stackTrace"]),
    )
    if not text.endswith("\n"):
        text += "\n"
    _flush_std()
    try:
        _write_all(2, _encode_text(text))
    except OSError:
        pass


def _exit_now(exc):
    """A handler raised SystemExit/KeyboardInterrupt: leave like an interpreter would, without a frame."""
    if isinstance(exc, SystemExit):
        code = exc.code
    else:
        code = 130  # what a shell reports for SIGINT
    if code is None:
        code = 0
    elif not isinstance(code, int):
        try:
            _flush_std()
            _write_all(2, _encode_text(_safe_str(code) + "\n"))
        except OSError:
            pass
        code = 1
    _flush_std()
    os._exit(code & 0xFF)


# ----------------------------------------------------------------------------------------------------
# Context object passed to handlers


class CognitoIdentity(object):
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data=None):
        data = data if isinstance(data, dict) else {}
        self.cognito_identity_id = _pick(data, "cognito_identity_id", "cognitoIdentityId")
        self.cognito_identity_pool_id = _pick(data, "cognito_identity_pool_id", "cognitoIdentityPoolId")

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s, cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id,
            self.cognito_identity_pool_id,
        )


class Client(object):
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, data):
        self.installation_id = _pick(data, "installation_id", "installationId")
        self.app_title = _pick(data, "app_title", "appTitle")
        self.app_version_name = _pick(data, "app_version_name", "appVersionName")
        self.app_version_code = _pick(data, "app_version_code", "appVersionCode")
        self.app_package_name = _pick(data, "app_package_name", "appPackageName")

    def __repr__(self):
        return "Client([%s])" % ", ".join("%s=%s" % (k, getattr(self, k)) for k in self.__slots__)


class ClientContext(object):
    __slots__ = ("client", "custom", "env")

    def __init__(self, data):
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = data.get("custom")
        self.env = data.get("env")

    def __repr__(self):
        return "ClientContext([client=%s, custom=%s, env=%s])" % (self.client, self.custom, self.env)


def _pick(data, *keys):
    for key in keys:
        if key in data:
            return data[key]
    return None


class LambdaContext(object):
    def __init__(self, request_id, deadline_ms, invoked_function_arn, client_context, identity, function):
        self.aws_request_id = request_id
        self.function_name = function["name"]
        self.function_version = function["version"]
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = function["memory"]
        self.log_group_name = function["log_group"]
        self.log_stream_name = function["log_stream"]
        self.identity = CognitoIdentity(identity)
        self.client_context = ClientContext(client_context) if isinstance(client_context, dict) else None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000.0))

    def log(self, msg):
        stream = sys.stdout
        if stream is not None:
            stream.write(_safe_str(msg))
            stream.flush()

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s, log_group_name=%s, log_stream_name=%s, function_name=%s, "
            "memory_limit_in_mb=%s, function_version=%s, invoked_function_arn=%s, client_context=%s, "
            "identity=%s, tenant_id=%s])"
            % (
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
                self.client_context,
                self.identity,
                self.tenant_id,
            )
        )


def _function_info():
    env = os.environ
    return {
        "name": env.get("AWS_LAMBDA_FUNCTION_NAME"),
        "version": env.get("AWS_LAMBDA_FUNCTION_VERSION"),
        "memory": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        "log_group": env.get("AWS_LAMBDA_LOG_GROUP_NAME"),
        "log_stream": env.get("AWS_LAMBDA_LOG_STREAM_NAME"),
    }


# ----------------------------------------------------------------------------------------------------
# Start-up


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _current_request_id
        return True


class _LambdaLogHandler(logging.Handler):
    """Writes each record, Lambda's text format, to whatever sys.stderr is at the time."""

    def emit(self, record):
        try:
            text = self.format(record)
            if not text.endswith("\n"):
                text += "\n"
            stream = sys.stderr
            if stream is not None:
                stream.write(text)
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _JsonFormatter(logging.Formatter):
    """Lambda's JSON log format for application logs (LoggingConfig LogFormat=JSON)."""

    def format(self, record):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs
        out = {"timestamp": stamp, "level": record.levelname, "message": record.getMessage(),
               "logger": record.name, "requestId": getattr(record, "aws_request_id", "") or ""}
        if record.exc_info and record.exc_info[0] is not None:
            out["errorType"] = record.exc_info[0].__name__
            out["errorMessage"] = str(record.exc_info[1])
            out["stackTrace"] = traceback.format_tb(record.exc_info[2])
        return json.dumps(out, default=str)


def _install_logging():
    if os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON":
        formatter = _JsonFormatter()
    else:
        formatter = logging.Formatter(_LOG_FORMAT, _LOG_DATEFMT)
    formatter.converter = time.gmtime
    handler = _LambdaLogHandler()
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = _LOG_LEVELS.get(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "").strip().upper())
    if level is not None:
        root.setLevel(level)


def _fix_sys_path(task_root):
    """The code directory first; the bootstrap's own directory not at all."""
    here = os.path.dirname(os.path.realpath(_own_filename()))
    root_real = os.path.realpath(task_root)
    kept = []
    for entry in sys.path:
        try:
            real = os.path.realpath(entry or os.getcwd())
        except Exception:
            kept.append(entry)
            continue
        if real == here or real == root_real:
            continue
        kept.append(entry)
    sys.path[:] = [task_root] + kept


class _InitError(Exception):
    def __init__(self, error):
        Exception.__init__(self, error["errorType"])
        self.error = error


def _load_handler(handler_name):
    """The handler function named by `module.function`, or _InitError with Lambda's error shapes."""
    try:
        module_name, function_name = handler_name.rsplit(".", 1)
    except ValueError as exc:
        raise _InitError(
            _error("Bad handler '%s': %s" % (handler_name, exc), "Runtime.MalformedHandlerName", "", [])
        )
    import_name = module_name.replace("/", ".")
    if import_name.split(".")[0] in sys.builtin_module_names:
        raise _InitError(
            _error(
                "Cannot use built-in module %s as a handler module" % module_name,
                "Runtime.BuiltInModuleConflict",
                "",
                [],
            )
        )
    import importlib

    try:
        module = importlib.import_module(import_name)
    except ImportError as exc:
        raise _InitError(
            _error(
                "Unable to import module '%s': %s" % (module_name, _safe_str(exc)),
                "Runtime.ImportModuleError",
                "",
                [],
            )
        )
    except SyntaxError as exc:
        trace = '  File "%s" Line %s\n    %s\n' % (exc.filename, exc.lineno, (exc.text or "").strip())
        raise _InitError(
            _error(
                "Syntax error in module '%s': %s" % (module_name, _safe_str(exc)),
                "Runtime.UserCodeSyntaxError",
                "",
                [trace],
            )
        )
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise _InitError(
            _error(
                "Handler '%s' missing on module '%s'" % (function_name, module_name),
                "Runtime.HandlerNotFound",
                "",
                [],
            )
        )


# ----------------------------------------------------------------------------------------------------
# Serving


class _Channel(object):
    def __init__(self, fd_in, fd_out):
        for fd in (fd_in, fd_out):
            os.set_inheritable(fd, False)  # keep the protocol away from the function's own children
        self._reader = os.fdopen(fd_in, "rb")
        self._fd_out = fd_out

    def read(self):
        return self._reader.readline()

    def send_raw(self, data):
        try:
            _write_all(self._fd_out, data)
        except OSError:
            os._exit(1)  # the server is gone

    def send(self, frame):
        self.send_raw(_encode_text(_dumps(frame)) + b"\n")


def _stream(chunks, request_id, channel):
    """Sends what a generator handler yields as it yields it; returns the stream's content type."""
    head = _encode_text('{"t":"chunk","id":%s,"data":"' % _dumps(request_id))
    content_type = None
    sent = False
    try:
        for item in chunks:
            if isinstance(item, (bytes, bytearray, memoryview)):
                data = bytes(item)
            elif isinstance(item, str):
                data = _encode_text(item)
            elif isinstance(item, dict) and content_type is None:
                data = _encode_text(_to_json(item)) + b"\0" * 8
                content_type = _HTTP_INTEGRATION
            else:
                raise TypeError(
                    "A streaming handler yields bytes or str (and first, optionally, a dict with statusCode, "
                    "headers and cookies), not %s" % type(item).__name__
                )
            if content_type is None:
                content_type = _STREAM_CONTENT_TYPE
            for start in range(0, len(data), _CHUNK_BYTES):
                tail = b'"}\n'
                if not sent:
                    tail = b'","content_type":' + _encode_text(_dumps(content_type)) + b"}\n"
                    sent = True
                channel.send_raw(head + binascii.b2a_base64(data[start:start + _CHUNK_BYTES], newline=False) + tail)
    finally:
        chunks.close()
    return content_type


def _invoke(frame, handler, channel, function):
    global _current_request_id
    request_id = frame.get("id")
    request_id = "" if request_id is None else _safe_str(request_id)
    _current_request_id = request_id

    trace_id = frame.get("trace_id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = _safe_str(trace_id)
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)

    deadline = frame.get("deadline_ms")
    try:
        deadline = int(deadline)
    except (TypeError, ValueError):
        deadline = 0
    context = LambdaContext(
        request_id,
        deadline,
        frame.get("arn"),
        frame.get("client_context"),
        frame.get("identity"),
        function,
    )

    payload = None
    error = None
    streamed = None  # the content type of a streamed response
    try:
        result = handler(frame.get("event"), context)
        if isinstance(result, types.GeneratorType):
            streamed = _stream(result, request_id, channel) or _STREAM_CONTENT_TYPE
    except (SystemExit, KeyboardInterrupt) as exc:
        _exit_now(exc)
    except BaseException as exc:
        error = _error_from_exception(exc, request_id)
    else:
        if streamed is None:
            try:
                payload = _encode_text(_to_json(result))
            except Exception as exc:
                message = "Unable to marshal response: %s" % _safe_str(exc)
                error = _error(message, "Runtime.MarshalError", request_id, [])
        result = None

    if error is not None:
        _log_error(error)
    drained = _end_output(request_id)
    # The process's peak resident memory (kB), for REPORT's Max Memory Used: cheaper here than in /proc.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if error is not None:
        channel.send({"t": "error", "id": request_id, "error": error, "rss": rss, "drained": drained})
    elif streamed is not None:
        channel.send({"t": "result", "id": request_id, "streamed": True, "content_type": streamed, "rss": rss,
                      "drained": drained})
    else:
        head = '{"t":"result","id":%s,"rss":%d,"drained":%s,"payload":' % (
            _dumps(request_id), rss, "true" if drained else "false")
        channel.send_raw(_encode_text(head) + payload + b"}\n")


def _serve(channel, handler, function):
    while True:
        line = channel.read()
        if not line:
            return
        line = line.strip()
        if not line:
            continue
        try:
            frame = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            _log_error(_error("Malformed frame from the server ignored", "Runtime.InvalidFrame", "", []))
            continue
        kind = frame.get("t")
        if kind == "invoke":
            _invoke(frame, handler, channel, function)
        elif kind == "shutdown":
            return


def main(started=None):
    if started is None:
        started = _STARTED
    try:
        fd_in = int(os.environ.pop("_FAAS_FD_IN", "") or 3)
        fd_out = int(os.environ.pop("_FAAS_FD_OUT", "") or 4)
        channel = _Channel(fd_in, fd_out)
    except (OSError, ValueError) as exc:
        _write_all(2, _encode_text("faas bootstrap: no server channel: %s\n" % exc))
        os._exit(1)

    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    _fix_sys_path(task_root)
    _install_logging()

    function = _function_info()
    handler_name = os.environ.get("_HANDLER", "")
    try:
        handler = _load_handler(handler_name)
    except _InitError as exc:
        error = exc.error
    except (SystemExit, KeyboardInterrupt) as exc:
        _exit_now(exc)
    except BaseException as exc:
        error = _error_from_exception(exc, "")
    else:
        error = None

    if error is not None:
        _log_error(error)
        _write_sentinel(_INIT_ID)
        channel.send({"t": "init_error", "error": error})
        os._exit(1)

    _write_sentinel(_INIT_ID)
    init_ms = round((time.perf_counter() - started) * 1000.0, 3)
    channel.send({"t": "ready", "init_ms": init_ms})

    _serve(channel, handler, function)
    _flush_std()
    os._exit(0)


if __name__ == "__main__":
    main()
