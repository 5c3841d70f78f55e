"""Provisioned concurrency: keeps initialised instances for a published version or an alias at the
requested count, and reports IN_PROGRESS, READY or FAILED as Lambda does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from faas.errors import InvalidParameterValueException, LambdaError, ResourceConflictException
from faas.invoke.router import Router
from faas.runtime.instance import InitFailure
from faas.runtime.pool import Pools
from faas.store.provisioned import ConcurrencySettings, ProvisionedSetting
from faas.store.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Status:
    status: str = "IN_PROGRESS"
    reason: str | None = None
    allocated: int = 0


class Provisioner:
    """A background service: `run_once()` brings every setting to its requested count of instances."""

    def __init__(self, router: Router, pools: Pools, settings: ConcurrencySettings, interval: float):
        self.router = router
        self.pools = pools
        self.settings = settings
        self.interval = interval
        self._status: dict[tuple[str, str], Status] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def status(self, name: str, qualifier: str) -> Status:
        st = self._status.get((name, qualifier)) or Status()
        return Status(st.status, st.reason, self.pools.provisioned_count(name, qualifier))

    def changed(self, name: str, qualifier: str, requested: int | None) -> None:
        """A setting was put, deleted or its alias moved: reconcile soon."""
        if requested is not None:
            self._status[(name, qualifier)] = Status()
        else:
            self._status.pop((name, qualifier), None)
        self._wake.set()

    async def check(self, name: str, qualifier: str, value: int, minimum_unreserved: int) -> None:
        await check_provisioned(self.router.registry, self.settings, self.pools, name, qualifier, value,
                                minimum_unreserved)

    def poke(self) -> None:
        """Something a setting depends on changed (an alias moved): reconcile soon."""
        self._wake.set()

    async def run_once(self) -> None:
        async with self._lock:
            settings = await self.settings.provisioned()
            wanted = {(s.function_name, s.qualifier) for s in settings}
            for name, qualifier in [k for k in self._status if k not in wanted]:
                self._status.pop((name, qualifier), None)
                await self.pools.unprovision(name, qualifier)
            await asyncio.gather(*(self._reconcile(s) for s in settings))

    async def _reconcile(self, setting: ProvisionedSetting) -> None:
        name, qualifier = setting.function_name, setting.qualifier
        status = self._status.setdefault((name, qualifier), Status())
        try:
            fv = await self.router.resolve(name, qualifier)
            prepared = await self.router.prepare(fv, "provisioned-concurrency")
        except LambdaError as exc:
            status.status, status.reason = "FAILED", str(exc.message)
            return
        # Instances of another version (the alias moved) or beyond the request are stopped.
        await self.pools.unprovision(name, qualifier, keep=setting.requested, key=prepared.key)
        missing = setting.requested - self.pools.provisioned_count(name, qualifier)
        if status.status == "FAILED" and status.reason == "FUNCTION_ERROR_INIT_FAILURE":
            return
        try:
            started = await asyncio.gather(*(
                self.pools.provision(prepared.key, prepared.spec, prepared.env, qualifier) for _ in range(missing)
            ))
        except InitFailure:
            status.status, status.reason = "FAILED", "FUNCTION_ERROR_INIT_FAILURE"
            await self.pools.unprovision(name, qualifier)
            return
        except Exception:
            log.exception("provisioning %s:%s failed", name, qualifier)
            return
        for instance in started:
            self.router.record_init(fv, prepared.interpreter, instance)
        if self.pools.provisioned_count(name, qualifier) >= setting.requested:
            status.status, status.reason = "READY", None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("provisioning pass failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="faas-provisioner")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def check_provisioned(registry: Registry, settings: ConcurrencySettings, pools: Pools, name: str, qualifier: str,
                            value: int, minimum_unreserved: int) -> None:
    """What PutProvisionedConcurrencyConfig refuses (the API and the autoscaler both ask): more than the
    function's reserved concurrency, too little left unreserved, or a version and an alias pointing at it
    both provisioned."""
    reserved = pools.reserved.get(name)
    others = [s for s in await settings.provisioned(name) if s.qualifier != qualifier]
    if reserved is not None and value + sum(s.requested for s in others) > reserved:
        raise InvalidParameterValueException(
            "Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for "
            "function"
        )
    unreserved = pools.unreserved_limit()
    if reserved is None and value > unreserved:
        raise InvalidParameterValueException(
            f"Specified ConcurrentExecutions for function is greater than account's unreserved concurrency "
            f"[{unreserved}].", body_type=None,
        )
    if reserved is None and unreserved - value < minimum_unreserved:
        raise InvalidParameterValueException(
            "Specified ConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
            f"below its minimum value of [{minimum_unreserved}].", body_type=None,
        )
    mine = await _version_of(registry, name, qualifier)
    for other in others:
        if await _version_of(registry, name, other.qualifier) != mine:
            continue
        if qualifier.isdigit():
            raise ResourceConflictException("Version is pointed by a Provisioned Concurrency alias")
        raise ResourceConflictException(
            "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version"
        )


async def _version_of(registry: Registry, name: str, qualifier: str) -> str:
    if qualifier.isdigit():
        return qualifier
    alias = await registry.aliases.get(name, qualifier)
    return alias.function_version if alias else ""
