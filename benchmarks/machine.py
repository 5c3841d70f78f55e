"""A description of the machine a run was made on, from /proc and the interpreter."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import msgspec


class Machine(msgspec.Struct):
    cpu_model: str
    cores: int
    ram_gb: float
    arch: str
    kernel: str
    python: str

    def describe(self) -> str:
        return (f"{self.cpu_model}, {self.cores} cores, {self.ram_gb:.0f} GB RAM, {self.arch}, "
                f"Linux {self.kernel}, Python {self.python}")


def _proc_field(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""


def this_machine() -> Machine:
    mem_kb = _proc_field("/proc/meminfo", "MemTotal").split()
    return Machine(
        cpu_model=_proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU",
        cores=os.cpu_count() or 0,
        ram_gb=int(mem_kb[0]) / 1024 / 1024 if mem_kb else 0.0,
        arch=platform.machine(),
        kernel=platform.release(),
        python=platform.python_version(),
    )
