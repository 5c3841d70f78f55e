"""`memory`: proportional set size (PSS) of idle warm instances, per spawner.

K functions are created and each invoked once; each returns `os.getpid()`, the pid of its worker. Then,
with every instance idle, `/proc/<pid>/smaps_rollup` is read for each. PSS charges a page shared by n
processes 1/n to each, so it is the memory an instance really costs, shared pages included fairly.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import functions, stats
from benchmarks.loadgen import LoadGenerator, Request, Sequence
from benchmarks.report import Result, Table, now_iso
from benchmarks.scenarios import Shared
from benchmarks.servers import per_spawner, settle

FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty")


def smaps_rollup(pid: int) -> dict[str, float]:
    """The FIELDS of /proc/<pid>/smaps_rollup, in MB (those the kernel reports)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in FIELDS:
            out[name] = int(rest.split()[0]) / 1024
    return out


def measure(url: str, k: int, runtime: str, gen: LoadGenerator, server_pid: int) -> dict[str, Any]:
    lam = functions.lambda_client(url)
    paths = [functions.create(lam, f"mem-{i}", functions.PID, runtime=runtime) for i in range(k)]
    replies = gen.run(Sequence(url, [Request(path, b"{}") for path in paths])).replies
    failed = [r for r in replies if r.status != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} invokes failed, first: {failed[0].status} {failed[0].body[:300]!r}")
    pids = sorted({json.loads(r.body)["pid"] for r in replies})
    settle(server_pid)  # every instance idle (and frozen, where the server freezes idle instances)
    per = [smaps_rollup(pid) for pid in pids]
    pss = [p["Pss"] for p in per]
    mean = {f: round(statistics.fmean(p.get(f, 0.0) for p in per), 2) for f in FIELDS}
    return {"instances": len(pids), "pss_mean_mb": round(statistics.fmean(pss), 2), "pss_max_mb": round(max(pss), 2),
            "pss_total_mb": round(sum(pss), 2), "mean_mb": mean,
            "server_pss_mb": round(smaps_rollup(server_pid)["Pss"], 2)}


def run(opts: Any, shared: Shared) -> Result:
    started, t0 = now_iso(), time.monotonic()
    k = opts.functions or 20
    notes: list[str] = []
    with LoadGenerator() as gen:
        figures: dict[str, Any] = per_spawner(opts.spawners, opts.server_env, notes,
                                              lambda server: measure(server.url, k, opts.runtime, gen, server.pid))
    rows = [[s, str(f["instances"]), stats.mb(f["pss_mean_mb"]), stats.mb(f["pss_max_mb"]),
             stats.mb(f["mean_mb"]["Pss_Anon"]), stats.mb(f["mean_mb"]["Rss"]), stats.mb(f["pss_total_mb"]),
             stats.mb(f["server_pss_mb"])] for s, f in figures.items()]
    tables = [Table(f"Idle warm instances of {k} functions ({opts.runtime}), each invoked once",
                    ["spawner", "instances", "PSS mean", "PSS max", "PSS anon mean", "RSS mean", "PSS total",
                     "server PSS"], rows)]
    if "fork" in figures and "exec" in figures:
        ratio = figures["fork"]["pss_mean_mb"] / figures["exec"]["pss_mean_mb"]
        figures["fork_over_exec"] = round(ratio, 3)
        notes.append(f"fork/exec ratio of the mean PSS per idle instance: {ratio:.2f}")
    notes.append("server PSS is the faas server process alone (a zygote, if any, is not included)")
    return Result("memory", started, time.monotonic() - t0, {"functions": k, "spawners": opts.spawners,
                                                             "runtime": opts.runtime}, tables, notes, figures)
