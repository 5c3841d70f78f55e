"""How much the log writer holds up the event loop: the thread writer against the process writer
(`[logs] writer`), alternating in one run.

    python benchmarks/log_stall.py [--rate 6500] [--seconds 4] [--rounds 2] [--flush-interval 0.05]

An event loop (uvloop, the server's GIL switch interval) records `--rate` invocation logs a second into a
`LogStore` (a temporary file) for `--seconds`, between records doing nothing but yielding to the loop, and
measures the gap between its own passes. A saturated server's loop looks like this one: every stall the writer
causes is time the server cannot serve. Reported per writer: the loop's pass gaps (p99.9, max), the time lost to
gaps over 0.2 ms, and the loop thread's CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from faas.cli import SWITCH_INTERVAL
from faas.logs import invocation_log
from faas.store.logdb import LogSettings
from faas.store.logstore import LogStore

STALL = 0.0002


async def measure(process: bool, rate: float, seconds: float, flush_interval: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        store = LogStore(Path(tmp) / "logs.db", LogSettings(max_bytes=0, flush_interval=flush_interval),
                         process=process)
        await store.open()
        texts = [invocation_log(f"{n:08x}-0000-4000-8000-000000000000", "$LATEST", b"", duration_ms=0.5,
                                memory_mb=128, max_memory_used_mb=30) for n in range(1000)]
        sent, gaps = 0, []
        start = last = time.perf_counter()
        cpu = time.thread_time()
        while (now := time.perf_counter()) - start < seconds:
            gaps.append(now - last)
            last = now
            while sent < int((now - start) * rate):
                store.record("noop", "/aws/lambda/noop", "2026/01/01/[$LATEST]0123456789abcdef",
                             texts[sent % len(texts)], time.time())
                sent += 1
            await asyncio.sleep(0)
        cpu = time.thread_time() - cpu
        await store.close()
    gaps.sort()
    lost = sum(g for g in gaps if g > STALL)
    return (f"{'process' if process else 'thread':8} {sent:>8,} {gaps[int(len(gaps) * 0.999)] * 1e3:>9.3f} "
            f"{gaps[-1] * 1e3:>8.2f} {lost * 1e3:>14.1f} {cpu:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=6500, help="invocation logs recorded per second")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each writer, alternating")
    parser.add_argument("--flush-interval", type=float, default=LogSettings().flush_interval)
    args = parser.parse_args()
    sys.setswitchinterval(SWITCH_INTERVAL)
    print(f"{args.rate:,.0f} logs/s for {args.seconds:g} s, flush every {args.flush_interval:g} s")
    print(f"{'writer':8} {'records':>8} {'gap p99.9':>9} {'gap max':>8} {'lost >0.2 ms':>14} {'loop CPU':>10}")
    for _ in range(args.rounds):
        for process in (False, True):
            print(uvloop.run(measure(process, args.rate, args.seconds, args.flush_interval)), flush=True)
    print("(gaps and lost time in ms; loop CPU in s: the loop never sleeps, so it is the measured time)")


if __name__ == "__main__":
    main()
