"""The node byte budget: never over capacity, FIFO, and cancellation-safe."""

from __future__ import annotations

import asyncio

import pytest

from dr_node.budget import ByteBudget


async def test_never_exceeds_capacity_under_contention():
    budget = ByteBudget(10)
    held = []

    async def worker(n: int):
        async with budget.hold(n):
            held.append(budget.used)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(n) for n in [3, 4, 5, 6, 7, 2, 9, 1] * 20))
    assert max(held) <= 10 and budget.peak <= 10
    assert budget.used == 0


async def test_fifo_a_large_request_is_not_starved():
    budget = ByteBudget(10)
    await budget.acquire(6)
    order = []

    async def take(name, n):
        await budget.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 10))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 1))  # would fit now, but big waits first
    await asyncio.sleep(0)
    assert order == []
    budget.release(6)
    await asyncio.sleep(0)
    assert order == ["big"]
    budget.release(10)
    await asyncio.gather(big, small)
    assert order == ["big", "small"]


async def test_cancelled_waiter_gives_way():
    budget = ByteBudget(4)
    await budget.acquire(4)
    waiter = asyncio.create_task(budget.acquire(4))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(4)
    assert budget.used == 0
    assert await budget.acquire(4) == 4


async def test_requests_larger_than_capacity_are_clamped():
    budget = ByteBudget(4)
    assert await budget.acquire(100) == 4
    budget.release(4)
