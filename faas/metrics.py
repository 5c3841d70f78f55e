"""Prometheus metrics of one server, on a registry it owns (several servers in one process stay apart).

The invocation path touches only `FunctionMetrics`: prometheus_client children cached per (function,
version), so recording one invocation is a dictionary lookup and a few increments (about 3 us). Values that
other components already hold (instances, memory, queued async events, stored logs) are read when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                     300.0, 900.0)
_INIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_FN = ("function", "version")


class FunctionMetrics:
    """The series of one function version. `begin()`/`end()` bracket an execution; `invoked()` records
    its outcome; `throttled()` a rejected invocation."""

    __slots__ = ("_m", "_key", "_invocations", "_duration", "_cold", "_init", "_concurrent", "errors", "throttles")

    def __init__(self, m: Metrics, name: str, version: str):
        self._m = m
        self._key = (name, version)
        self._invocations = m.invocations.labels(name, version)
        self._duration = m.duration.labels(name, version)
        self._cold = m.cold_starts.labels(name, version)
        self._init = m.init_duration.labels(name, version)
        self._concurrent = m.concurrent.labels(name, version)
        self.errors: dict[str, Any] = {}  # error type -> child
        self.throttles: dict[str, Any] = {}  # reason -> child

    def begin(self) -> None:
        self._concurrent.inc()

    def end(self) -> None:
        self._concurrent.dec()

    def invoked(self, duration_ms: float, cold: bool, init_ms: float | None, error_type: str | None) -> None:
        self._invocations.inc()
        self._duration.observe(duration_ms / 1000.0)
        if cold:
            self._cold.inc()
            if init_ms is not None:
                self._init.observe(init_ms / 1000.0)
        if error_type is not None:
            child = self.errors.get(error_type)
            if child is None:
                child = self.errors[error_type] = self._m.errors.labels(*self._key, error_type)
            child.inc()

    def throttled(self, reason: str) -> None:
        child = self.throttles.get(reason)
        if child is None:
            child = self.throttles[reason] = self._m.throttles.labels(*self._key, reason)
        child.inc()


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.invocations = Counter("faas_invocations", "Invocations that ran (successful or not).", _FN, registry=r)
        self.errors = Counter("faas_errors", "Invocations that ended in an error, by errorType.",
                              (*_FN, "error_type"), registry=r)
        self.throttles = Counter("faas_throttles", "Invocations rejected for lack of concurrency, by reason.",
                                 (*_FN, "reason"), registry=r)
        self.duration = Histogram("faas_duration_seconds", "Time the function ran per invocation.", _FN,
                                  buckets=_DURATION_BUCKETS, registry=r)
        self.init_duration = Histogram("faas_init_duration_seconds", "Initialisation time of cold starts.", _FN,
                                       buckets=_INIT_BUCKETS, registry=r)
        self.cold_starts = Counter("faas_cold_starts", "Invocations that started a new instance.", _FN, registry=r)
        self.concurrent = Gauge("faas_concurrent_executions", "Invocations running now.", _FN, registry=r)
        self.instances = Gauge("faas_instances", "Worker instances alive (busy, idle or provisioned).", registry=r)
        self.memory_in_use = Gauge("faas_memory_reserved_bytes", "Memory reserved by live instances.", registry=r)
        self.memory_budget = Gauge("faas_memory_budget_bytes", "Memory all instances together may reserve.",
                                   registry=r)
        self.async_depth = Gauge("faas_async_queue_depth", "Asynchronous events waiting, per function.",
                                 ("function",), registry=r)
        self.async_age = Gauge("faas_async_oldest_event_age_seconds", "Age of the oldest queued event.",
                               ("function",), registry=r)
        self._functions: dict[tuple[str, str], FunctionMetrics] = {}
        self._async_depth: Callable[[], Awaitable[list[dict]]] | None = None

    def function(self, name: str, version: str) -> FunctionMetrics:
        fm = self._functions.get((name, version))
        if fm is None:
            fm = self._functions[(name, version)] = FunctionMetrics(self, name, version)
        return fm

    def forget(self, name: str) -> None:
        """Drop a deleted function's series."""
        for key in [k for k in self._functions if k[0] == name]:
            fm = self._functions.pop(key)
            for metric in (self.invocations, self.duration, self.init_duration, self.cold_starts, self.concurrent):
                metric.remove(*key)
            for error_type in fm.errors:
                self.errors.remove(*key, error_type)
            for reason in fm.throttles:
                self.throttles.remove(*key, reason)

    # -- read at scrape time ----------------------------------------------------------------------------

    def watch_pools(self, pools: Any) -> None:
        """`pools`: faas.runtime.pool.Pools (instance_count(), memory_in_use_mb, limits.memory_budget_mb)."""
        self.instances.set_function(lambda: pools.instance_count())
        self.memory_in_use.set_function(lambda: pools.memory_in_use_mb * 1048576)
        self.memory_budget.set_function(lambda: pools.limits.memory_budget_mb * 1048576)

    def watch_logs(self, logs: Any) -> None:
        """`logs`: faas.store.logstore.LogStore (stored_bytes, dropped)."""
        self.registry.register(_LogCollector(logs))

    def watch_async(self, depth: Callable[[], Awaitable[list[dict]]]) -> None:
        """`depth`: AsyncEvents.depth, rows of function, queued and oldest_enqueued_at (epoch seconds)."""
        self._async_depth = depth

    async def refresh(self, now: float) -> None:
        if self._async_depth is None:
            return
        rows = await self._async_depth()
        self.async_depth.clear()
        self.async_age.clear()
        for row in rows:
            self.async_depth.labels(row["function"]).set(row["queued"])
            self.async_age.labels(row["function"]).set(max(0.0, now - row["oldest_enqueued_at"]))

    async def handle(self, request: web.Request) -> web.Response:
        """`GET /metrics` in Prometheus's text format."""
        await self.refresh(time.time())
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})



class _LogCollector(Collector):
    def __init__(self, logs: Any):
        self.logs = logs

    def collect(self) -> list[Metric]:
        stored = GaugeMetricFamily("faas_log_stored_bytes", "Bytes of invocation logs stored (as CloudWatch counts).")
        stored.add_metric([], self.logs.stored_bytes)
        dropped = CounterMetricFamily("faas_log_records_dropped", "Invocation logs dropped: the log writer was behind.")
        dropped.add_metric([], self.logs.dropped)
        return [stored, dropped]
