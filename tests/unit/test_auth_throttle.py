"""The authorization server's bounds on client authentication, without a server."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth import throttle
from gateway.auth.throttle import AuthThrottle, Throttled


async def test_verifications_queue_for_a_slot_and_an_overfull_queue_is_turned_away(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "MAX_WAITING", 3)
    bounds = AuthThrottle("1000/minute", "1000/minute", concurrent=1)
    release = asyncio.Event()
    running = 0
    most = 0

    async def verification() -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return "client"

    queued = [asyncio.create_task(bounds.verify(f"c{i}", "10.0.0.1", verification))
              for i in range(4)]  # one verifying, three waiting
    await asyncio.sleep(0.05)
    with pytest.raises(Throttled) as busy:
        await bounds.verify("c9", "10.0.0.2", verification)
    assert busy.value.retry_after == 1
    release.set()
    assert await asyncio.gather(*queued) == ["client"] * 4
    assert most == 1  # never more verifications at once than slots


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    bounds = AuthThrottle("1000/minute", "1000/minute", concurrent=1)
    release = asyncio.Event()

    async def verification() -> str:
        await release.wait()
        return "client"

    first = asyncio.create_task(bounds.verify("a", "ip", verification))
    waiter = asyncio.create_task(bounds.verify("b", "ip", verification))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await first == "client"
    assert await bounds.verify("c", "ip", verification) == "client"
    assert bounds._waiting == 0 and not bounds._slots.locked()


async def test_failing_in_a_clients_name_does_not_use_up_its_budget() -> None:
    bounds = AuthThrottle("2/minute", "1/minute", concurrent=2)

    async def wrong() -> None:
        return None

    async def right() -> str:
        return "partner"

    # Someone fails as "partner" from many addresses (each address is then cut off itself).
    for i in range(10):
        assert await bounds.verify("partner", f"10.0.0.{i}", wrong) is None
        with pytest.raises(Throttled):
            await bounds.verify("partner", f"10.0.0.{i}", right)
    # The partner's own budget is untouched: two tokens, then 429 for asking too often.
    assert await bounds.verify("partner", "192.0.2.1", right) == "partner"
    assert await bounds.verify("partner", "192.0.2.1", right) == "partner"
    with pytest.raises(Throttled) as too_often:
        await bounds.verify("partner", "192.0.2.1", right)
    assert "too many authentications for this client" in str(too_often.value)
    assert 1 <= too_often.value.retry_after <= 60
