"""`python -m benchmarks <scenario> [options]`: run scenarios, print tables, write JSON, append Markdown."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.machine import this_machine
from benchmarks.report import Result, Run, append_markdown, print_result, write_json
from benchmarks.scenarios import Shared, burst, cold, memory, open_loop, warm

SCENARIOS = {"cold": cold.run, "warm": warm.run, "open": open_loop.run, "memory": memory.run, "burst": burst.run}
SUMMARIES = {
    "cold": "first-invoke latency of new functions, split into spawn/init/handler, per spawner",
    "warm": "closed-loop throughput and latency at several concurrencies, against a bare aiohttp baseline",
    "open": "fixed-rate open loop at shares of the warm peak; latency from the scheduled send time",
    "memory": "PSS of idle warm instances, per spawner",
    "burst": "N concurrent invocations of a sleeping function: wall time, throttles, errors",
    "all": "every scenario above, in that order, at its default sizes unless options say otherwise",
}


def _list(kind: type):
    def parse(text: str) -> list:
        return [kind(part) for part in text.split(",") if part.strip()]
    return parse


def _server_env(settings: list[str]) -> dict[str, str]:
    env = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set wants TABLE.KEY=VALUE, got {setting!r}")
        env["FAAS_" + key.upper().replace(".", "__")] = value
    return env


def _options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    out = common.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="PATH",
                     help="where to write the JSON results (default benchmarks/results/<scenario>-<time>.json)")
    out.add_argument("--markdown", action="store_true", help="append a dated section to benchmarks/RESULTS.md")
    g = common.add_argument_group("scenario options (each used by the scenarios named)")
    g.add_argument("--runtime", default="python3.11", help="runtime of the functions deployed (all)")
    g.add_argument("--set", dest="settings", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="a server setting for every faas server started, as FAAS_TABLE__KEY=VALUE (TOML "
                        "value, e.g. --set account.memory_budget_mb=65536); repeatable (all)")
    g.add_argument("--functions", type=int, metavar="N",
                   help="functions created: cold (default 20), memory (default 20)")
    g.add_argument("--spawners", type=_list(str), default=["fork", "exec"], metavar="A,B",
                   help="spawners compared, each in its own server: cold, memory (default fork,exec)")
    g.add_argument("--spawner", help="runtime.spawner for warm, open, burst (default: the server's default)")
    g.add_argument("--concurrency", type=_list(int), default=[1, 2, 4, 8, 16], metavar="C,...",
                   help="warm: closed-loop concurrency levels (default 1,2,4,8,16)")
    g.add_argument("--duration", type=float, metavar="S",
                   help="seconds measured per level: warm (default 2), open (default 3)")
    g.add_argument("--warmup", type=float, default=0.5, metavar="S",
                   help="warm: seconds run, not counted, before each level (default 0.5)")
    g.add_argument("--payload-bytes", type=int, default=100, metavar="B",
                   help="warm, open: JSON request payload size (default 100)")
    g.add_argument("--rates", type=_list(float), default=[25.0, 50.0, 75.0], metavar="P,...",
                   help="open: rates as percentages of the warm peak (default 25,50,75)")
    g.add_argument("--rps", type=_list(float), metavar="R,...", help="open: absolute rates instead of --rates")
    g.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                   help="warm, open: the generator's HTTP client, its own keep-alive HTTP/1.1 (raw, default) or "
                        "aiohttp's ClientSession")
    g.add_argument("--invocations", type=int, default=200, metavar="N",
                   help="burst: concurrent invocations (default 200)")
    g.add_argument("--sleep", type=float, default=1.0, metavar="S", help="burst: seconds the function sleeps")
    g.add_argument("--rounds", type=int, default=2, metavar="R",
                   help="burst: bursts in a row; the first is cold, later ones warm (default 2)")

    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Benchmarks for faas; see benchmarks/README.md.")
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="scenario")
    for name, summary in SUMMARIES.items():
        sub.add_parser(name, parents=[common], help=summary, description=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = _options().parse_args(argv)
    opts.server_env = _server_env(opts.settings)
    names = list(SCENARIOS) if opts.scenario == "all" else [opts.scenario]
    machine = this_machine()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"machine: {machine.describe()}; load average {load}")
    if float(load.split()[0]) > machine.cores / 2:
        print(f"warning: the machine is busy (1-minute load {load.split()[0]} on {machine.cores} cores); "
              "figures will be lower and noisier than on an idle machine", file=sys.stderr)
    shared = Shared()
    results: list[Result] = []
    t0 = time.monotonic()
    failed = []
    for name in names:
        print(f"running {name} ...", flush=True)
        try:
            result = SCENARIOS[name](opts, shared)
        except Exception as exc:  # noqa: BLE001 - one scenario failing should not lose the others' figures
            if len(names) == 1:
                raise
            print(f"  {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        results.append(result)
        print_result(result)
    run = Run(" ".join(argv), machine, results, opts.server_env, load)
    path = write_json(run, opts.json)
    print(f"\nJSON: {path}  ({time.monotonic() - t0:.0f} s in all)")
    if opts.markdown and results:
        print(f"Markdown: appended to {append_markdown(run)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
