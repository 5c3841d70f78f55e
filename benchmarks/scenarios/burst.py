"""`burst`: N invocations at once of a function that sleeps, on connections opened beforehand.

The first round finds no instance; later rounds find the instances earlier rounds left warm, and start only
the rest ("new": instances that answered for the first time). Wall time runs from the first request out to
the last answer in; with enough capacity it is the sleep plus the cost of starting (or waking) the instances.
429 answers are throttles.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from benchmarks import functions, stats
from benchmarks.loadgen import Burst, LoadGenerator
from benchmarks.report import Result, Table, now_iso
from benchmarks.scenarios import Shared
from benchmarks.servers import start_faas


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body).get("Reason") or "unknown")
    except (ValueError, AttributeError):
        return "unknown"


def run(opts: Any, shared: Shared) -> Result:
    started, t0 = now_iso(), time.monotonic()
    n, sleep = opts.invocations, opts.sleep
    notes: list[str] = []
    figures: dict[str, Any] = {"rounds": []}
    server, note = start_faas(opts.spawner, opts.server_env)
    if note:
        notes.append(note)
    body = json.dumps({"seconds": sleep}).encode()
    with server, LoadGenerator() as gen:
        path = functions.create(functions.lambda_client(server.url), "sleeper", functions.SLEEP,
                                runtime=opts.runtime, timeout=max(30, int(sleep * 10)))
        seen: set[int] = set()
        for i in range(opts.rounds):
            out = gen.run(Burst(server.url + path, body, n, timeout=sleep + 20.0))
            pids = {json.loads(r.body)["pid"] for r in out.replies if r.status == 200}
            reasons = Counter(_reason(r.body) for r in out.replies if r.status == 429)
            errors = dict(out.errors)
            new = len(pids - seen)
            seen |= pids
            figures["rounds"].append({"round": i + 1, "kind": "cold" if i == 0 else "again", "n": n,
                                      "wall_s": round(out.elapsed_s, 3), "ok": out.ok,
                                      "throttled": errors.pop("429", 0), "errors": errors,
                                      "latency_ms": stats.summary(out.latencies_ms), "instances": len(pids),
                                      "new_instances": new,
                                      "throttle_reasons": dict(reasons)})
    if server.leaked:
        notes.append(f"{len(server.leaked)} process(es) outlived the server; the harness killed them")
    rows = [[f"{f['round']} ({f['kind']})", str(f["n"]), f"{f['wall_s']:.2f} s",
             stats.ms((f["wall_s"] - sleep) * 1000), str(f["ok"]), str(f["throttled"]),
             str(sum(f["errors"].values())), stats.ms(f["latency_ms"].get("p50")),
             stats.ms(f["latency_ms"].get("max")), str(f["instances"]), str(f["new_instances"])]
            for f in figures["rounds"]]
    table = Table(f"{n} concurrent invocations of a function sleeping {sleep:g} s",
                  ["round", "n", "wall", "wall - sleep", "ok", "throttled", "errors", "p50", "max",
                   "instances", "new"], rows)
    for f in figures["rounds"]:
        if f["throttle_reasons"]:
            notes.append(f"round {f['round']}: throttle reasons {f['throttle_reasons']}")
        if f["errors"]:
            notes.append(f"round {f['round']}: errors {f['errors']}")
    options = {"invocations": n, "sleep": sleep, "rounds": opts.rounds, "spawner": opts.spawner,
               "runtime": opts.runtime}
    return Result("burst", started, time.monotonic() - t0, options, [table], notes, figures)
