"""Prometheus metrics of one server, on a registry it owns (several servers in one process stay apart).

The invocation path touches only `FunctionMetrics`, one per (function, version): plain ints, floats and lists
of per-bucket counts, written without locks because only the event-loop thread writes them (`begin()`, `end()`
and `invoked()` together take about 0.3 us, half of it the calls themselves). `_FunctionCollector` turns them
into counter, gauge and histogram families when scraped, with the names, labels, buckets, help text and
`_created` series that prometheus_client's own Counter, Gauge and Histogram would give them. Values that other
components already hold (instances, memory, queued async events, stored logs) are read when scraped too.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import prometheus_client.metrics
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                     300.0, 900.0)
_INIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# `le` label values, as prometheus_client's Histogram writes them; the last bucket counts what exceeds them all.
_DURATION_LE = (*map(floatToGoString, _DURATION_BUCKETS), "+Inf")
_INIT_LE = (*map(floatToGoString, _INIT_BUCKETS), "+Inf")
_FN = ("function", "version")


class FunctionMetrics:
    """The series of one function version. `begin()`/`end()` bracket an execution; `invoked()` records
    its outcome; `throttled()` a rejected invocation.

    Observations go to `duration_counts[i]`, the number of durations in (bound[i-1], bound[i]] (the last
    entry: above every bound), as prometheus_client's Histogram counts them; they are made cumulative when
    scraped. The number of invocations is their total. `created` and `*_created` are when a series appeared."""

    __slots__ = ("key", "created", "running", "cold_starts", "duration_counts", "duration_sum", "init_counts",
                 "init_sum", "errors", "errors_created", "throttles", "throttles_created")

    def __init__(self, name: str, version: str):
        self.key = (name, version)
        self.created = time.time()
        self.running = 0
        self.cold_starts = 0
        self.duration_counts = [0] * len(_DURATION_LE)
        self.duration_sum = 0.0
        self.init_counts = [0] * len(_INIT_LE)
        self.init_sum = 0.0
        self.errors: dict[str, int] = {}  # error type -> invocations
        self.errors_created: dict[str, float] = {}
        self.throttles: dict[str, int] = {}  # reason -> rejected invocations
        self.throttles_created: dict[str, float] = {}

    @property
    def invocations(self) -> int:
        return sum(self.duration_counts)

    def begin(self) -> None:
        self.running += 1

    def end(self) -> None:
        self.running -= 1

    def invoked(self, duration_ms: float, cold: bool, init_ms: float | None, error_type: str | None) -> None:
        seconds = duration_ms / 1000.0
        # bisect_left: the first bound >= seconds, the bucket Histogram.observe() picks.
        self.duration_counts[bisect_left(_DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        if cold:
            self.cold_starts += 1
            if init_ms is not None:
                seconds = init_ms / 1000.0
                self.init_counts[bisect_left(_INIT_BUCKETS, seconds)] += 1
                self.init_sum += seconds
        if error_type is not None:
            n = self.errors.get(error_type)
            if n is None:
                self.errors_created[error_type] = time.time()
                n = 0
            self.errors[error_type] = n + 1

    def throttled(self, reason: str) -> None:
        n = self.throttles.get(reason)
        if n is None:
            self.throttles_created[reason] = time.time()
            n = 0
        self.throttles[reason] = n + 1


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self._functions: dict[tuple[str, str], FunctionMetrics] = {}
        # Registered first: the per-function families come first in /metrics, as they always have.
        r.register(_FunctionCollector(self._functions))
        self.instances = Gauge("faas_instances", "Worker instances alive (busy, idle or provisioned).", registry=r)
        self.memory_in_use = Gauge("faas_memory_reserved_bytes", "Memory reserved by live instances.", registry=r)
        self.memory_budget = Gauge("faas_memory_budget_bytes", "Memory all instances together may reserve.",
                                   registry=r)
        self.async_depth = Gauge("faas_async_queue_depth", "Asynchronous events waiting, per function.",
                                 ("function",), registry=r)
        self.async_age = Gauge("faas_async_oldest_event_age_seconds", "Age of the oldest queued event.",
                               ("function",), registry=r)
        self._async_depth: Callable[[], Awaitable[list[dict]]] | None = None
        # The invoke front (faas.api.front): requests it answered, connections it handed to aiohttp.
        self.front_requests = 0
        self.front_handovers = 0
        r.register(_FrontCollector(self))

    def function(self, name: str, version: str) -> FunctionMetrics:
        fm = self._functions.get((name, version))
        if fm is None:
            fm = self._functions[(name, version)] = FunctionMetrics(name, version)
        return fm

    def forget(self, name: str) -> None:
        """Drop a deleted function's series. An invocation still running records into a detached
        `FunctionMetrics` that is no longer scraped."""
        for key in [k for k in self._functions if k[0] == name]:
            del self._functions[key]

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


class _FrontCollector(Collector):
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        requests = CounterMetricFamily("faas_invoke_front_requests", "Invoke requests answered by the invoke front.")
        requests.add_metric((), float(self.metrics.front_requests))
        handovers = CounterMetricFamily("faas_invoke_front_handovers",
                                        "Connections the invoke front handed to aiohttp (a request it does not take).")
        handovers.add_metric((), float(self.metrics.front_handovers))
        return [requests, handovers]


class _FunctionCollector(Collector):
    """The families of every `FunctionMetrics`, built when scraped (on the event-loop thread, like the
    writes, so no update is seen half-done)."""

    def __init__(self, functions: dict[tuple[str, str], FunctionMetrics]):
        self.functions = functions

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, CounterMetricFamily, CounterMetricFamily, HistogramMetricFamily,
                             HistogramMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily("faas_invocations", "Invocations that ran (successful or not).", labels=_FN),
            CounterMetricFamily("faas_errors", "Invocations that ended in an error, by errorType.",
                                labels=(*_FN, "error_type")),
            CounterMetricFamily("faas_throttles", "Invocations rejected for lack of concurrency, by reason.",
                                labels=(*_FN, "reason")),
            HistogramMetricFamily("faas_duration_seconds", "Time the function ran per invocation.", labels=_FN),
            HistogramMetricFamily("faas_init_duration_seconds", "Initialisation time of cold starts.", labels=_FN),
            CounterMetricFamily("faas_cold_starts", "Invocations that started a new instance.", labels=_FN),
            GaugeMetricFamily("faas_concurrent_executions", "Invocations running now.", labels=_FN),
        )

    def describe(self) -> list[Metric]:
        # The names let the registry refuse a clashing metric and answer get_sample_value().
        return list(self._families())

    def collect(self) -> list[Metric]:
        families = self._families()
        invocations, errors, throttles, duration, init_duration, cold_starts, concurrent = families
        # As prometheus_client's own metrics: no `_created` series with PROMETHEUS_DISABLE_CREATED_SERIES set
        # or after disable_created_metrics().
        with_created = getattr(prometheus_client.metrics, "_use_created", True)
        for fm in list(self.functions.values()):
            key = fm.key
            created = fm.created if with_created else None
            invocations.add_metric(key, float(sum(fm.duration_counts)), created)
            for error_type, n in list(fm.errors.items()):
                errors.add_metric((*key, error_type), float(n),
                                  fm.errors_created[error_type] if with_created else None)
            for reason, n in list(fm.throttles.items()):
                throttles.add_metric((*key, reason), float(n),
                                     fm.throttles_created[reason] if with_created else None)
            _add_histogram(duration, key, _DURATION_LE, fm.duration_counts, fm.duration_sum, created)
            _add_histogram(init_duration, key, _INIT_LE, fm.init_counts, fm.init_sum, created)
            cold_starts.add_metric(key, float(fm.cold_starts), created)
            concurrent.add_metric(key, float(fm.running))
        return list(families)


def _add_histogram(family: HistogramMetricFamily, key: Sequence[str], le: Iterable[str], counts: list[int],
                   total: float, created: float | None) -> None:
    cumulative, acc = [], 0.0
    for bound, n in zip(le, counts):
        acc += n
        cumulative.append((bound, acc))
    family.add_metric(key, cumulative, total)
    if created is not None:
        family.samples.append(Sample(family.name + "_created", dict(zip(_FN, key)), created))


class _LogCollector(Collector):
    def __init__(self, logs: Any):
        self.logs = logs

    def collect(self) -> list[Metric]:
        stored = GaugeMetricFamily("faas_log_stored_bytes", "Bytes of invocation logs stored (as CloudWatch counts).")
        stored.add_metric([], self.logs.stored_bytes)
        dropped = CounterMetricFamily("faas_log_records_dropped", "Invocation logs dropped: the log writer was behind.")
        dropped.add_metric([], self.logs.dropped)
        return [stored, dropped]
