"""How invocations wait inside one pool (faas.runtime.pool): hand-overs of freed instances and of start slots.

The pool's bookkeeping is driven directly here, with plain objects standing in for instances (only their
identity matters to it); tests/test_concurrency.py covers the same paths through the real server."""

from __future__ import annotations

import asyncio

import pytest

from faas.runtime.pool import Limits, Pools, _Pool


class _Stand:
    alive = True


async def test_a_handed_instance_is_busy_before_its_waiter_runs():
    pools, pool = Pools(Limits()), _Pool()
    waiting = asyncio.ensure_future(pools._wait(pool, 5.0))
    await asyncio.sleep(0)
    instance = _Stand()
    assert pools._hand_over(pool, instance)  # type: ignore[arg-type]
    # The waiting task has not run yet, but nobody else may count the instance as free meanwhile.
    assert instance in pool.busy and instance in pool.busy_since
    assert await waiting is instance
    assert not pool.waiters


async def test_start_slots_go_only_to_invocations_waiting_for_one():
    pools, pool = Pools(Limits()), _Pool()
    for_instance = asyncio.ensure_future(pools._wait(pool, 5.0))  # waits for a freed instance only
    await asyncio.sleep(0)
    for_slot = asyncio.ensure_future(pools._wait(pool))  # a start slot or a freed instance
    await asyncio.sleep(0)
    assert pools._hand_over(pool, None)
    assert await for_slot is None
    assert not for_instance.done()
    assert not pools._hand_over(pool, None)  # nobody else wants a slot
    instance = _Stand()
    assert pools._hand_over(pool, instance)  # type: ignore[arg-type]
    assert await for_instance is instance


async def test_an_instance_handed_to_a_cancelled_waiter_goes_to_the_next():
    pools, pool = Pools(Limits(freeze=False)), _Pool()
    first = asyncio.ensure_future(pools._wait(pool))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(pools._wait(pool, 5.0))
    await asyncio.sleep(0)
    instance = _Stand()
    pools._hand_over(pool, instance)  # type: ignore[arg-type]
    first.cancel()  # its invocation went away before it could take the instance
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await second is instance
    assert instance in pool.busy


async def test_a_wait_for_an_instance_times_out_with_none():
    pools, pool = Pools(Limits()), _Pool()
    assert await pools._wait(pool, 0.01) is None
    assert not pool.waiters and not pool.slot_waiters
