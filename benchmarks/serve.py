"""Start a faas server for a standalone benchmark script (`python benchmarks/<script>.py`)."""

from __future__ import annotations

import os
import subprocess
import sys


def start_server(data_dir: str, **settings: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m faas serve` on a free loopback port with a fresh data dir; `settings` are FAAS_* environment
    variables (e.g. FAAS_RUNTIME__SPAWNER='"exec"'). Returns the process and its URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "faas", "serve", "--port", "0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **settings},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("faas listening on "):
            return proc, line.split()[3]
    raise RuntimeError("server did not start")
