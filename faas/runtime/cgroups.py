"""A memory cgroup per instance, so `MemorySize` is a hard limit and the kernel's OOM killer (not the whole
machine) answers a function that outgrows it. Works with cgroup v2 (`memory.max`) or the v1 memory
controller (`memory.limit_in_bytes`), wherever this process may create cgroups; otherwise limits are not
enforced and the server says so once at start-up."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class MemoryCgroups:
    """Per-instance cgroups under one parent (`faas-<pid>`) that the server removes when it closes."""

    def __init__(self, parent: Path, version: int):
        self.parent = parent
        self.version = version

    @classmethod
    def detect(cls, root: Path = Path("/sys/fs/cgroup")) -> MemoryCgroups | None:
        name = f"faas-{os.getpid()}"
        candidates = []
        if (root / "cgroup.controllers").exists():
            candidates.append((cls._v2_parent(root) / name, 2))
        if (root / "memory" / "memory.limit_in_bytes").exists():
            candidates.append((root / "memory" / name, 1))
        for parent, version in candidates:
            cls._sweep(parent.parent)
            try:
                parent.mkdir(exist_ok=True)
                probe = cls(parent, version)
                test = probe.create("probe", 64 * 1024 * 1024)
                probe.remove(test)
                return probe
            except OSError as exc:
                log.debug("cgroup %s not usable: %s", parent, exc)
                with contextlib.suppress(OSError):
                    parent.rmdir()
        log.warning("memory cgroups are not available here: MemorySize is not enforced")
        return None

    @staticmethod
    def _sweep(root: Path) -> None:
        """Remove the cgroups of faas servers that died without closing theirs (a SIGKILL)."""
        with contextlib.suppress(OSError):
            for stale in root.glob("faas-*"):
                pid = stale.name.removeprefix("faas-")
                if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                    continue
                for child in stale.glob("*"):
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    stale.rmdir()

    @staticmethod
    def _v2_parent(root: Path) -> Path:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    return root / line[3:].lstrip("/")
        return root

    def create(self, name: str, limit_bytes: int) -> Path:
        path = self.parent / name
        path.mkdir(exist_ok=True)
        if self.version == 2:
            (path / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swappiness").write_text("0")
        return path

    def add(self, path: Path, pid: int) -> None:
        (path / "cgroup.procs").write_text(str(pid))

    def oom_killed(self, path: Path) -> bool:
        """Whether the kernel killed a process of this cgroup for exceeding its limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        if self.version == 1:
            with contextlib.suppress(OSError, ValueError):
                return int((path / "memory.failcnt").read_text()) > 0 and not self._has_procs(path)
        return False

    def peak_mb(self, path: Path) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError):
            return -(-int((path / name).read_text()) // (1024 * 1024))
        return 0

    @staticmethod
    def _has_procs(path: Path) -> bool:
        with contextlib.suppress(OSError):
            return bool((path / "cgroup.procs").read_text().strip())
        return False

    def remove(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            path.rmdir()

    def close(self) -> None:
        for child in self.parent.glob("*"):
            if child.is_dir():
                self.remove(child)
        with contextlib.suppress(OSError):
            self.parent.rmdir()
