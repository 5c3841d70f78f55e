"""Prometheus metrics: `GET /metrics` of a real server after invocations, errors and throttles; one registry
per server; and the families built at scrape time from plain counters, pinned against prometheus_client's own
Counter, Gauge and Histogram."""

from __future__ import annotations

import json
import types
from concurrent.futures import ThreadPoolExecutor
import urllib.request

import prometheus_client.metrics
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import faas.metrics
from conftest import create_function, wait_for
from faas.metrics import Metrics

CODE = """
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise KeyError(event["fail"])
    return "ok"
"""


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_follow_invocations(server, lam):
    name, _ = create_function(lam, CODE)
    fn = {"function": name, "version": "$LATEST"}
    before = scrape(server.url)
    assert value(before, "faas_invocations_total", **fn) == 0
    for event in ({}, {}, {"fail": "x"}):
        lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    after = scrape(server.url)
    assert value(after, "faas_invocations_total", **fn) == 3
    assert value(after, "faas_errors_total", **fn, error_type="KeyError") == 1
    assert value(after, "faas_cold_starts_total", **fn) == 1
    assert value(after, "faas_duration_seconds_count", **fn) == 3
    assert value(after, "faas_duration_seconds_bucket", **fn, le="+Inf") == 3
    assert value(after, "faas_init_duration_seconds_count", **fn) == 1
    assert value(after, "faas_concurrent_executions", **fn) == 0
    assert value(after, "faas_instances") >= 1
    assert value(after, "faas_memory_reserved_bytes") >= 128 * 1048576
    assert value(after, "faas_memory_budget_bytes") > 0
    # Stored log bytes count what the log writer has written (within its flush interval).
    wait_for(lambda: value(scrape(server.url), "faas_log_stored_bytes") > value(before, "faas_log_stored_bytes"))

    # Reserved concurrency 1, held by a slow invocation: another one is throttled, and an asynchronous one
    # waits in the queue (throttles back off; they do not drop the event as reserved concurrency 0 would).
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(lam.invoke, FunctionName=name, Payload=b'{"sleep": 2}')
        wait_for(lambda: value(scrape(server.url), "faas_concurrent_executions", **fn) == 1)
        with pytest.raises(lam.exceptions.TooManyRequestsException):
            lam.invoke(FunctionName=name)
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
        throttled = wait_for(lambda: (s := scrape(server.url)) and value(s, "faas_async_queue_depth", function=name)
                             and value(s, "faas_throttles_total", **fn,
                                       reason="ReservedFunctionConcurrentInvocationLimitExceeded") >= 2 and s)
        assert value(throttled, "faas_async_queue_depth", function=name) == 1
        assert value(throttled, "faas_async_oldest_event_age_seconds", function=name) >= 0
        assert value(throttled, "faas_invocations_total", **fn) == 3
        assert "FunctionError" not in slow.result()
    # Once the slot is free, the queued event runs.
    wait_for(lambda: value(scrape(server.url), "faas_invocations_total", **fn) == 5)
    lam.delete_function(FunctionName=name)


def test_each_server_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.function("f", "1").invoked(12.0, True, 5.0, None)
    fm = a.function("f", "1")
    assert fm is a.function("f", "1")
    fm.begin()
    fm.invoked(3.0, False, None, "Runtime.ExitError")
    fm.throttled("ConcurrentInvocationLimitExceeded")
    text_a, text_b = generate_latest(a.registry).decode(), generate_latest(b.registry).decode()
    assert 'faas_invocations_total{function="f",version="1"} 2.0' in text_a
    assert 'faas_errors_total{error_type="Runtime.ExitError",function="f",version="1"} 1.0' in text_a
    assert 'faas_concurrent_executions{function="f",version="1"} 1.0' in text_a
    assert 'faas_init_duration_seconds_sum{function="f",version="1"} 0.005' in text_a
    assert 'function="f"' not in text_b
    a.forget("f")
    assert 'function="f"' not in generate_latest(a.registry).decode()


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_duration_histogram_counts_each_observation_in_its_bucket():
    m = Metrics()
    fm = m.function("f", "1")
    # 1 ms is exactly a bound: it counts in le="0.001", as Histogram.observe() counts it; 1000 s exceeds them all.
    for ms in (0.5, 1.0, 1.0001, 250.0, 1_000_000.0):
        fm.invoked(ms, False, None, None)
    fn = {"function": "f", "version": "1"}
    buckets = {le: sample(m, "faas_duration_seconds_bucket", **fn, le=le)
               for le in ("0.001", "0.0025", "0.1", "0.25", "0.5", "900.0", "+Inf")}
    assert buckets == {"0.001": 2, "0.0025": 3, "0.1": 3, "0.25": 4, "0.5": 4, "900.0": 4, "+Inf": 5}
    assert sample(m, "faas_duration_seconds_count", **fn) == 5
    assert sample(m, "faas_duration_seconds_sum", **fn) == pytest.approx(1000.2525001)
    assert sample(m, "faas_invocations_total", **fn) == 5 == fm.invocations
    # Warm invocations: no cold start, nothing in the init histogram.
    assert sample(m, "faas_cold_starts_total", **fn) == 0
    assert sample(m, "faas_init_duration_seconds_count", **fn) == 0
    assert sample(m, "faas_init_duration_seconds_bucket", **fn, le="+Inf") == 0


