"""Traces of invocations: TracingConfig Mode=Active and callers' sampled X-Amzn-Trace-Id headers produce
OpenTelemetry spans (root, Initialization, Invocation, Overhead) in the file exporter and at an OTLP collector."""

from __future__ import annotations

import asyncio
import json
import re
import shutil

import pytest
from aiohttp import web
from conftest import ROLE, Server, create_function, make_zip, unique, wait_for

from faas.tracing import SpanExporter, Tracer, parse_trace_header

CODE = """
import os

def handler(event, context):
    if event.get("fail"):
        raise ValueError("boom")
    return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}
"""
# A custom runtime that answers each event with the trace header the Runtime API gave it.
BOOTSTRAP = """\
#!/bin/bash
set -euo pipefail
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  curl -sS -D "$HEADERS" -o /dev/null "$API/next"
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  TRACE=$(grep -Fi Lambda-Runtime-Trace-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -o /dev/null -X POST "$API/$ID/response" -d "{\\"trace\\":\\"$TRACE\\"}"
done
"""
HEADER = re.compile(r"Root=(1-([0-9a-f]{8})-([0-9a-f]{24}));Parent=([0-9a-f]{16});Sampled=1")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("traced"), env={
        "FAAS_TRACING__FILE": '"traces.jsonl"', "FAAS_TRACING__BATCH_INTERVAL": "0.05",
    }).start()
    yield srv
    srv.stop()


def read_spans(srv: Server) -> list[dict]:
    """Every span in the file exporter's output, with its resource's service.name as `_service`."""
    path = srv.data_dir / "traces.jsonl"
    if not path.exists():
        return []
    spans = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            service = attrs(rs["resource"])["service.name"]
            for ss in rs["scopeSpans"]:
                spans.extend({**span, "_service": service} for span in ss["spans"])
    return spans


def attrs(obj: dict) -> dict:
    out = {}
    for a in obj.get("attributes", []):
        ((kind, value),) = a["value"].items()
        out[a["key"]] = int(value) if kind == "intValue" else value
    return out


def traces_of(spans: list[dict], function: str) -> dict[str, dict[str, dict]]:
    """trace id -> span name -> span, for the traces whose root span is named `function`."""
    ids = {s["traceId"] for s in spans if s["name"] == function}
    return {t: {s["name"]: s for s in spans if s["traceId"] == t} for t in ids}


def invoke(lam, name: str, payload: bytes = b"{}") -> dict:
    resp = lam.invoke(FunctionName=name, Payload=payload)
    return json.loads(resp["Payload"].read())


def with_trace_header(lam, value: str):
    def add_header(request, **_):
        request.headers["X-Amzn-Trace-Id"] = value

    lam.meta.events.register("before-send.lambda.Invoke", add_header)
    return lam


def test_active_function_traces_cold_and_warm_invocations(traced):
    lam = traced.client()
    name, _ = create_function(lam, CODE, TracingConfig={"Mode": "Active"})
    assert lam.get_function_configuration(FunctionName=name)["TracingConfig"] == {"Mode": "Active"}
    seen = [invoke(lam, name)["trace"], invoke(lam, name)["trace"]]

    found = wait_for(lambda: len(t := traces_of(read_spans(traced), name)) == 2 and t)
    by_request = {attrs(spans[name])["faas.invocation_id"]: spans for spans in found.values()}
    assert len(by_request) == 2
    cold = [s for s in found.values() if attrs(s[name])["faas.coldstart"]]
    warm = [s for s in found.values() if not attrs(s[name])["faas.coldstart"]]
    assert len(cold) == 1 and len(warm) == 1

    for spans, expect_init in ((cold[0], True), (warm[0], False)):
        root = spans[name]
        assert set(spans) == ({name, "Initialization", "Invocation", "Overhead"} if expect_init
                              else {name, "Invocation", "Overhead"})
        assert "parentSpanId" not in root and root["kind"] == 2 and root["_service"] == name
        assert attrs(root)["faas.version"] == "$LATEST"
        assert len(root["traceId"]) == 32 and len(root["spanId"]) == 16
        for child in set(spans) - {name}:
            assert spans[child]["parentSpanId"] == root["spanId"]
            assert spans[child]["traceId"] == root["traceId"]
        order = ["Initialization", "Invocation", "Overhead"] if expect_init else ["Invocation", "Overhead"]
        times = [int(root["startTimeUnixNano"])]
        for child in order:
            times += [int(spans[child]["startTimeUnixNano"]), int(spans[child]["endTimeUnixNano"])]
        times.append(int(root["endTimeUnixNano"]))
        assert times == sorted(times), times
        assert int(spans["Invocation"]["endTimeUnixNano"]) > int(spans["Invocation"]["startTimeUnixNano"])

        # The function saw the same trace, with its Invocation span as the parent to continue from.
        header = next(h for h in seen if h and h.split(";")[0].endswith(root["traceId"][8:]))
        m = HEADER.fullmatch(header)
        assert m, header
        assert m.group(2) + m.group(3) == root["traceId"]
        assert m.group(4) == spans["Invocation"]["spanId"]

    init = cold[0]["Initialization"]
    assert int(init["endTimeUnixNano"]) > int(init["startTimeUnixNano"])
    lam.close()


