"""How a worker process is started: which program runs a runtime, with which environment."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import msgspec

WORKER_DIR = Path(__file__).resolve().parent / "worker"
PYTHON_BOOTSTRAP = WORKER_DIR / "python_bootstrap.py"
NODE_BOOTSTRAP = WORKER_DIR / "node_bootstrap.mjs"

# Reserved by Lambda: a function's own Environment may not set these.
RESERVED_ENV = frozenset(
    {
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    }
)


def _die_with_parent() -> tuple[str, ...]:
    """A prefix that makes an exec'd worker die with the server (PR_SET_PDEATHSIG): a worker frozen between
    invocations cannot notice its channel closing, so without it a killed server would leave it behind."""
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


DIE_WITH_PARENT = _die_with_parent()


def in_cgroup(cgroup: str | None, command: tuple[str, ...]) -> tuple[str, ...]:
    """Run `command` inside a cgroup from its first instruction: a shell moves itself there, then execs it
    (same pid), so neither the program nor anything it forks early escapes the limit."""
    if not cgroup:
        return command
    script = 'echo $$ > "$1/cgroup.procs" 2>/dev/null; shift; exec "$@"'
    return ("/bin/sh", "-c", script, "sh", cgroup, *command)


class Interpreter(msgspec.Struct, frozen=True):
    """A resolved program for a runtime: the real executable (shims resolved) and its version.
    Custom runtimes (provided.*) have none: the package's own `bootstrap` is the program."""

    runtime: str
    path: str
    version: str

    @property
    def family(self) -> str:
        return runtime_family(self.runtime)

    @property
    def root(self) -> str:
        """The installation the interpreter runs from (bin/python -> its prefix), for sandbox binds."""
        return str(Path(self.path).parent.parent) if self.path else ""

    def command(self, code_dir: str, opt_dir: str, task_root: str, opt_root: str, runtime_dir: str
                ) -> tuple[tuple[str, ...], str]:
        """argv that starts a worker, and the protocol it speaks. `code_dir`/`opt_dir` are where the files
        are on this host; `task_root`/`opt_root`/`runtime_dir` where the worker sees them."""
        family = self.family
        if family == "python":
            return (self.path, f"{runtime_dir}/{PYTHON_BOOTSTRAP.name}"), "jsonl"
        if family == "nodejs":
            return (self.path, f"{runtime_dir}/{NODE_BOOTSTRAP.name}"), "jsonl"
        # Lambda runs the package's bootstrap, or else one a layer put in /opt.
        if not (Path(code_dir) / "bootstrap").exists() and opt_dir and (Path(opt_dir) / "bootstrap").exists():
            return (f"{opt_root}/bootstrap",), "runtime-api"
        return (f"{task_root}/bootstrap",), "runtime-api"


def runtime_family(runtime: str) -> str:
    for family in ("python", "nodejs", "provided"):
        if runtime.startswith(family):
            return family
    return runtime


class RuntimeUnavailable(Exception):
    pass


class Interpreters:
    """Finds, once per runtime, the interpreter that serves it (config map, PATH, or this server's own)."""

    def __init__(self, configured: dict[str, str], *, python_fallback: bool = True):
        self._configured = configured
        self._python_fallback = python_fallback
        self._found: dict[str, Interpreter] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, runtime: str) -> Interpreter:
        found = self._found.get(runtime)
        if found is not None:
            return found
        async with self._lock:
            if runtime not in self._found:
                self._found[runtime] = await self._resolve(runtime)
            return self._found[runtime]

    async def _resolve(self, runtime: str) -> Interpreter:
        family = runtime_family(runtime)
        if family == "provided":
            return Interpreter(runtime, "", "")
        if family == "nodejs":
            return await self._resolve_node(runtime)
        if family != "python":
            raise RuntimeUnavailable(f"Runtime {runtime} is not supported by this server.")
        candidates = []
        if runtime in self._configured:
            candidates.append(self._configured[runtime])
        else:
            which = shutil.which(runtime)
            if which:
                candidates.append(which)
            candidates.extend(_pyenv_candidates(runtime))
            if self._python_fallback:
                candidates.append(sys.executable)
        for candidate in candidates:
            probed = await _probe_python(candidate)
            if probed is not None:
                return Interpreter(runtime, *probed)
        raise RuntimeUnavailable(f"No interpreter found for runtime {runtime}.")


    async def _resolve_node(self, runtime: str) -> Interpreter:
        program = self._configured.get(runtime) or shutil.which("node")
        if program:
            version = await _probe(program, "--version")
            if version:
                return Interpreter(runtime, str(Path(program).resolve()), version.strip().lstrip("v"))
        raise RuntimeUnavailable(f"No node binary found for runtime {runtime}.")


def _pyenv_candidates(runtime: str) -> list[str]:
    """Interpreters installed by pyenv but not selected as global (their shims then refuse to run)."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    version = runtime.removeprefix("python")
    if not root.is_dir():
        return []
    found = sorted(root.glob(f"{version}.*/bin/{runtime}"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])])
    return [str(p) for p in reversed(found)]


async def _probe(program: str, *args: str) -> str | None:
    """Run a program once and return what it printed, or None when it failed."""
    try:
        proc = await asyncio.create_subprocess_exec(
            program, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    except (OSError, asyncio.TimeoutError):
        return None
    return out.decode() if proc.returncode == 0 else None


async def _probe_python(program: str) -> tuple[str, str] | None:
    """Run the interpreter once to learn its real executable (pyenv and similar shims cost ~50 ms a start)."""
    out = await _probe(program, "-c", "import sys, platform; print(sys.executable); print(platform.python_version())")
    if out is None:
        return None
    lines = out.split()
    if len(lines) < 2:
        return None
    return lines[0], lines[1]


def reserved_keys(variables: dict[str, str]) -> list[str]:
    """The keys of a function's Environment that Lambda reserves for itself."""
    return sorted(k for k in variables if k in RESERVED_ENV)


def base_environment() -> dict[str, str]:
    """What a worker inherits from the server: PATH and locale, nothing secret."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LANG": "en_US.UTF-8"}
    for key in ("LD_LIBRARY_PATH", "SYSTEMROOT"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env