def test_cold_starts_errors_and_throttles():
    m = Metrics()
    fm = m.function("f", "1")
    fm.invoked(100.0, True, 30.0, None)
    fm.invoked(100.0, True, None, "Runtime.ExitError")  # init failed before it was timed: no init observation
    fm.invoked(1.0, False, None, "KeyError")
    fm.invoked(1.0, False, None, "KeyError")
    fm.throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
    fm.throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
    fm.throttled("ConcurrentInvocationLimitExceeded")
    fn = {"function": "f", "version": "1"}
    assert sample(m, "faas_invocations_total", **fn) == 4
    assert sample(m, "faas_cold_starts_total", **fn) == 2
    assert sample(m, "faas_init_duration_seconds_count", **fn) == 1
    assert sample(m, "faas_init_duration_seconds_bucket", **fn, le="0.025") == 0
    assert sample(m, "faas_init_duration_seconds_bucket", **fn, le="0.05") == 1
    assert sample(m, "faas_init_duration_seconds_sum", **fn) == pytest.approx(0.03)
    assert sample(m, "faas_errors_total", **fn, error_type="KeyError") == 2
    assert sample(m, "faas_errors_total", **fn, error_type="Runtime.ExitError") == 1
    assert sample(m, "faas_errors_created", **fn, error_type="KeyError") > 0
    assert sample(m, "faas_throttles_total", **fn, reason="ReservedFunctionConcurrentInvocationLimitExceeded") == 2
    assert sample(m, "faas_throttles_total", **fn, reason="ConcurrentInvocationLimitExceeded") == 1
    assert sample(m, "faas_throttles_created", **fn, reason="ConcurrentInvocationLimitExceeded") > 0
    # Throttles are not invocations.
    assert sample(m, "faas_duration_seconds_count", **fn) == 4


def test_concurrency_gauge_follows_begin_and_end():
    m = Metrics()
    fm, other = m.function("f", "1"), m.function("f", "2")
    fn = {"function": "f", "version": "1"}
    assert sample(m, "faas_concurrent_executions", **fn) == 0
    fm.begin()
    fm.begin()
    other.begin()
    assert sample(m, "faas_concurrent_executions", **fn) == 2
    assert sample(m, "faas_concurrent_executions", function="f", version="2") == 1
    fm.end()
    fm.end()
    assert sample(m, "faas_concurrent_executions", **fn) == 0


def test_forget_drops_only_that_function_and_a_running_invocation_may_still_finish():
    m = Metrics()
    fm = m.function("f", "$LATEST")
    m.function("f", "1").invoked(1.0, False, None, None)
    m.function("g", "1").invoked(1.0, False, None, None)
    fm.begin()
    m.forget("f")
    fm.invoked(1.0, False, None, "KeyError")  # the invocation that was running when f was deleted
    fm.end()
    text = generate_latest(m.registry).decode()
    assert 'function="f"' not in text
    assert 'faas_invocations_total{function="g",version="1"} 1.0' in text
    assert m.function("f", "$LATEST") is not fm


