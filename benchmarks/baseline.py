"""The HTTP floor: a bare aiohttp server, run the way faas runs (uvloop, no access log), whose one route
answers the Invoke path with a fixed JSON body after reading the request body.

    python -m benchmarks.baseline --port 0 --body '{"ok":true}'

prints `baseline listening on http://127.0.0.1:PORT` when it accepts requests; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web


def make_app(body: bytes) -> web.Application:
    async def invoke(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json",
                            headers={"X-Amz-Executed-Version": "$LATEST"})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
    app.router.add_get("/health", health)
    return app


async def serve(port: int, body: bytes) -> None:
    runner = web.AppRunner(make_app(body), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        print(f"baseline listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.baseline")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--body", default='{"ok":true}')
    args = ap.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(args.port, args.body.encode()))


if __name__ == "__main__":
    main()
