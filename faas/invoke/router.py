"""The one path every invocation takes: resolve name and qualifier to a version, take an instance, run it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from faas.arn import LATEST, Arns
from faas.config import Config
from faas.errors import (
    ResourceConflictException,
    TooManyRequestsException,
    function_not_found,
)
from faas.logs import invocation_log
from faas.metrics import FunctionMetrics, Metrics
from faas.runtime.instance import InitFailure, Instance, InstanceSpec, Outcome
from faas.runtime.pool import PoolKey, Pools, Throttled, log_stream_name
from faas.runtime.protocol import InvokeFrame, single_line
from faas.runtime.environment import Paths, function_environment
from faas.runtime.sandbox import OPT_ROOT, RUNTIME_ROOT, TASK_ROOT, Sandbox
from faas.runtime.spawner import WORKER_DIR, Interpreter, Interpreters, RuntimeUnavailable
from faas.store.code import CodeStore
from faas.store.layers import assemble_opt
from faas.store.logstore import LogStore
from faas.store.aliases import Alias
from faas.store.records import FunctionVersion
from faas.store.registry import Registry
from faas.tracing import Trace, Tracer


_GOLDEN = 0.6180339887498949
_PREPARED_CACHE = 1024


@dataclass(frozen=True)
class Prepared:
    key: PoolKey
    spec: InstanceSpec
    env: dict[str, str]
    interpreter: Interpreter


class InvokeRequest(msgspec.Struct):
    function_name: str
    qualifier: str | None
    payload: bytes
    request_id: str
    client_context: bytes | None = None  # JSON text
    trace_id: str | None = None


class InvokeResult(msgspec.Struct):
    payload: bytes
    executed_version: str
    function_error: str | None  # "Unhandled" for every function error, as Lambda reports it
    error_type: str | None
    log: bytes
    duration_ms: float
    cold: bool
    # A handler that streamed its response: the stream's content type, and whether its bytes went to
    # `on_chunk` (then `payload` is empty, or the error that ended the stream).
    content_type: str | None = None
    streamed: bool = False


# A streaming invocation's bytes as the function writes them: (data, stream content type, executed version).
StreamCallback = Callable[[bytes, str | None, str], Awaitable[None]]


def _prepared_key(fv: FunctionVersion, initialization: str) -> tuple[str, str, str, str]:
    """What `Router.prepare` caches by: the revision id changes with every update."""
    return fv.function_name, fv.version, fv.revision_id, initialization


class Router:
    def __init__(
        self, config: Config, arns: Arns, registry: Registry, code: CodeStore, pools: Pools,
        interpreters: Interpreters, sandbox: Sandbox | None = None, *, logs: LogStore | None = None,
        metrics: Metrics | None = None, tracer: Tracer | None = None,
    ):
        self.config = config
        self.arns = arns
        self.registry = registry
        self.code = code
        self.pools = pools
        self.interpreters = interpreters
        self.sandbox = sandbox or Sandbox()
        self.logs = logs
        self.metrics = metrics if metrics is not None else Metrics()
        self.tracer = tracer if tracer is not None else Tracer(None)
        self.work_dir = config.data_path / "instances"
        self._spins: dict[tuple[str, str], int] = {}
        self._prepared: dict[tuple[str, str, str, str], Prepared] = {}

    async def resolve(self, name: str, qualifier: str | None, *, weighted: bool = False) -> FunctionVersion:
        """The version a name and qualifier stand for. An alias resolves to its version; with `weighted`,
        to the version its routing weights pick for this call."""
        q = qualifier or LATEST
        version = q
        if q != LATEST and not q.isdigit():
            alias = await self.registry.aliases.get(name, q)
            if alias is None:
                raise function_not_found(self.arns.function(name, q))
            version = self._pick(alias) if weighted else alias.function_version
        found = await self.registry.get_version(name, version)
        if found is None:
            raise function_not_found(self.arns.function(name, q))
        return found

    def _cached_version(self, name: str, qualifier: str | None) -> FunctionVersion | None:
        """`resolve`'s answer when it needs nothing awaited: a version (not an alias) already cached. None: ask
        `resolve`."""
        if qualifier and qualifier != LATEST and not qualifier.isdigit():
            return None
        return self.registry.cached_version(name, qualifier or LATEST)

    def _pick(self, alias: Alias) -> str:
        """Split traffic by the alias's weights. A golden-ratio sequence rather than random draws: any run of
        n calls sends weight*n of them (within one or two) to the extra version."""
        if not alias.routing:
            return alias.function_version
        (extra, weight), = alias.routing.items()
        key = (alias.function_name, alias.name)
        n = self._spins[key] = self._spins.get(key, 0) + 1
        return extra if (n * _GOLDEN) % 1.0 < weight else alias.function_version

    async def invoke(self, req: InvokeRequest, on_chunk: StreamCallback | None = None) -> InvokeResult:
        """Run one invocation. With `on_chunk`, a streaming handler's response goes there as it is written
        (custom runtimes answer whole: their response comes back in the result, as any other handler's)."""
        fv = self._cached_version(req.function_name, req.qualifier) \
            or await self.resolve(req.function_name, req.qualifier, weighted=True)
        if fv.state != "Active":
            raise ResourceConflictException(
                "The operation cannot be performed at this time. "
                f"The function is currently in the following state: {fv.state}"
            )
        cfg = fv.config
        prepared = self._prepared.get(_prepared_key(fv, "on-demand")) or await self.prepare(fv)
        key, spec, env, interpreter = prepared.key, prepared.spec, prepared.env, prepared.interpreter
        invoked_arn = self.arns.function(fv.function_name, req.qualifier)
        fm = self.metrics.function(fv.function_name, fv.version)
        trace = self.tracer.begin(cfg.tracing_mode, req.trace_id)
        started = time.perf_counter()
        try:
            found = self.pools.take_idle(key, req.qualifier)
            instance, cold = (found, False) if found is not None else \
                await self.pools.acquire(key, spec, env, req.qualifier)
        except Throttled as exc:
            fm.throttled(exc.reason)
            raise TooManyRequestsException("Rate Exceeded.", Reason=exc.reason) from None
        except InitFailure as failure:
            result = self._init_failed(req, fv, failure, (time.perf_counter() - started) * 1000)
            self._observe(fv, fm, result, log_stream_name(fv.version), failure.init_ms)
            if trace is not None:
                self._trace(trace, fv, req, invoked_arn, result, failure.init_ms)
            return result
        if trace is not None:
            trace.acquired()
        frame = InvokeFrame(
            id=req.request_id,
            deadline_ms=int(time.time() * 1000) + cfg.timeout * 1000,
            arn=invoked_arn,
            event=msgspec.Raw(single_line(req.payload) if req.payload else b"{}"),
            trace_id=trace.header if trace is not None else req.trace_id,
            client_context=msgspec.Raw(single_line(req.client_context) if req.client_context else b"null"),
        )
        outcome: Outcome | None = None
        fm.begin()
        if trace is not None:
            trace.invoking()
        try:
            if on_chunk is None or spec.protocol != "jsonl":
                outcome = await instance.invoke(frame, float(cfg.timeout))
            else:
                version = fv.version

                async def forward(data: bytes, content_type: str | None) -> None:
                    await on_chunk(data, content_type, version)

                outcome = await instance.invoke(frame, float(cfg.timeout), forward)
            if trace is not None:
                trace.invoked()
            if outcome.error_type == "Runtime.ExitError" and self.pools.out_of_memory(instance):
                outcome.error_type = "Runtime.OutOfMemory"
                outcome.payload = msgspec.json.encode({
                    "errorType": "Runtime.OutOfMemory",
                    "errorMessage": f"RequestId: {req.request_id} Error: Runtime exited with error: signal: killed",
                })
        finally:
            fm.end()
            if not self.pools.put_back(key, instance, outcome is not None and outcome.reusable):
                await self.pools.stop(instance)
        payload, error_type = outcome.payload, outcome.error_type
        if error_type is None and len(payload) > self.config.limits.response_payload_bytes:
            limit = self.config.limits.response_payload_bytes
            error_type = "Function.ResponseSizeTooLarge"
            payload = msgspec.json.encode({
                "errorMessage": f"Response payload size exceeded maximum allowed payload size ({limit} bytes).",
                "errorType": error_type,
            })
        log = invocation_log(
            req.request_id, fv.version, outcome.output,
            duration_ms=outcome.duration_ms, memory_mb=cfg.memory_size,
            max_memory_used_mb=outcome.max_memory_mb,
            init_ms=instance.init_ms if cold else None,
            init_output=self._init_start(fv, interpreter) + instance.init_output if cold else b"",
            timed_out_after=float(cfg.timeout) if outcome.timed_out else None,
            status_error=error_type if error_type and error_type.startswith(("Runtime.", "Sandbox.")) else None,
            json_format=cfg.logging.log_format == "JSON", system_level=cfg.logging.system_log_level,
        )
        result = InvokeResult(
            payload=payload, executed_version=fv.version,
            function_error="Unhandled" if error_type else None, error_type=error_type,
            log=log, duration_ms=outcome.duration_ms, cold=cold,
            content_type=outcome.content_type, streamed=outcome.streamed,
        )
        self._observe(fv, fm, result, instance.log_stream, instance.init_ms if cold else None)
        if trace is not None:
            self._trace(trace, fv, req, invoked_arn, result, instance.init_ms if cold else None)
        return result

    def _trace(self, trace: Trace, fv: FunctionVersion, req: InvokeRequest, arn: str, result: InvokeResult,
               init_ms: float | None) -> None:
        self.tracer.finish(
            trace, function=fv.function_name, version=fv.version, arn=arn, request_id=req.request_id,
            cold=result.cold, init_ms=init_ms, error_type=result.error_type,
        )

    def _observe(self, fv: FunctionVersion, fm: FunctionMetrics, result: InvokeResult, stream: str,
                 init_ms: float | None) -> None:
        """Metrics and the log sink: a few microseconds, nothing awaited."""
        fm.invoked(result.duration_ms, result.cold, init_ms, result.error_type)
        if self.logs is not None:
            group = fv.config.logging.log_group or f"/aws/lambda/{fv.function_name}"
            self.logs.record(fv.function_name, group, stream, result.log, time.time())

    def record_init(self, fv: FunctionVersion, interpreter: Interpreter, instance: Instance) -> None:
        """A provisioned instance's initialisation as Lambda logs it, in the instance's own log stream ahead of
        its invocations: INIT_START and what the function's module-level code printed. (A cold start's goes
        into its first invocation's log instead, and provisioned instances' invocations report no init.)"""
        if self.logs is not None:
            group = fv.config.logging.log_group or f"/aws/lambda/{fv.function_name}"
            text = self._init_start(fv, interpreter) + instance.init_output
            self.logs.record(fv.function_name, group, instance.log_stream, text, time.time())

    async def prepare(self, fv: FunctionVersion, initialization: str = "on-demand") -> Prepared:
        """How instances of a version start: pool key, spec and environment. Cached: the key includes the
        revision id, so an update makes a new entry and the warm path does no work here."""
        cache_key = _prepared_key(fv, initialization)
        prepared = self._prepared.get(cache_key)
        if prepared is not None:
            return prepared
        cfg = fv.config
        try:
            interpreter = await self.interpreters.resolve(cfg.runtime or "")
        except RuntimeUnavailable as exc:
            raise ResourceConflictException(str(exc)) from None
        code_dir = str(self.code.tree(fv.code_sha256))
        opt_dir = await self.opt_dir(fv)
        sandbox = self.sandbox
        if sandbox.enabled:
            paths = Paths(TASK_ROOT, RUNTIME_ROOT, OPT_ROOT if opt_dir else "")
        else:
            paths = Paths(code_dir, str(WORKER_DIR), opt_dir)
        command, protocol = interpreter.command(code_dir, opt_dir, paths.task_root, paths.opt_root, paths.runtime_dir)
        if sandbox.enabled:
            command = sandbox.prefix(
                code_dir=code_dir, opt_dir=opt_dir, runtime_dir=str(WORKER_DIR), program_roots=[interpreter.root],
                tmp_bytes=cfg.ephemeral_storage * 1024 * 1024,
                # A custom runtime reaches its Runtime API over loopback, so it keeps the network.
                network=sandbox.network or protocol == "runtime-api",
            ) + command
        spec = InstanceSpec(
            function_name=fv.function_name,
            version=fv.version,
            runtime=cfg.runtime or "",
            handler=cfg.handler or "",
            code_dir=code_dir,
            memory_mb=cfg.memory_size,
            timeout_s=cfg.timeout,
            command=command,
            protocol=protocol,
            opt_dir=opt_dir,
            sandboxed=sandbox.enabled,
            tmp_mb=cfg.ephemeral_storage if sandbox.enabled else 0,
            work_dir=str(self.work_dir),
            init_timeout_s=self.config.runtime.init_timeout,
            max_frame_bytes=self.config.limits.response_payload_bytes * 2 + 1024,
            max_stream_bytes=self.config.limits.stream_response_bytes,
        )
        key = (fv.function_name, fv.version, fv.revision_id)
        env = function_environment(
            fv, interpreter, paths, region=self.config.account.region, endpoint_url=self.config.base_url
        )
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = initialization
        if len(self._prepared) >= _PREPARED_CACHE:
            self._prepared.pop(next(iter(self._prepared)))
        prepared = self._prepared[cache_key] = Prepared(key, spec, env, interpreter)
        return prepared

    async def opt_dir(self, fv: FunctionVersion) -> str:
        """The merged layers of a version (its /opt), "" when it has none."""
        if not fv.config.layers:
            return ""
        opt = await assemble_opt(self.code, self.config.data_path / "opt", [r.sha256 for r in fv.config.layers])
        return str(opt)

    def _init_start(self, fv: FunctionVersion, interpreter: Interpreter) -> bytes:
        """Lambda's INIT_START line, naming the interpreter that serves the runtime."""
        runtime = fv.config.runtime or ""
        return (
            f"INIT_START Runtime Version: {interpreter.family}:{interpreter.version or runtime}\t"
            f"Runtime Version ARN: {self.arns.runtime_version(runtime)}\tInterpreter: {interpreter.path}\n"
        ).encode()

    def _init_failed(self, req: InvokeRequest, fv: FunctionVersion, failure: InitFailure, ms: float) -> InvokeResult:
        error = dict(failure.error)
        if isinstance(error.get("errorMessage"), str):
            error["errorMessage"] = error["errorMessage"].replace("{id}", req.request_id)
        error_type = str(error.get("errorType") or "Runtime.Unknown")
        log = invocation_log(
            req.request_id, fv.version, failure.output, duration_ms=ms, memory_mb=fv.config.memory_size,
            max_memory_used_mb=0, init_ms=failure.init_ms, status_error=error_type,
        )
        return InvokeResult(
            payload=msgspec.json.encode(error), executed_version=fv.version, function_error="Unhandled",
            error_type=error_type, log=log, duration_ms=ms, cold=True,
        )
