"""Optional isolation of instances with bubblewrap: each worker in its own mount, PID, IPC and UTS
namespaces, seeing the code read-only at /var/task, layers read-only at /opt, its runtime at /var/runtime, a
private /tmp sized by EphemeralStorage, the system's /usr and /etc, and nothing of the data dir."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import msgspec

TASK_ROOT = "/var/task"
OPT_ROOT = "/opt"
RUNTIME_ROOT = "/var/runtime"


class SandboxUnavailable(Exception):
    pass


class Sandbox(msgspec.Struct, frozen=True):
    """How instances are isolated. `bwrap` is the path of bubblewrap; empty means no sandbox."""

    bwrap: str = ""
    network: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.bwrap)

    def prefix(
        self, *, code_dir: str, opt_dir: str, runtime_dir: str, program_roots: list[str], tmp_bytes: int,
        network: bool | None = None,
    ) -> tuple[str, ...]:
        """The bwrap argv that runs a command inside the sandbox."""
        args = [self.bwrap, "--die-with-parent", "--unshare-ipc", "--unshare-uts", "--unshare-pid",
                "--unshare-cgroup-try"]
        if not (self.network if network is None else network):
            args.append("--unshare-net")
        for system in ("/usr", "/etc"):
            args += ["--ro-bind", system, system]
        for top in ("bin", "lib", "lib32", "lib64", "sbin"):
            path = Path("/") / top
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        for root in program_roots:
            if root and not root.startswith(("/usr/", "/bin/", "/lib")) and Path(root).exists():
                args += ["--ro-bind", root, root]
        args += ["--ro-bind", code_dir, TASK_ROOT, "--ro-bind", runtime_dir, RUNTIME_ROOT]
        if opt_dir:
            args += ["--ro-bind", opt_dir, OPT_ROOT]
        args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev",
                 "--chdir", TASK_ROOT]
        return tuple(args)


def detect(kind: str, network: bool) -> Sandbox:
    """The configured sandbox, checked once at start-up: a clear error if it is asked for and cannot run."""
    if kind in ("", "none"):
        return Sandbox()
    if kind != "bwrap":
        raise SandboxUnavailable(f'unknown sandbox "{kind}" (use "none" or "bwrap")')
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            'sandbox = "bwrap" needs bubblewrap, which is not installed (apt-get install bubblewrap)'
        )
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--dev", "/dev", "true"],
        capture_output=True, text=True, timeout=30,
    )
    if probe.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot create namespaces here: {probe.stderr.strip()}")
    return Sandbox(bwrap=bwrap, network=network)
