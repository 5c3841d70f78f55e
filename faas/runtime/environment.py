"""The environment a function's worker starts with, as Lambda sets it, per runtime family."""

from __future__ import annotations

import msgspec

from faas.runtime.spawner import Interpreter, base_environment
from faas.store.records import FunctionVersion


class Paths(msgspec.Struct, frozen=True):
    """Where the worker sees its code, layers and runtime: host paths, or /var/task, /opt and
    /var/runtime inside a sandbox. `opt_root` is empty when the function has no layers."""

    task_root: str
    runtime_dir: str
    opt_root: str = ""


def function_environment(
    fv: FunctionVersion, interpreter: Interpreter, paths: Paths, *, region: str, endpoint_url: str,
) -> dict[str, str]:
    cfg = fv.config
    env = base_environment()
    opt = paths.opt_root
    if opt:
        env["PATH"] = f"{env['PATH']}:{opt}/bin"
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, (env.get("LD_LIBRARY_PATH"), f"{opt}/lib")))
    family = interpreter.family
    if family == "python":
        major_minor = ".".join(interpreter.version.split(".")[:2]) or (cfg.runtime or "").removeprefix("python")
        search = [paths.task_root]
        if opt:
            search += [f"{opt}/python/lib/python{major_minor}/site-packages", f"{opt}/python"]
        env.update(PYTHONPATH=":".join(search), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    elif family == "nodejs":
        major = interpreter.version.split(".")[0]
        modules = [f"{opt}/nodejs/node{major}/node_modules", f"{opt}/nodejs/node_modules"] if opt else []
        env["NODE_PATH"] = ":".join([*modules, paths.runtime_dir, paths.task_root])
    env.update(cfg.environment or {})
    env.update(
        AWS_LAMBDA_FUNCTION_NAME=fv.function_name,
        AWS_LAMBDA_FUNCTION_VERSION=fv.version,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(cfg.memory_size),
        AWS_LAMBDA_LOG_GROUP_NAME=cfg.logging.log_group or f"/aws/lambda/{fv.function_name}",
        AWS_LAMBDA_INITIALIZATION_TYPE="on-demand",
        AWS_REGION=region,
        AWS_DEFAULT_REGION=region,
        AWS_EXECUTION_ENV=f"AWS_Lambda_{cfg.runtime}",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_SESSION_TOKEN="test",
        AWS_ENDPOINT_URL=endpoint_url,
        LAMBDA_TASK_ROOT=paths.task_root,
        LAMBDA_RUNTIME_DIR=paths.runtime_dir,
        _HANDLER=cfg.handler or "",
        TZ=":UTC",
    )
    if cfg.logging.application_log_level:
        env["AWS_LAMBDA_LOG_LEVEL"] = cfg.logging.application_log_level
    env["AWS_LAMBDA_LOG_FORMAT"] = cfg.logging.log_format
    return env
