"""Prometheus metrics: `GET /metrics` of a real server after invocations, errors and throttles, and one
registry per server."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import create_function, wait_for
from faas.metrics import Metrics

CODE = """
def handler(event, context):
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

    # Reserved concurrency 0: every invocation is throttled, and an asynchronous one waits in the queue.
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName=name)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    throttled = wait_for(lambda: (s := scrape(server.url)) and value(s, "faas_async_queue_depth", function=name)
                         and value(s, "faas_throttles_total", **fn,
                                   reason="ReservedFunctionConcurrentInvocationLimitExceeded") >= 2 and s)
    assert value(throttled, "faas_async_queue_depth", function=name) == 1
    assert value(throttled, "faas_async_oldest_event_age_seconds", function=name) >= 0
    assert value(throttled, "faas_invocations_total", **fn) == 3
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
