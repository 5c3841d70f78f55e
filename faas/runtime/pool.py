"""Execution environments per function version, and the limits on them: account and reserved concurrency,
provisioned instances, a memory budget, the scale-up rate, keep-alive, maximum lifetime and freezing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from faas.runtime.cgroups import MemoryCgroups
from faas.runtime.instance import Instance, InstanceSpec
from faas.runtime.runtime_api import RuntimeApiInstance

log = logging.getLogger(__name__)

# (function name, version, revision id): a configuration change is a new pool; the old one drains.
PoolKey = tuple[str, str, str]


class Throttled(Exception):
    """No capacity for this invocation: the caller answers 429 with `reason` (Lambda's ThrottleReason)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _run_as_batch(pid: int) -> None:
    """Put a new instance under SCHED_BATCH. A woken SCHED_BATCH task never preempts the one running on its
    CPU, so handing an instance its invocation does not switch the server's event loop out mid-pass: the
    loop finishes the pass (answering and dispatching other requests) and the instances run when it waits,
    or on another CPU. Their share of the CPU is unchanged (same nice level), and the server needs no
    privilege to lower its children's policy. Threads the worker already has keep their policy."""
    with contextlib.suppress(OSError):
        os.sched_setscheduler(pid, os.SCHED_BATCH, os.sched_param(0))


def log_stream_name(version: str) -> str:
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    return f"{day}/[{version}]{uuid.uuid4().hex}"


@dataclass(eq=False)
class _Meta:
    key: PoolKey
    memory_mb: int
    provisioned_for: str | None = None  # the qualifier whose provisioned concurrency this instance serves
    frozen: bool = False
    cgroup: Path | None = None  # its memory cgroup, where MemorySize is enforced


@dataclass
class _Pool:
    idle: list[Instance] = field(default_factory=list)  # on-demand, most recently used last
    provisioned: dict[str, list[Instance]] = field(default_factory=dict)  # qualifier -> idle provisioned
    busy: set[Instance] = field(default_factory=set)
    # Invocations waiting for a busy instance to come free (see Limits.queue_wait) or, while max_starting cold
    # starts are in progress, for a start slot (a None result).
    waiters: collections.deque[asyncio.Future[Instance | None]] = field(default_factory=collections.deque)
    busy_since: dict[Instance, float] = field(default_factory=dict)
    # How long this pool's invocations hold an instance, at the quick end: a minimum that creeps up by half per
    # second, so it follows a function that gets slower but not the queueing delays of a busy server (which
    # stretch every hold time alike and would make a short function look long).
    quickest_s: float | None = None
    quickest_at: float = 0.0  # when it was last updated
    typical_s: float | None = None  # their moving average
    starting: int = 0  # instances being started for invocations (cold starts in progress)
    released_at: float = 0.0  # when an invocation last gave back one of this pool's instances
    slot_waiters: set[asyncio.Future[Instance | None]] = field(default_factory=set)  # of `waiters`: want a slot


@dataclass
class _Bucket:
    """Token bucket bounding how fast one function adds instances."""

    tokens: float
    stamp: float


@dataclass
class Limits:
    concurrency: int = 1000
    minimum_unreserved: int = 100
    memory_budget_mb: int = 0  # 0: no budget
    idle_timeout: float = 600.0
    max_lifetime: float = 4 * 3600.0
    reap_interval: float = 5.0
    scale_burst: int = 1000  # instances a function may add at once
    scale_rate: float = 100.0  # ... and per second after that
    freeze: bool = True
    # Seconds an instance must stay idle before it is frozen: back-to-back invocations skip the two signals
    # (and the scheduler work they cause) that freezing and thawing cost.
    freeze_after: float = 0.05
    # When every instance is busy and invocations of the function are short (twice the quickest hold time fits
    # in this many seconds), wait twice that time for one to come free before starting another, and longer
    # (up to ten times this) while instances still come free but the machine is the limit (the event loop is
    # behind, or hold times are stretched far past the quickest): on a small machine a cold start costs more
    # than a short wait, and when the server is the bottleneck, starting one per queued request only feeds a
    # storm of them.
    queue_wait: float = 0.02
    # Cold starts one function may have in progress at once; further invocations wait for one of them to finish
    # or for a busy instance to come free, whichever is first. Starting more at once than the machine can run
    # only slows every start (and every running invocation) down: after a stall, a backlog of requests would
    # otherwise become as many cold starts, which deepen the backlog.
    max_starting: int = 8
    cgroups: MemoryCgroups | None = None  # None: MemorySize is not enforced
    batch_scheduling: bool = True  # instances run under SCHED_BATCH (see `_run_as_batch`)


async def _until(future: asyncio.Future[Any], timeout: float) -> None:
    """Wait until `future` is done or `timeout` seconds pass, whichever comes first; `future` itself is left
    alone (asyncio.wait does the same with sets and more callbacks: it showed under hundreds of waiters)."""
    if future.done():
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout, wake)
    future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)


