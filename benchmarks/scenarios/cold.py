"""`cold`: the first invoke of freshly created hello-world functions, per spawner, split into parts.

Each function is invoked twice in a row on one keep-alive connection, both with `X-Amz-Log-Type: Tail`.
The first (cold) invoke's REPORT line gives `Init Duration` (the worker's module-level code, timed inside the
worker) and `Duration` (the handler). The second (warm) invoke gives the per-request overhead outside the
handler: its round trip minus its Duration (HTTP, routing, validation, the frame round trip). What is left of
the cold round trip is the spawn: creating the process, starting the interpreter, server-side set-up.
"""

from __future__ import annotations

import base64
import re
import statistics
import time
from typing import Any

from benchmarks import functions, stats
from benchmarks.loadgen import LoadGenerator, Reply, Request, Sequence
from benchmarks.report import Result, Table, now_iso
from benchmarks.scenarios import Shared
from benchmarks.servers import per_spawner

_DURATION = re.compile(r"\tDuration: ([\d.]+) ms")
_INIT = re.compile(r"Init Duration: ([\d.]+) ms")
TAIL = {"X-Amz-Log-Type": "Tail"}


def report_times(reply: Reply) -> tuple[float | None, float | None]:
    """(Duration, Init Duration) in ms from the REPORT line of a reply's log tail."""
    log = base64.b64decode(reply.headers.get("X-Amz-Log-Result", "")).decode(errors="replace")
    duration = _DURATION.search(log)
    init = _INIT.search(log)
    return (float(duration.group(1)) if duration else None, float(init.group(1)) if init else None)


def measure(url: str, n: int, runtime: str, gen: LoadGenerator) -> dict[str, Any]:
    lam = functions.lambda_client(url)
    paths = [functions.create(lam, f"cold-{i}", functions.HELLO, runtime=runtime) for i in range(n)]
    requests = [Request(path, b"{}", TAIL) for path in paths for _ in range(2)]
    replies = gen.run(Sequence(url, requests)).replies
    failed = [r for r in replies if r.status != 200 or "X-Amz-Function-Error" in r.headers]
    if failed:
        raise RuntimeError(f"{len(failed)} invokes failed, first: {failed[0].status} {failed[0].body[:300]!r}")
    cold, warm = replies[0::2], replies[1::2]
    overhead = statistics.median(w.ms - (report_times(w)[0] or 0.0) for w in warm)
    total, init, handler, spawn = [], [], [], []
    for reply in cold:
        duration, init_ms = report_times(reply)
        total.append(reply.ms)
        if duration is not None and init_ms is not None:
            init.append(init_ms)
            handler.append(duration)
            spawn.append(reply.ms - init_ms - duration - overhead)
    return {"total": stats.summary(total), "spawn": stats.summary(spawn), "init": stats.summary(init),
            "handler": stats.summary(handler), "overhead_ms": round(overhead, 3), "first_ms": round(total[0], 3),
            "warm_total": stats.summary([w.ms for w in warm])}


def run(opts: Any, shared: Shared) -> Result:
    started, t0 = now_iso(), time.monotonic()
    n = opts.functions or 20
    notes: list[str] = []
    with LoadGenerator() as gen:
        figures: dict[str, Any] = per_spawner(opts.spawners, opts.server_env, notes,
                                              lambda server: measure(server.url, n, opts.runtime, gen))
    rows = [[spawner, str(f["total"]["n"]), stats.ms(f["first_ms"])]
            + [stats.ms(f[part].get(key)) for part, key in (("total", "p50"), ("total", "p90"), ("total", "min"),
                                                            ("spawn", "p50"), ("init", "p50"), ("handler", "p50"))]
            + [stats.ms(f["overhead_ms"]), stats.ms(f["warm_total"].get("p50"))] for spawner, f in figures.items()]
    tables = [Table(f"First invoke of {n} new hello-world functions ({opts.runtime}), one at a time",
                    ["spawner", "n", "first", "p50", "p90", "min", "spawn p50", "init p50", "handler p50",
                     "HTTP+router", "warm p50"], rows)]
    if "fork" in figures and "exec" in figures:
        ratio = {k: figures["fork"][k]["p50"] / figures["exec"][k]["p50"]
                 for k in ("total", "spawn") if figures["exec"][k].get("p50")}
        figures["fork_over_exec"] = {k: round(v, 3) for k, v in ratio.items()}
        notes.append("fork/exec ratio of the cold first-invoke p50: "
                     f"{ratio.get('total', float('nan')):.2f} (spawn p50: {ratio.get('spawn', float('nan')):.2f})")
    elif "fork" not in figures and "fork" in opts.spawners:
        notes.append("fork/exec ratio: not available (fork was not measured)")
    notes.append("first: the first function's cold start, which also pays once-per-server costs (finding the "
                 "interpreter, starting a zygote); it is included in the percentiles")
    notes.append("spawn = first-invoke round trip - Init Duration - Duration - HTTP+router, where HTTP+router "
                 "is the median of (warm round trip - its Duration) on the same functions")
    return Result("cold", started, time.monotonic() - t0, {"functions": n, "spawners": opts.spawners,
                                                           "runtime": opts.runtime}, tables, notes, figures)
