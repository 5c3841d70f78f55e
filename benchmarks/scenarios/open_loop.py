"""`open`: fixed request rates, sent on schedule whether or not earlier requests were answered.

Latency is measured from when each request was due, not from when it went out, so a stall shows up in
the figures of every request it delayed (no coordinated omission). The rates are shares of the peak warm
throughput: measured by `warm` earlier in the same run, else by a short closed-loop probe here.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import functions, stats
from benchmarks.loadgen import Closed, LoadGenerator, Open
from benchmarks.report import Result, Table, now_iso
from benchmarks.scenarios import Shared
from benchmarks.scenarios.warm import setup_noop
from benchmarks.servers import BaselineServer, CpuMeter, descendants, settle, start_faas

PROBE_CONCURRENCY = (4, 8)


def run(opts: Any, shared: Shared) -> Result:
    started, t0 = now_iso(), time.monotonic()
    duration = opts.duration or 3.0
    body = functions.payload(opts.payload_bytes)
    notes: list[str] = [f"generator client: {opts.client}"]
    figures: dict[str, Any] = {"rates": []}
    server, note = start_faas(opts.spawner, opts.server_env)
    if note:
        notes.append(note)
    with server, LoadGenerator() as gen:
        url, reply = setup_noop(server.url, opts.runtime, gen)
        # As many warm instances as the warm scenario's top level ended with.
        gen.run(Closed(url, body, max(opts.concurrency), duration=0.0, warmup=1.0, client=opts.client))
        if opts.rps:
            targets = [(None, float(r)) for r in opts.rps]
        else:
            peak = shared.warm_max_rps
            if peak:
                notes.append(f"rates are shares of the warm peak measured in this run: {stats.rate(peak)}")
            else:
                peak = max(gen.run(Closed(url, body, c, 1.5, 0.3, client=opts.client)).throughput
                           for c in PROBE_CONCURRENCY)
                notes.append(f"rates are shares of a closed-loop probe's peak (c={PROBE_CONCURRENCY}): "
                             f"{stats.rate(peak)}")
            figures["peak_rps"] = round(peak, 1)
            targets = [(p, peak * p / 100) for p in opts.rates]
        for share, rps in targets:
            settle(server.pid)
            meter = CpuMeter(server.pid)
            meter.start()
            out = gen.run(Open(url, body, rps, duration, client=opts.client))
            server_cpu, workers_cpu = meter.stop()
            lat = stats.summary(out.latencies_ms)
            figures["rates"].append({"share_pct": share, "rps": round(rps, 1), "sent": out.ok + out.error_count,
                                     "ok": out.ok, "dropped": out.dropped, "errors": out.errors,
                                     "latency_ms": lat, "achieved_rps": round(out.ok / out.elapsed_s, 1),
                                     "max_send_lag_ms": round(out.max_lag_ms, 3),
                                     "generator_cpu": round(out.cpu_share, 3), "server_cpu": round(server_cpu, 3),
                                     "workers_cpu": round(workers_cpu, 3),
                                     "instances_after": len(descendants(server.pid))})
        # The same schedule against a bare aiohttp server: this generator's own floor (its timers count whole
        # milliseconds, so sends go out up to 1 ms late and several at once), which faas's figures include too.
        with BaselineServer(reply) as baseline:
            base_url = baseline.url + functions.INVOKE_PATH.format(name="noop")
            for f in figures["rates"]:
                out = gen.run(Open(base_url, body, f["rps"], duration, client=opts.client))
                f["baseline_latency_ms"] = stats.summary(out.latencies_ms)
                f["baseline_achieved_rps"] = round(out.ok / out.elapsed_s, 1)
    if server.leaked:
        notes.append(f"{len(server.leaked)} process(es) outlived the server; the harness killed them")
    for f in figures["rates"]:
        if f["errors"]:
            notes.append(f"{stats.rate(f['rps'])}: errors {f['errors']}")
    rows = [[stats.pct(f["share_pct"]), stats.rate(f["rps"]), stats.rate(f["achieved_rps"]),
             stats.ms(f["latency_ms"].get("p50")), stats.ms(f["latency_ms"].get("p90")),
             stats.ms(f["latency_ms"].get("p99")), stats.ms(f["latency_ms"].get("max")),
             stats.ms(f["baseline_latency_ms"].get("p50")), stats.ms(f["baseline_latency_ms"].get("p99")),
             str(f["dropped"]),
             str(sum(f["errors"].values())), str(f["instances_after"]), stats.ms(f["max_send_lag_ms"]),
             stats.pct(f["generator_cpu"] * 100), stats.pct(f["server_cpu"] * 100),
             stats.pct(f["workers_cpu"] * 100)] for f in figures["rates"]]
    table = Table(f"Open loop, no-op function, {duration:g} s per rate; latency from the scheduled send time",
                  ["share of peak", "rate", "served", "p50", "p90", "p99", "max", "base p50", "base p99",
                   "dropped", "errors",
                   "instances", "send lag max", "gen CPU", "server CPU", "workers CPU"], rows)
    notes.append("served: answers per second of schedule; base p50/p99: the same schedule against the bare aiohttp "
                 "server (the generator's own floor); dropped: due while 256 requests were outstanding, so "
                 "never sent; errors: non-200 answers, function errors and timeouts (10 s); instances: "
                 "processes below the server after the rate (workers, a zygote if any, the log writer); CPU as % of one core")
    options = {"rates_pct": opts.rates, "rps": opts.rps, "duration": duration, "payload_bytes": len(body),
               "spawner": opts.spawner, "runtime": opts.runtime}
    return Result("open", started, time.monotonic() - t0, options, [table], notes, figures)
