"""`faas serve`: the command line. Signal handlers live here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from faas import cli_logs
from faas.config import Config, load_config
from faas.runtime.sandbox import SandboxUnavailable

log = logging.getLogger("faas")

SWITCH_INTERVAL = 0.0005  # seconds; see serve()


async def serve(config: Config, stop: asyncio.Event) -> None:
    """Run the server until `stop` is set, then shut down: stop accepting, drain, close services."""
    from faas.api.front import BACKLOG, FrontSite
    from faas.app import create_app

    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=config.server.shutdown_timeout,
                           keepalive_timeout=config.server.keepalive_timeout)
    try:
        await runner.setup()
    except BaseException as exc:
        # Services that did start (the database, the pools) are closed before the process exits.
        await runner.cleanup()
        if isinstance(exc, SandboxUnavailable):
            raise SystemExit(f"faas: {exc}") from None
        raise
    try:
        site: web.TCPSite
        if config.server.invoke_front:
            site = FrontSite(runner, config.server.host, config.server.port, config.server.shutdown_timeout,
                             config.server.keepalive_timeout)
        else:
            site = web.TCPSite(runner, config.server.host, config.server.port, reuse_address=True, backlog=BACKLOG)
        await site.start()
        if config.server.port == 0:
            config.server.port = runner.addresses[0][1]
        # Everything loaded so far (the service models above all) lives as long as the server: keep it out of
        # the cyclic collector's passes, whose full scans would otherwise stall the event loop for milliseconds.
        gc.collect()
        gc.freeze()
        # The event loop shares the GIL with SQLite's thread (and the log writer's, with logs.writer = "thread").
        # A thread doing Python work keeps the GIL until the switch interval asks for it back, 5 ms by default:
        # with the log writer's thread (a batch, ~2 ms) that was the open loop's tail latency (p99 7-17 ms at
        # 3,400/s, 3.1-3.8 ms with 0.5 ms).
        sys.setswitchinterval(SWITCH_INTERVAL)
        # Tests and scripts wait for this line (or poll /health).
        print(f"faas listening on {config.base_url} (data dir {config.data_path})", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def _run_serve(args: argparse.Namespace) -> None:
    overrides: dict = {"server": {}}
    for flag, key in (("host", "host"), ("port", "port"), ("data_dir", "data_dir")):
        value = getattr(args, flag)
        if value is not None:
            overrides["server"][key] = value
    config = load_config(args.config, overrides=overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="faas", description="A self-hosted, AWS Lambda-compatible function platform.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the server")
    p_serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p_serve.add_argument("--port", type=int, help="port to bind (default 9000; 0 picks a free one)")
    p_serve.add_argument("--data-dir", help="where the registry and code live (default ./.faas)")
    p_serve.add_argument("--config", help="a TOML file; see config.example.toml")
    cli_logs.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        _run_serve(args)
    elif args.command == "logs":
        sys.exit(cli_logs.run(args))
    else:  # pragma: no cover - argparse rejects unknown commands
        parser.print_help()
        sys.exit(2)
