"""What a scenario reports, and its three renderings: a text table, JSON, and a section of RESULTS.md."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.machine import Machine

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"


class Table(msgspec.Struct):
    title: str
    columns: list[str]
    rows: list[list[str]]


class Result(msgspec.Struct):
    """One scenario's run: readable tables and notes, the figures as numbers (`data`), and its options."""

    scenario: str
    started: str
    seconds: float
    options: dict[str, Any]
    tables: list[Table] = []
    notes: list[str] = []
    data: dict[str, Any] = {}


class Run(msgspec.Struct):
    command: str
    machine: Machine
    results: list[Result]
    server_settings: dict[str, str] = {}
    load_average: str = ""  # /proc/loadavg when the run started: other work on a shared machine skews figures


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _widths(table: Table) -> list[int]:
    return [max(len(c), *(len(r[i]) for r in table.rows)) if table.rows else len(c)
            for i, c in enumerate(table.columns)]


def text_table(table: Table) -> str:
    widths = _widths(table)
    first = [table.columns[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(table.columns[1:], widths[1:])]
    lines = [table.title, "  " + "  ".join(first), "  " + "  ".join("-" * w for w in widths)]
    for row in table.rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def markdown_table(table: Table) -> str:
    lines = [f"| {' | '.join(table.columns)} |", "|" + "---|" * len(table.columns)]
    lines += [f"| {' | '.join(row)} |" for row in table.rows]
    return "\n".join(lines)


def print_result(result: Result) -> None:
    print(f"\n== {result.scenario} ({result.seconds:.1f} s)")
    for table in result.tables:
        print()
        print(text_table(table))
    for note in result.notes:
        print(f"  note: {note}")


def write_json(run: Run, path: Path | None) -> Path:
    if path is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"{run.command.split()[0]}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(run), indent=2) + b"\n")
    return path


def markdown_section(run: Run) -> str:
    date = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"## {date}: `python -m benchmarks {run.command}`", "", f"Machine: {run.machine.describe()}."]
    if run.load_average:
        parts[-1] += f" Load average at the start: {run.load_average}."
    if run.server_settings:
        parts[-1] += " Server settings: " + ", ".join(f"`{k}={v}`" for k, v in run.server_settings.items()) + "."
    for result in run.results:
        parts += ["", f"### {result.scenario}", ""]
        for table in result.tables:
            parts += [f"{table.title}", "", markdown_table(table), ""]
        parts += [f"- {note}" for note in result.notes]
    return "\n".join(parts).rstrip() + "\n"


def append_markdown(run: Run, path: Path = RESULTS_MD) -> Path:
    existing = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(existing.rstrip() + "\n\n" + markdown_section(run))
    return path
