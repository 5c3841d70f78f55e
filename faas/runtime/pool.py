"""Warm instances per function version, the account's concurrency, and the idle reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import datetime, timezone

from faas.runtime.instance import Instance, InstanceSpec
from faas.runtime.runtime_api import RuntimeApiInstance

log = logging.getLogger(__name__)

# (function name, version, revision id): a configuration change is a new pool; the old one drains.
PoolKey = tuple[str, str, str]


class Throttled(Exception):
    """No concurrency left: the caller answers 429."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def log_stream_name(version: str) -> str:
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    return f"{day}/[{version}]{uuid.uuid4().hex}"


class _Pool:
    def __init__(self) -> None:
        self.idle: list[Instance] = []  # most recently used last
        self.busy: set[Instance] = set()


class Pools:
    """Hands out instances: the most recently used idle one, or a new one (a cold start)."""

    def __init__(self, *, concurrency: int, idle_timeout: float, reap_interval: float):
        self.concurrency = concurrency
        self.idle_timeout = idle_timeout
        self.reap_interval = reap_interval
        self._pools: dict[PoolKey, _Pool] = {}
        self._running = 0
        self._retired: set[Instance] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> int:
        return self._running

    def instance_count(self, name: str | None = None) -> int:
        return sum(
            len(p.idle) + len(p.busy) for key, p in self._pools.items() if name is None or key[0] == name
        )

    async def acquire(self, key: PoolKey, spec: InstanceSpec, env: dict[str, str]) -> tuple[Instance, bool]:
        """An instance for `key` and whether it was started for this call (cold)."""
        if self._closing:
            raise Throttled("ServerShuttingDown")
        if self._running >= self.concurrency:
            raise Throttled("ConcurrentInvocationLimitExceeded")
        self._running += 1
        pool = self._pools.setdefault(key, _Pool())
        while pool.idle:
            instance = pool.idle.pop()
            if instance.alive:
                pool.busy.add(instance)
                return instance, False
            await instance.stop()
        instance = RuntimeApiInstance(spec) if spec.protocol == "runtime-api" else Instance(spec)
        pool.busy.add(instance)
        try:
            await instance.start(env, log_stream_name(key[1]))
        except BaseException:
            pool.busy.discard(instance)
            self._running -= 1
            await asyncio.shield(instance.stop())
            raise
        return instance, True

    async def release(self, key: PoolKey, instance: Instance, reusable: bool) -> None:
        self._running -= 1
        pool = self._pools.get(key)
        if pool is not None:
            pool.busy.discard(instance)
        if reusable and instance.alive and pool is not None and instance not in self._retired and not self._closing:
            instance.last_used = time.monotonic()
            pool.idle.append(instance)
            return
        self._retired.discard(instance)
        await instance.stop()

    async def retire(self, name: str, version: str | None = None) -> None:
        """Stop a function's instances, or one version's (after an update or delete); busy ones stop
        when released."""
        stopping = []
        for key in [k for k in self._pools if k[0] == name and version in (None, k[1])]:
            pool = self._pools.pop(key)
            stopping.extend(pool.idle)
            self._retired.update(pool.busy)
        await asyncio.gather(*(i.stop() for i in stopping))

    async def run_once(self, now: float | None = None) -> int:
        """Stop instances idle longer than the keep-alive. Returns how many were stopped."""
        now = time.monotonic() if now is None else now
        stale = []
        for key, pool in list(self._pools.items()):
            keep = [i for i in pool.idle if now - i.last_used < self.idle_timeout and i.alive]
            stale.extend(i for i in pool.idle if i not in keep)
            pool.idle = keep
            if not pool.idle and not pool.busy:
                del self._pools[key]
        await asyncio.gather(*(i.stop() for i in stale))
        return len(stale)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.run_once()
            except Exception:  # the reaper must outlive one bad stop
                log.exception("idle reaper pass failed")

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="faas-idle-reaper")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, let busy instances finish for up to `timeout`, then stop everything."""
        if self._closing:
            return
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        everything = [i for p in self._pools.values() for i in (*p.idle, *p.busy)]
        self._pools.clear()
        await asyncio.gather(*(i.stop(grace_s=0.5) for i in everything), return_exceptions=True)
