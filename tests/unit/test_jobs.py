"""The job supervisor: a failed job is started again, and readiness says so meanwhile."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.kit import jobs
from services.kit.jobs import Job, Supervisor


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "FIRST_BACKOFF_S", 0.2)


async def test_a_failing_job_is_restarted_and_reported_down_until_it_runs_again(
        caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    runs = 0
    release = asyncio.Event()

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionError("subscription lost")
        await release.wait()
        await stop.wait()

    supervisor = Supervisor([Job("consumer", flaky)], stop)
    with caplog.at_level(logging.ERROR, logger="cartage.jobs"):
        tasks = supervisor.start()
        await asyncio.sleep(0.05)
        assert runs == 1
        assert not await supervisor.ready()  # failed, waiting out its backoff
        await asyncio.sleep(0.3)
        assert runs == 2
        assert await supervisor.ready()
        stop.set()
        release.set()
        await asyncio.gather(*tasks)
    failures = [r for r in caplog.records if r.message.startswith("background job failed")]
    assert len(failures) == 1 and "subscription lost" in (failures[0].exc_text or "")
    assert supervisor.failures == {"consumer": 1}


async def test_a_job_that_returns_early_is_restarted_and_one_that_stops_with_the_service_not(
        ) -> None:
    stop = asyncio.Event()
    runs = 0

    async def quits(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs >= 2:
            await stop.wait()

    supervisor = Supervisor([Job("relay", quits)], stop)
    tasks = supervisor.start()
    await asyncio.sleep(0.3)
    assert runs == 2 and supervisor.failures == {"relay": 1}
    stop.set()
    await asyncio.gather(*tasks)
    assert runs == 2


async def test_readiness_follows_the_jobs_own_check_and_ignores_optional_jobs() -> None:
    stop = asyncio.Event()
    connected = False

    async def is_connected() -> bool:
        return connected

    async def optional(stop: asyncio.Event) -> None:
        raise RuntimeError("never works")

    supervisor = Supervisor([Job("relay", lambda s: s.wait(), ready=is_connected),
                             Job("extra", optional, required=False)], stop)
    tasks = supervisor.start()
    await asyncio.sleep(0.05)
    assert not await supervisor.ready()
    connected = True
    assert await supervisor.ready()
    stop.set()
    await asyncio.gather(*tasks)
