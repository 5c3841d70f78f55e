"""`warm`: closed-loop throughput and latency of a no-op function through the Invoke API, against a bare
aiohttp server answering the same route with the same JSON (the HTTP floor), level by level.

At each concurrency the generator keeps that many requests outstanding on as many keep-alive connections.
The two servers are measured alternately at each level, so drift on a noisy machine hits both alike. The
CPU used by the generator, by each server process and by faas's workers shows which of them was the limit.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import functions, stats
from benchmarks.loadgen import Closed, LoadGenerator, Outcome, Request, Sequence
from benchmarks.report import Result, Table, now_iso
from benchmarks.scenarios import Shared
from benchmarks.servers import BaselineServer, CpuMeter, descendants, start_faas

SATURATED = 0.9  # CPU share of one core above which a single-threaded process is the limit


def setup_noop(url: str, runtime: str, gen: LoadGenerator) -> tuple[str, bytes]:
    """Create the no-op function; return its Invoke URL and its reply body."""
    path = functions.create(functions.lambda_client(url), "noop", functions.NOOP, runtime=runtime)
    reply = gen.run(Sequence(url, [Request(path, b"{}")])).replies[0]
    if reply.status != 200:
        raise RuntimeError(f"noop invoke failed: {reply.status} {reply.body[:300]!r}")
    return url + path, reply.body


def _measured(gen: LoadGenerator, job: Closed, server_pid: int) -> dict[str, Any]:
    meter = CpuMeter(server_pid)
    meter.start()
    out: Outcome = gen.run(job)
    server_cpu, children_cpu = meter.stop()
    return {"rps": round(out.throughput, 1), "latency_ms": stats.summary(out.latencies_ms), "errors": out.errors,
            "generator_cpu": round(out.cpu_share, 3), "server_cpu": round(server_cpu, 3),
            "workers_cpu": round(children_cpu, 3)}


def _rows(levels: dict[int, dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    speed, cpu = [], []
    for c, f in levels.items():
        b, a = f["baseline"], f["faas"]
        speed.append([str(c), stats.rate(b["rps"]), stats.rate(a["rps"]), stats.pct(f["faas_pct_of_baseline"]),
                      stats.ms(a["latency_ms"].get("p50")), stats.ms(a["latency_ms"].get("p95")),
                      stats.ms(a["latency_ms"].get("p99")), stats.ms(b["latency_ms"].get("p50")),
                      stats.ms(b["latency_ms"].get("p99")), str(sum(a["errors"].values()))])
        cpu.append([str(c), stats.pct(b["generator_cpu"] * 100), stats.pct(b["server_cpu"] * 100),
                    stats.pct(a["generator_cpu"] * 100), stats.pct(a["server_cpu"] * 100),
                    stats.pct(a["workers_cpu"] * 100), str(f["faas_instances"])])
    return speed, cpu


def _notes(levels: dict[int, dict[str, Any]]) -> list[str]:
    notes = []
    bound = [str(c) for c, f in levels.items() if f["baseline"]["generator_cpu"] >= SATURATED]
    if bound:
        notes.append(f"the generator used a full core against the baseline at c={','.join(bound)}: there the "
                     "baseline is the generator's limit (a lower bound of the HTTP floor), so faas/base is "
                     "an upper bound")
    bound = [str(c) for c, f in levels.items() if f["faas"]["generator_cpu"] >= SATURATED]
    if bound:
        notes.append(f"the generator used a full core against faas at c={','.join(bound)}: the faas figures "
                     "there may be the generator's limit")
    for c, f in levels.items():
        if f["faas"]["errors"]:
            notes.append(f"c={c}: faas errors {f['faas']['errors']}")
    return notes


def run(opts: Any, shared: Shared) -> Result:
    started, t0 = now_iso(), time.monotonic()
    duration = opts.duration or 2.0
    body = functions.payload(opts.payload_bytes)
    notes: list[str] = []
    levels: dict[int, dict[str, Any]] = {}
    server, note = start_faas(opts.spawner, opts.server_env)
    if note:
        notes.append(note)
    with server, LoadGenerator() as gen:
        invoke_url, reply = setup_noop(server.url, opts.runtime, gen)
        with BaselineServer(reply) as baseline:
            base_url = baseline.url + functions.INVOKE_PATH.format(name="noop")
            # One instance per outstanding request: start them all before anything is timed.
            gen.run(Closed(invoke_url, body, max(opts.concurrency), duration=0.0, warmup=1.0, client=opts.client))
            for c in opts.concurrency:
                base = _measured(gen, Closed(base_url, body, c, duration, opts.warmup, client=opts.client),
                                 baseline.pid)
                faas = _measured(gen, Closed(invoke_url, body, c, duration, opts.warmup, client=opts.client),
                                 server.pid)
                levels[c] = {"baseline": base, "faas": faas, "faas_instances": len(descendants(server.pid)),
                             "faas_pct_of_baseline": round(100 * faas["rps"] / base["rps"], 1) if base["rps"] else None}
    if server.leaked:
        notes.append(f"{len(server.leaked)} process(es) outlived the server; the harness killed them")
    speed, cpu = _rows(levels)
    notes += _notes(levels)
    best = max(levels, key=lambda c: levels[c]["faas"]["rps"])
    shared.warm_max_rps, shared.warm_max_concurrency = levels[best]["faas"]["rps"], best
    notes.append(f"faas peak: {stats.rate(shared.warm_max_rps)} at concurrency {best}; payload {len(body)} bytes; "
                 f"{duration:g} s per level after {opts.warmup:g} s warm-up; generator client: {opts.client}")
    tables = [
        Table("Closed loop, no-op function: Invoke API (faas) vs bare aiohttp (base), same route and reply",
              ["concurrency", "base", "faas", "faas/base", "faas p50", "faas p95", "faas p99", "base p50",
               "base p99", "faas errors"], speed),
        Table("CPU per level, as % of one core (warm-up included for the servers)",
              ["concurrency", "gen vs base", "base server", "gen vs faas", "faas server", "faas workers",
               "faas instances"], cpu),
    ]
    figures = {"levels": levels, "faas_max_rps": shared.warm_max_rps, "faas_max_at_concurrency": best}
    options = {"concurrency": opts.concurrency, "duration": duration, "warmup": opts.warmup,
               "payload_bytes": len(body), "spawner": opts.spawner, "runtime": opts.runtime}
    return Result("warm", started, time.monotonic() - t0, options, tables, notes, figures)
