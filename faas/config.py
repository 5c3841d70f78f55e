"""One `Config`, read from TOML, then `FAAS_*` environment variables, then command-line flags.

`config.example.toml` documents every key. Nested tables map to nested structs; an environment
variable names a key by its path, e.g. `FAAS_SERVER__PORT=9100` or `FAAS_LIMITS__SYNC_PAYLOAD_BYTES=...`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 9000
    data_dir: str = "./.faas"
    # The URL functions and clients use to reach this server (Code.Location, AWS_ENDPOINT_URL inside
    # functions). Empty means http://<host>:<port>.
    public_url: str = ""
    shutdown_timeout: float = 10.0
    # Plain Invoke requests are parsed and answered by faas's own HTTP front (faas.api.front) until a
    # connection sends anything else, when aiohttp takes it over; false: aiohttp serves every request.
    invoke_front: bool = True
    # Seconds an idle keep-alive connection stays open (aiohttp's default).
    keepalive_timeout: float = 75.0


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True):
    region: str = "us-east-1"
    account_id: str = "000000000000"
    concurrent_executions: int = 1000
    # AWS keeps this many executions unreserved; PutFunctionConcurrency may not go below it.
    minimum_unreserved: int = 100
    # Memory all instances together may reserve (each reserves its MemorySize). 0: 75% of this machine's RAM.
    memory_budget_mb: int = 0


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True):
    code_size_zipped: int = 52428800
    code_size_unzipped: int = 262144000
    total_code_size: int = 80530636800
    create_request_bytes: int = 70167211
    sync_payload_bytes: int = 6291456
    async_payload_bytes: int = 1048576
    response_payload_bytes: int = 6291556
    # A response streamed by InvokeWithResponseStream or a RESPONSE_STREAM function URL (Lambda: 20 MiB).
    stream_response_bytes: int = 20971520


class RuntimeConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Seconds an idle instance is kept warm before it is stopped.
    idle_timeout: float = 600.0
    # How often the idle reaper looks for instances to stop.
    reap_interval: float = 5.0
    # Seconds after which an instance is recycled between invocations.
    max_lifetime: float = 14400.0
    # Freeze idle instances (SIGSTOP on their process group) as Lambda freezes execution environments ...
    freeze: bool = True
    # ... once they have been idle this many seconds (back-to-back invocations then cost no signals).
    freeze_after: float = 0.05
    # Short functions (twice their quickest duration fits in this many seconds): an invocation that finds every
    # instance busy waits twice that duration for one to come free before a new one starts, and longer (up to
    # ten times this) while instances still come free but the machine is the limit (the server is behind, or
    # invocations are stretched far past the quickest); 0 starts one at once, as Lambda does.
    queue_wait: float = 0.02
    # How fast one function adds instances: a burst of this many at once, then scale_rate per second.
    scale_burst: int = 1000
    scale_rate: float = 100.0
    # Cold starts one function may have in progress at once (a short one, see queue_wait: one); more invocations
    # wait for one of those (or for a busy instance to come free), so a backlog does not become a storm of starts.
    max_starting: int = 8
    # Seconds between passes that keep provisioned concurrency at the requested number of instances.
    provision_interval: float = 1.0
    # Interpreter per runtime identifier, e.g. {"python3.12" = "/usr/bin/python3.12"}. Runtimes not listed
    # are found on PATH (python3.12 -> `python3.12`); when none is found the server's own interpreter serves
    # the runtime if `python_fallback` is true.
    interpreters: dict[str, str] = {}
    python_fallback: bool = True
    # Seconds a worker may take to start and run its module-level code before the invocation fails.
    init_timeout: float = 10.0
    # Enforce MemorySize with a memory cgroup per instance (v2 or v1, where this process may create them); a
    # function that exceeds it is killed and reported as Runtime.OutOfMemory.
    memory_limits: bool = True
    # "none", or "bwrap": each instance in its own namespaces (bubblewrap), code read-only at /var/task,
    # layers at /opt, a private /tmp sized by EphemeralStorage, no view of the data dir.
    sandbox: str = "none"
    # With the sandbox: false gives functions no network (custom runtimes keep loopback to their Runtime API).
    network: bool = True
    # How Python workers start: "fork" them from a zygote, one per interpreter, that has the bootstrap imported
    # (cold starts in milliseconds), or "exec" a fresh interpreter each time. Sandboxed, non-Python and custom
    # runtime workers are always exec'd.
    spawner: Literal["fork", "exec"] = "fork"
    # Run instances under SCHED_BATCH: an instance woken by its invocation does not preempt the server's event
    # loop, which then dispatches in batches (much higher warm throughput on a small machine). Their CPU share
    # is unchanged; false leaves them under the default policy.
    batch_scheduling: bool = True


def memory_total_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


class AsyncConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Seconds before the 2nd and 3rd attempts of a failed asynchronous invocation (Lambda: about 1 and 2 min).
    retry_delays: list[float] = msgspec.field(default_factory=lambda: [60.0, 120.0])
    # After a throttle or a system error: the first retry delay, doubling up to the maximum.
    throttle_backoff: float = 1.0
    throttle_backoff_max: float = 300.0
    # Events in flight at once, and how many of them one function may hold.
    workers: int = 64
    per_function: int = 16
    # Multiplies MaximumEventAgeInSeconds (60-21600 s); tests set it below 1 to see events expire quickly.
    age_scale: float = 1.0


class MappingsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Seconds a queue poller long-polls, or a stream poller waits, when there is nothing to read.
    idle_poll: float = 1.0
    # Before a failed stream batch is tried again (doubling up to 30 s).
    retry_delay: float = 1.0
    # How often queue pollers are added or removed with the backlog.
    scale_interval: float = 1.0


class StreamsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Seconds a new stream stays CREATING before it turns ACTIVE (AWS takes about half a minute; 0: at once).
    creating_delay: float = 0.0
    # Seconds between passes that delete records older than their stream's retention period.
    trim_interval: float = 60.0
    # Seconds in one hour of RetentionPeriodHours; tests shorten it so records expire in seconds.
    retention_hour_seconds: float = 3600.0
    # Seconds a shard iterator stays valid (GetRecords then answers ExpiredIteratorException).
    iterator_ttl: float = 300.0
    # Shards all streams of the account may hold together (CreateStream beyond it: LimitExceededException).
    shard_limit: int = 500


class AutoscalingConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Seconds between passes that apply scaling policies and scheduled actions (AWS works on 1-minute metrics).
    interval: float = 60.0
    # Seconds between samples of provisioned concurrency utilization (busy / allocated provisioned instances).
    sample_interval: float = 1.0
    # Seconds of samples a target tracking decision averages; a decision waits for a full window after a change.
    window: float = 60.0


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Real seconds in one schedule minute: rate() and cron() schedules run on a clock 60/minute_seconds times as
    # fast as real time. Tests shorten it (0.5 fires a rate(1 minute) rule every half second).
    minute_seconds: float = 60.0
    # Longest the scheduler sleeps between passes; it also wakes at each rule's next tick and on rule changes.
    schedule_tick: float = 60.0
    # A failed delivery to a target is retried after retry_delay seconds, doubling up to retry_delay_max.
    retry_delay: float = 1.0
    retry_delay_max: float = 300.0
    # Deliveries handed to targets at once, and how many one pass of the outbox takes.
    delivery_workers: int = 32
    delivery_batch: int = 256
    # false leaves accepted deliveries in the outbox (SQLite) until a server with dispatch on starts.
    dispatch: bool = True


class QueuesConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Seconds between passes that delete queue messages past their retention period and expired FIFO
    # deduplication ids (receives never return expired messages, swept or not).
    sweep_interval: float = 60.0
    # The smallest MessageRetentionPeriod a queue accepts (SQS: 60 seconds).
    min_retention_period: int = 60
    # FIFO queues drop a message whose deduplication id was seen this many seconds before (SQS: 5 minutes).
    deduplication_window: float = 300.0
    # Seconds after a PurgeQueue before the same queue accepts another (SQS: 60).
    purge_interval: float = 60.0


class SnsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Deliveries to Lambda and SQS subscribers that fail server-side are retried as SNS does for AWS-managed
    # endpoints: 3 immediate retries, 2 after retry_min_delay, 10 backing off exponentially to retry_max_delay,
    # then every retry_max_delay until max_attempts in all (SNS: 100015, about 23 days); then the subscription's
    # dead-letter queue, if it has one. Client-side failures (no such function or queue) are not retried.
    retry_min_delay: float = 1.0
    retry_max_delay: float = 20.0
    max_attempts: int = 100015
    # FIFO topics: seconds a message deduplication id is remembered (SNS: 5 minutes).
    deduplication_window: float = 300.0
    # false leaves published messages in the outbox (SQLite) until a server with dispatch on starts.
    dispatch: bool = True


class LogsConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Days a log group keeps events when it has no retention policy (PutRetentionPolicy); 0: until the size cap.
    retention_days: int = 0
    # All stored events together (message bytes + 26 per event, as CloudWatch counts); the oldest go first.
    max_bytes: int = 1073741824
    # Logs are written in batches: every flush_interval seconds, or sooner when flush_records are waiting (each
    # commit costs the writer a round of page writes, so larger batches cost less per invocation; reads write
    # what is buffered first, so they always see every log recorded before them).
    flush_interval: float = 0.2
    flush_records: int = 4096
    # How often retention and the size cap are enforced.
    maintenance_interval: float = 60.0
    # Seconds in a retention day; tests set it small to see events expire.
    day_seconds: float = 86400.0
    # Where the store's database work runs: "process" (a child process, `faas.store.log_child`: turning logs
    # into rows never takes the GIL from the event loop) or "thread" (one process less: ~13 MB PSS less).
    writer: Literal["process", "thread"] = "process"


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True):
    # Traces of invocations (TracingConfig Mode=Active, or a caller's sampled X-Amzn-Trace-Id) as OpenTelemetry
    # spans. An OTLP/HTTP collector's base URL (spans go to <url>/v1/traces); "" sends none.
    otlp_endpoint: str = ""
    # A file that receives the same OTLP/JSON, one export request a line; relative to the data dir; "": none.
    file: str = ""
    # Seconds finished spans wait before they are exported in one batch (sooner when a batch is full).
    batch_interval: float = 1.0


class Config(msgspec.Struct, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    account: AccountConfig = msgspec.field(default_factory=AccountConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    async_: AsyncConfig = msgspec.field(default_factory=AsyncConfig, name="async")
    mappings: MappingsConfig = msgspec.field(default_factory=MappingsConfig)
    logs: LogsConfig = msgspec.field(default_factory=LogsConfig)
    streams: StreamsConfig = msgspec.field(default_factory=StreamsConfig)
    autoscaling: AutoscalingConfig = msgspec.field(default_factory=AutoscalingConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    queues: QueuesConfig = msgspec.field(default_factory=QueuesConfig)
    sns: SnsConfig = msgspec.field(default_factory=SnsConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir).resolve()

    @property
    def memory_budget_mb(self) -> int:
        return self.account.memory_budget_mb or memory_total_mb() * 3 // 4

    @property
    def base_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("FAAS_") or "__" not in key:
            continue
        path = key[len("FAAS_"):].lower().split("__")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        _set_path(tree, path, value)
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the config: TOML file < FAAS_* environment < explicit overrides (command-line flags)."""
    tree: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            tree = tomllib.load(fh)
    tree = _merge(tree, _env_overrides(dict(os.environ if environ is None else environ)))
    if overrides:
        tree = _merge(tree, overrides)
    try:
        return msgspec.convert(tree, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"faas: invalid configuration: {exc}") from None