def test_function_error_marks_the_root_span(traced):
    lam = traced.client()
    name, _ = create_function(lam, CODE, TracingConfig={"Mode": "Active"})
    assert lam.invoke(FunctionName=name, Payload=b'{"fail": true}')["FunctionError"] == "Unhandled"
    (spans,) = wait_for(lambda: traces_of(read_spans(traced), name)).values()
    assert attrs(spans[name])["error.type"] == "ValueError"
    assert spans[name]["status"] == {"code": 2, "message": "ValueError"}
    assert spans["Invocation"]["status"]["code"] == 2
    lam.close()


def test_caller_trace_is_continued_and_passthrough_without_header_is_not_traced(traced):
    plain = traced.client()
    passthrough, _ = create_function(plain, CODE)
    active, _ = create_function(plain, CODE, TracingConfig={"Mode": "Active"})
    assert invoke(plain, passthrough)["trace"] is None

    root, parent = "1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8"
    sampled = with_trace_header(traced.client(), f"Root={root};Parent={parent};Sampled=1")
    seen = invoke(sampled, passthrough)["trace"]
    # An upstream decision not to sample is honoured even by an Active function.
    unsampled_header = f"Root=1-5759e988-{'0' * 24};Parent={parent};Sampled=0"
    unsampled = with_trace_header(traced.client(), unsampled_header)
    assert invoke(unsampled, active)["trace"] == unsampled_header
    # Exported after the invocations above: once its trace is in the file, theirs would be too.
    invoke(plain, active)
    wait_for(lambda: traces_of(read_spans(traced), active))

    spans = read_spans(traced)
    (trace,) = traces_of(spans, passthrough).values()
    root_span = trace[passthrough]
    assert root_span["traceId"] == "5759e988bd862e3fe1be46a994272793"
    assert root_span["parentSpanId"] == parent
    assert seen == f"Root={root};Parent={trace['Invocation']['spanId']};Sampled=1"
    assert len(traces_of(spans, active)) == 1
    assert not [s for s in spans if s["traceId"].endswith("0" * 24)]
    plain.close()
    sampled.close()
    unsampled.close()


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_custom_runtime_gets_the_trace_header(traced):
    lam = traced.client()
    name = unique()
    lam.create_function(
        FunctionName=name, Runtime="provided.al2", Role=ROLE, Handler="function.handler",
        Code={"ZipFile": make_zip({"bootstrap": BOOTSTRAP}, {"bootstrap": 0o755})}, TracingConfig={"Mode": "Active"},
    )
    wait_for(lambda: lam.get_function_configuration(FunctionName=name)["State"] == "Active")
    header = invoke(lam, name)["trace"]
    lam.close()
    m = HEADER.fullmatch(header)
    assert m, header
    (trace,) = wait_for(lambda: traces_of(read_spans(traced), name)).values()
    assert trace["Invocation"]["spanId"] == m.group(4)
    assert trace[name]["traceId"] == m.group(2) + m.group(3)


async def test_otlp_collector_receives_spans(own_server):
    received: list[dict] = []
    arrived = asyncio.Event()

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        received.append(await request.json())
        arrived.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        srv = await asyncio.to_thread(
            own_server, FAAS_TRACING__OTLP_ENDPOINT=f'"http://127.0.0.1:{port}"', FAAS_TRACING__BATCH_INTERVAL=0.05,
        )
        lam = srv.client()
        name, _ = await asyncio.to_thread(create_function, lam, CODE, TracingConfig={"Mode": "Active"})
        result = json.loads((await asyncio.to_thread(lam.invoke, FunctionName=name))["Payload"].read())
        lam.close()
        await asyncio.wait_for(arrived.wait(), 10)
        spans = [
            {**span, "_service": attrs(rs["resource"])["service.name"]}
            for body in received for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]
        ]
        (trace,) = traces_of(spans, name).values()
        assert set(trace) == {name, "Initialization", "Invocation", "Overhead"}
        assert trace[name]["_service"] == name
        assert HEADER.fullmatch(result["trace"]).group(4) == trace["Invocation"]["spanId"]
    finally:
        await runner.cleanup()


def test_trace_header_parsing():
    h = parse_trace_header("Root=1-5759E988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:1")
    assert (h.root, h.parent, h.sampled) == ("1-5759e988-bd862e3fe1be46a994272793", "53995c3f42cd8ad8", True)
    assert parse_trace_header("Root=1-xyz-abc;Sampled=?").root is None
    assert parse_trace_header(None).sampled is None
    tracer = Tracer(None)
    assert tracer.begin("PassThrough", None) is None
    assert tracer.begin("PassThrough", "Root=1-5759e988-bd862e3fe1be46a994272793") is None
    assert tracer.begin("Active", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0") is None
    trace = tracer.begin("Active", "Parent=53995c3f42cd8ad8")  # a parent without a root is not continued
    assert trace is not None and trace.parent is None


async def test_exporter_flushes_on_close(tmp_path):
    exporter = SpanExporter(file=tmp_path / "t.jsonl", batch_interval=60.0)
    exporter.start()
    trace = Tracer(exporter).begin("Active", None)
    assert trace is not None
    trace.acquired()
    trace.invoking()
    trace.invoked()
    Tracer(exporter).finish(trace, function="f", version="1", arn="arn", request_id="r", cold=True, init_ms=1.0,
                            error_type=None)
    await exporter.close(5.0)
    await exporter.close(5.0)
    (line,) = (tmp_path / "t.jsonl").read_text().splitlines()
    names = [s["name"] for s in json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]]
    assert names == ["f", "Initialization", "Invocation", "Overhead"]
    assert exporter.exported == 4 and exporter.dropped == 0