class Pools:
    """Hands out instances: a provisioned one for the qualifier, the most recently used idle one, or a new
    one (a cold start), within the account's and the function's limits."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.reserved: dict[str, int] = {}
        self._pools: dict[PoolKey, _Pool] = {}
        self._meta: dict[Instance, _Meta] = {}
        self._running: Counter[str] = Counter()
        self._running_unreserved = 0
        self._memory_mb = 0
        self._buckets: dict[str, _Bucket] = {}
        self._retired: set[Instance] = set()
        # Idle instances not frozen yet, with when they were released; one timer freezes them when due.
        self._thawed: dict[Instance, float] = {}
        self._freezing: asyncio.TimerHandle | None = None
        self._cgroups_to_remove: list[Path] = []
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False

    # -- what the rest of the server reads ----------------------------------------------------------

    @property
    def running(self) -> int:
        return sum(self._running.values())

    def running_for(self, name: str) -> int:
        return self._running[name]

    @property
    def memory_in_use_mb(self) -> int:
        return self._memory_mb

    def unreserved_limit(self) -> int:
        return self.limits.concurrency - sum(self.reserved.values())

    def instance_count(self, name: str | None = None) -> int:
        return sum(1 for m in self._meta.values() if name is None or m.key[0] == name)

    def provisioned_count(self, name: str, qualifier: str) -> int:
        """Provisioned instances alive for a function's qualifier, idle or busy."""
        return sum(1 for i, m in self._meta.items()
                   if m.key[0] == name and m.provisioned_for == qualifier and i.alive)

    def provisioned_busy(self, name: str, qualifier: str) -> int:
        return sum(1 for key, pool in self._pools.items() if key[0] == name
                   for i in pool.busy if self._meta[i].provisioned_for == qualifier)

    # -- admission ----------------------------------------------------------------------------------

    def _admit(self, name: str) -> None:
        if self._closing:
            raise Throttled("ServerShuttingDown")
        reserved = self.reserved.get(name)
        if reserved is not None:
            if self._running[name] >= reserved:
                raise Throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
        elif self._running_unreserved >= self.unreserved_limit():
            raise Throttled("ConcurrentInvocationLimitExceeded")
        self._running[name] += 1
        if reserved is None:
            self._running_unreserved += 1

    def _leave(self, name: str) -> None:
        self._running[name] -= 1
        if self._running[name] <= 0:
            del self._running[name]
        if name not in self.reserved:
            self._running_unreserved -= 1

    def _take_token(self, name: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = _Bucket(float(self.limits.scale_burst), now)
        bucket.tokens = min(float(self.limits.scale_burst), bucket.tokens + (now - bucket.stamp) * self.limits.scale_rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    async def _make_room(self, name: str, memory_mb: int) -> None:
        """Keep the memory budget: evict idle on-demand instances of other functions, least recently used
        first. Raises Throttled when that is not enough."""
        budget = self.limits.memory_budget_mb
        if not budget or self._memory_mb + memory_mb <= budget:
            return
        candidates = sorted(
            ((i, key) for key, pool in self._pools.items() if key[0] != name for i in pool.idle),
            key=lambda item: item[0].last_used,
        )
        evicted = []
        for instance, key in candidates:
            if self._memory_mb + memory_mb <= budget:
                break
            self._pools[key].idle.remove(instance)
            self._forget(instance)
            evicted.append(instance)
        if evicted:
            log.info("memory budget: evicting %d idle instance(s) for %s", len(evicted), name)
            await asyncio.gather(*(self._stop(i) for i in evicted))
        if self._memory_mb + memory_mb > budget:
            raise Throttled("ConcurrentInvocationLimitExceeded")

    # -- instances ----------------------------------------------------------------------------------

    def _expired(self, instance: Instance, now: float) -> bool:
        return now - instance.started_at >= self.limits.max_lifetime or not instance.alive

    async def _spawn(self, key: PoolKey, spec: InstanceSpec, env: dict[str, str], provisioned_for: str | None) -> Instance:
        await self._make_room(key[0], spec.memory_mb)
        instance = RuntimeApiInstance(spec) if spec.protocol == "runtime-api" else Instance(spec)
        meta = self._meta[instance] = _Meta(key, spec.memory_mb, provisioned_for)
        self._memory_mb += spec.memory_mb
        on_spawn = [_run_as_batch] if self.limits.batch_scheduling else []
        cgroups = self.limits.cgroups
        if cgroups is not None:
            try:
                # A sandbox's /tmp is a tmpfs, whose pages count as the instance's memory.
                path = meta.cgroup = cgroups.create(instance.id, (spec.memory_mb + spec.tmp_mb) * 1024 * 1024)
                instance.cgroup = str(path)
                on_spawn.append(lambda pid: cgroups.add(path, pid))
            except OSError:
                log.warning("could not create a memory cgroup for %s", key[0], exc_info=True)
        if on_spawn:
            def spawned(pid: int) -> None:
                for hook in on_spawn:
                    hook(pid)

            instance.on_spawn = spawned
        try:
            await instance.start(env, log_stream_name(key[1]))
        except BaseException:
            self._forget(instance)
            await asyncio.shield(instance.stop())
            raise
        return instance

    async def acquire(
        self, key: PoolKey, spec: InstanceSpec, env: dict[str, str], qualifier: str | None = None
    ) -> tuple[Instance, bool]:
        """An instance for `key` and whether it was started for this call (a cold start)."""
        name = key[0]
        self._admit(name)
        try:
            pool = self._pools.setdefault(key, _Pool())
            now = time.monotonic()
            stale = []
            found = None
            for bucket in ([pool.provisioned.get(qualifier, [])] if qualifier else []) + [pool.idle]:
                while bucket and found is None:
                    candidate = bucket.pop()
                    if self._meta[candidate].provisioned_for is None and self._expired(candidate, now):
                        stale.append(candidate)
                    elif candidate.alive:
                        found = candidate
                    else:
                        stale.append(candidate)
                if found:
                    break
            for instance in stale:
                self._forget(instance)
            if stale:
                await asyncio.gather(*(self._stop(i) for i in stale))
            if found is not None:
                self._take(pool, found)
                return found, False
            handed = await self._wait_for_release(pool)
            # A short function's instance serves hundreds of invocations a second: one start at a time adds
            # capacity fast enough, where several at once would take the CPU the running ones need.
            cap = 1 if self._short(pool) else self.limits.max_starting
            while handed is None and pool.starting >= cap:
                handed = await self._wait(pool)  # a busy instance came free, or a start slot did (None)
                if handed is None and pool.idle and pool.idle[-1].alive:
                    handed = pool.idle.pop()  # put back by an invocation that gave up its hand-over
            if handed is not None:
                self._take(pool, handed)  # not frozen: thawing only marks it taken, so no freeze is due
                return handed, False
            if not self._take_token(name):
                raise Throttled("FunctionInvocationRateLimitExceeded")
            pool.starting += 1
            try:
                instance = await self._spawn(key, spec, env, None)
            finally:
                pool.starting -= 1
                self._hand_over(pool, None)  # a start slot is free: the first waiter may use it
            self._pools.setdefault(key, pool).busy.add(instance)
            pool.busy_since[instance] = time.monotonic()
            return instance, True
        except BaseException:
            self._leave(name)
            raise

    def _take(self, pool: _Pool, instance: Instance) -> None:
        """An invocation has `instance`: thawed, busy, and held since now (or since it was handed over)."""
        self._thaw(instance)
        pool.busy.add(instance)
        pool.busy_since.setdefault(instance, time.monotonic())

    def _hand_over(self, pool: _Pool, instance: Instance | None) -> bool:
        """Wake the first invocation still waiting on `pool` with a free instance, or, with None, the first
        one waiting for a start slot (one came free). False when nobody took it."""
        for waiter in pool.waiters:
            if not waiter.done() and (instance is not None or waiter in pool.slot_waiters):
                pool.waiters.remove(waiter)
                if instance is not None:
                    # Busy from now: the waiting invocation may not run for a while when the loop is behind.
                    pool.busy.add(instance)
                    pool.busy_since[instance] = time.monotonic()
                waiter.set_result(instance)
                return True
        return False

    async def _wait(self, pool: _Pool, timeout: float | None = None) -> Instance | None:
        """Wait for `_hand_over`: an instance or, without a `timeout`, a start slot (None). After `timeout`
        (an instance was all that would do), None."""
        future = self._enlist(pool, slot=timeout is None)
        gone = True
        try:
            if timeout is None:
                handed = await future
            else:
                await _until(future, timeout)
                # Handed over just as the wait ended, or not at all (None).
                handed = future.result() if future.done() and not future.cancelled() else None
            gone = False
            return handed
        finally:
            self._withdraw(pool, future, gone)

    def _enlist(self, pool: _Pool, slot: bool) -> asyncio.Future[Instance | None]:
        """Join the pool's waiters (FIFO): for a freed instance, and with `slot` for a start slot too."""
        future: asyncio.Future[Instance | None] = asyncio.get_running_loop().create_future()
        pool.waiters.append(future)
        if slot:
            pool.slot_waiters.add(future)
        return future

    def _withdraw(self, pool: _Pool, future: asyncio.Future[Instance | None], gone: bool) -> None:
        """Leave the waiters. `gone`: the invocation is not going to use what it may have been handed (it was
        cancelled, or failed), so an instance goes to the next waiter (or back to idle) and a slot is passed on."""
        if gone and future.done() and not future.cancelled():
            handed = future.result()
            if handed is not None:
                pool.busy.discard(handed)
                pool.busy_since.pop(handed, None)
                if not self._hand_over(pool, handed):
                    self._freeze_later(handed)
                    pool.idle.append(handed)
            else:
                self._hand_over(pool, None)
        if not future.done():
            future.cancel()
        pool.slot_waiters.discard(future)
        if future in pool.waiters:  # not when handed over (deque.remove's ValueError would repr the future)
            pool.waiters.remove(future)

    def _short(self, pool: _Pool) -> bool:
        """Whether the pool's function is short: twice its quickest invocation fits in queue_wait."""
        wait = self.limits.queue_wait
        return wait > 0 and pool.quickest_s is not None and 2 * pool.quickest_s <= wait

    async def _wait_for_release(self, pool: _Pool) -> Instance | None:
        """For short functions, a moment's wait for a busy instance (see Limits.queue_wait). None: start one
        (or a start slot came free)."""
        quickest = pool.quickest_s
        wait = self.limits.queue_wait
        if not pool.busy or quickest is None or not self._short(pool):
            return None
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10 * wait  # however things look, start one after this long
        # One place in the queue for the whole wait (first come, first handed), looked at again after 2x the
        # quickest hold, then after doubling intervals up to queue_wait: under an overload hundreds of
        # invocations wait, and re-arming each one's timer every fraction of a millisecond would take the
        # event loop from the invocations it is trying to serve.
        future = self._enlist(pool, slot=False)
        gone = True
        step = 2 * quickest
        try:
            while True:
                begun = loop.time()
                await _until(future, step)
                if future.done():
                    gone = False
                    return future.result()
                # Timed out. Keep waiting only while instances still come free (one did lately) and the
                # machine, not the number of instances, is what keeps requests waiting: the timeout itself
                # fired late (the event loop is behind), or invocations hold their instance far longer than the
                # quickest do (their replies wait for a busy server or CPU). A new instance would then only
                # take CPU from the rest.
                if not pool.busy or time.monotonic() - pool.released_at >= wait or loop.time() >= give_up:
                    gone = False
                    return None
                late = loop.time() - begun - step >= wait / 4
                if not late and (pool.typical_s or 0.0) < 4 * quickest:
                    gone = False
                    return None
                step = min(2 * step, wait)
        finally:
            self._withdraw(pool, future, gone)

    def take_idle(self, key: PoolKey, qualifier: str | None) -> Instance | None:
        """`acquire`'s warm path without awaiting anything: the most recently used idle instance, when it can
        serve as it is. None: use `acquire` (nothing idle, provisioned instances to prefer, or a stale one to
        stop). Raises Throttled as `acquire` does."""
        pool = self._pools.get(key)
        if pool is None or not pool.idle or (qualifier and pool.provisioned.get(qualifier)):
            return None
        instance = pool.idle[-1]
        now = time.monotonic()
        if self._expired(instance, now):
            return None
        self._admit(key[0])
        pool.idle.pop()
        self._take(pool, instance)
        return instance

    def put_back(self, key: PoolKey, instance: Instance, reusable: bool) -> bool:
        """An invocation is done with `instance`: it goes to a waiting invocation or back to the idle list
        (nothing awaited). False when it is not kept (not reusable, expired, retired, shutting down): then the
        caller `stop`s it."""
        self._leave(key[0])
        pool = self._pools.get(key)
        if pool is not None:
            pool.busy.discard(instance)
            began = pool.busy_since.pop(instance, None)
            pool.released_at = time.monotonic()
            if began is not None:
                held = pool.released_at - began
                # It creeps up by half per second, not per invocation: under a sustained overload every hold
                # is stretched, and the quickest must still show what the function itself takes.
                creep = 1.0 + 0.5 * min(pool.released_at - pool.quickest_at, 1.0)
                pool.quickest_s = held if pool.quickest_s is None else min(held, pool.quickest_s * creep)
                pool.quickest_at = pool.released_at
                pool.typical_s = held if pool.typical_s is None else 0.9 * pool.typical_s + 0.1 * held
        meta = self._meta.get(instance)
        keep = (
            reusable and meta is not None and pool is not None and not self._closing
            and instance not in self._retired
            and (meta.provisioned_for is not None or not self._expired(instance, time.monotonic()))
        )
        if keep:
            assert meta is not None and pool is not None
            instance.last_used = time.monotonic()
            if meta.provisioned_for is None and self._hand_over(pool, instance):
                return True  # straight to a waiting invocation, still thawed
            self._freeze_later(instance)
            if meta.provisioned_for is not None:
                pool.provisioned.setdefault(meta.provisioned_for, []).append(instance)
            else:
                pool.idle.append(instance)
            return True
        self._retired.discard(instance)
        self._forget(instance)
        return False

    async def stop(self, instance: Instance) -> None:
        """Stop an instance `put_back` did not keep."""
        await self._stop(instance)

    async def provision(self, key: PoolKey, spec: InstanceSpec, env: dict[str, str], qualifier: str) -> Instance:
        """Start one provisioned instance for a qualifier. Provisioned instances are never reaped."""
        instance = await self._spawn(key, spec, env, qualifier)
        instance.last_used = time.monotonic()
        self._freeze(instance)
        self._pools.setdefault(key, _Pool()).provisioned.setdefault(qualifier, []).append(instance)
        return instance

    async def unprovision(self, name: str, qualifier: str, keep: int = 0, key: PoolKey | None = None) -> None:
        """Reduce a qualifier's provisioned instances to `keep` (only those of `key`, when given, survive)."""
        stopping = []
        for pool_key, pool in self._pools.items():
            if pool_key[0] != name:
                continue
            idle = pool.provisioned.get(qualifier, [])
            if key is not None and pool_key != key:
                stopping.extend(idle)
                idle.clear()
                self._retired.update(i for i in pool.busy if self._meta[i].provisioned_for == qualifier)
                continue
            while len(idle) > keep:
                stopping.append(idle.pop(0))
        for instance in stopping:
            self._forget(instance)
        await asyncio.gather(*(self._stop(i) for i in stopping))

    def out_of_memory(self, instance: Instance) -> bool:
        """Whether the kernel killed the instance for exceeding its MemorySize."""
        meta = self._meta.get(instance)
        cgroups = self.limits.cgroups
        return bool(cgroups and meta and meta.cgroup and cgroups.oom_killed(meta.cgroup))

    def _forget(self, instance: Instance) -> None:
        self._thawed.pop(instance, None)
        meta = self._meta.pop(instance, None)
        if meta is not None:
            self._memory_mb -= meta.memory_mb
            if meta.cgroup is not None:
                self._cgroups_to_remove.append(meta.cgroup)

    # Lambda freezes an execution environment between invocations; so do we, with SIGSTOP on its process
    # group, so background threads of function code use no CPU while the instance is idle.
    def _freeze(self, instance: Instance) -> None:
        meta = self._meta.get(instance)
        if not self.limits.freeze or meta is None or meta.frozen or instance.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(instance.proc.pid, signal.SIGSTOP)
            meta.frozen = True

    def _freeze_later(self, instance: Instance) -> None:
        meta = self._meta.get(instance)
        if not self.limits.freeze or meta is None:
            return
        if self.limits.freeze_after <= 0:
            self._freeze(instance)
            return
        # One timer for all of them, not one per release: under load an instance is released thousands of
        # times a second and taken again long before any freeze is due.
        self._thawed[instance] = time.monotonic()
        if self._freezing is None:
            self._freezing = asyncio.get_running_loop().call_later(self.limits.freeze_after, self._freeze_due)

    def _freeze_due(self) -> None:
        self._freezing = None
        if self._closing:
            return
        now = time.monotonic()
        due = now - self.limits.freeze_after
        earliest = None
        for instance, released in list(self._thawed.items()):
            if released <= due:
                del self._thawed[instance]
                self._freeze(instance)
            elif earliest is None or released < earliest:
                earliest = released
        if earliest is not None:
            self._freezing = asyncio.get_running_loop().call_later(earliest - due, self._freeze_due)

    def _thaw(self, instance: Instance) -> None:
        self._thawed.pop(instance, None)  # taken again: no freeze is due
        meta = self._meta.get(instance)
        if instance.proc is None or (meta is not None and not meta.frozen):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(instance.proc.pid, signal.SIGCONT)
        if meta is not None:
            meta.frozen = False

    async def _stop(self, instance: Instance, grace_s: float = 1.0) -> None:
        if instance.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(instance.proc.pid, signal.SIGCONT)
        await instance.stop(grace_s=grace_s)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        cgroups = self.limits.cgroups
        if cgroups is None:
            self._cgroups_to_remove.clear()
            return
        # A cgroup can be removed once its processes are gone; keep the ones that are still busy for later.
        left = []
        for path in self._cgroups_to_remove:
            cgroups.remove(path)
            if path.exists():
                left.append(path)
        self._cgroups_to_remove = left

    async def retire(self, name: str, version: str | None = None) -> None:
        """Stop a function's instances, or one version's (after an update or delete); busy ones stop
        when released. Provisioned instances are managed through `unprovision`."""
        stopping = []
        for key in [k for k in self._pools if k[0] == name and version in (None, k[1])]:
            pool = self._pools.pop(key)
            stopping.extend(pool.idle)
            for idle in pool.provisioned.values():
                stopping.extend(idle)
            self._retired.update(pool.busy)
        for instance in stopping:
            self._forget(instance)
        await asyncio.gather(*(self._stop(i) for i in stopping))

    # -- background work ----------------------------------------------------------------------------

    async def run_once(self, now: float | None = None) -> int:
        """Stop on-demand instances idle longer than the keep-alive, or older than the maximum lifetime.
        Returns how many were stopped."""
        now = time.monotonic() if now is None else now
        stale = []
        for key, pool in list(self._pools.items()):
            keep = []
            for instance in pool.idle:
                fresh = now - instance.last_used < self.limits.idle_timeout and not self._expired(instance, now)
                (keep if fresh else stale).append(instance)
            pool.idle = keep
            if not pool.idle and not pool.busy and not any(pool.provisioned.values()):
                del self._pools[key]
        for instance in stale:
            self._forget(instance)
        await asyncio.gather(*(self._stop(i) for i in stale))
        return len(stale)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.reap_interval)
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
        if self._freezing is not None:
            self._freezing.cancel()
            self._freezing = None
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        everything = list(self._meta)
        self._pools.clear()
        self._meta.clear()
        await asyncio.gather(*(self._stop(i, grace_s=0.5) for i in everything), return_exceptions=True)
        if self.limits.cgroups is not None:
            self.limits.cgroups.close()