def test_family_names_are_reserved_in_the_registry():
    m = Metrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("faas_invocations", "again", registry=m.registry)


class _Reference:
    """What faas.metrics recorded before: prometheus_client's Counter, Gauge and Histogram children."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        fn = ("function", "version")
        self.invocations = Counter("faas_invocations", "Invocations that ran (successful or not).", fn, registry=r)
        self.errors = Counter("faas_errors", "Invocations that ended in an error, by errorType.",
                              (*fn, "error_type"), registry=r)
        self.throttles = Counter("faas_throttles", "Invocations rejected for lack of concurrency, by reason.",
                                 (*fn, "reason"), registry=r)
        self.duration = Histogram("faas_duration_seconds", "Time the function ran per invocation.", fn,
                                  buckets=faas.metrics._DURATION_BUCKETS, registry=r)
        self.init_duration = Histogram("faas_init_duration_seconds", "Initialisation time of cold starts.", fn,
                                       buckets=faas.metrics._INIT_BUCKETS, registry=r)
        self.cold_starts = Counter("faas_cold_starts", "Invocations that started a new instance.", fn, registry=r)
        self.concurrent = Gauge("faas_concurrent_executions", "Invocations running now.", fn, registry=r)

    def function(self, name: str, version: str) -> None:
        for metric in (self.invocations, self.duration, self.init_duration, self.cold_starts, self.concurrent):
            metric.labels(name, version)

    def invoked(self, key: tuple[str, str], duration_ms: float, cold: bool, init_ms: float | None,
                error_type: str | None) -> None:
        self.invocations.labels(*key).inc()
        self.duration.labels(*key).observe(duration_ms / 1000.0)
        if cold:
            self.cold_starts.labels(*key).inc()
            if init_ms is not None:
                self.init_duration.labels(*key).observe(init_ms / 1000.0)
        if error_type is not None:
            self.errors.labels(*key, error_type).inc()


@pytest.mark.parametrize("created", [True, False], ids=["created", "created-disabled"])
def test_scrape_text_is_what_prometheus_client_metrics_gave(monkeypatch, created):
    clock = types.SimpleNamespace(now=1_700_000_000.0)
    fake_time = types.SimpleNamespace(time=lambda: clock.now)
    monkeypatch.setattr(faas.metrics, "time", fake_time)
    monkeypatch.setattr(prometheus_client.metrics, "time", fake_time)
    monkeypatch.setattr(prometheus_client.metrics, "_use_created", created)
    m, ref = Metrics(), _Reference()

    def function(name: str, version: str) -> faas.metrics.FunctionMetrics:
        clock.now += 0.25
        ref.function(name, version)
        return m.function(name, version)

    def invoked(fm: faas.metrics.FunctionMetrics, *args) -> None:
        fm.invoked(*args)
        ref.invoked(fm.key, *args)
        clock.now += 1.0

    def throttled(fm: faas.metrics.FunctionMetrics, reason: str) -> None:
        fm.throttled(reason)
        ref.throttles.labels(*fm.key, reason).inc()

    f, h = function("f", "$LATEST"), function("h", "2")
    for ms in (0.0, 0.1234, 0.5, 1.0, 2.5, 3.0, 7.77, 12.0, 999.9, 1000.0, 1000.1, 299_999.0, 1e6, 5e6):
        invoked(f, ms, False, None, None)
    invoked(f, 150.0, True, 5.0, None)
    invoked(f, 150.0, True, 10_000.0, "Runtime.ExitError")
    invoked(f, 150.0, True, None, None)
    invoked(f, 3.0, False, None, "KeyError")
    invoked(h, 0.3, True, 12.5, "KeyError")
    throttled(f, "ReservedFunctionConcurrentInvocationLimitExceeded")
    throttled(f, "ConcurrentInvocationLimitExceeded")
    throttled(f, "ReservedFunctionConcurrentInvocationLimitExceeded")
    f.begin()
    ref.concurrent.labels("f", "$LATEST").inc()

    expected = generate_latest(ref.registry).decode()
    text = generate_latest(m.registry).decode()
    assert text[:len(expected)] == expected
    assert text[len(expected):].startswith("# HELP faas_instances ")
    assert ("faas_duration_seconds_created" in text) is created
