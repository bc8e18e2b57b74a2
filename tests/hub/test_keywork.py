"""The bounded key-derivation executor: off the loop, bounded, refusing past its queue."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hivemind_core.keywork import KeyWork, KeyWorkBusy


async def _work_runs_off_the_loop_thread() -> None:
    work = KeyWork(workers=1)
    loop_thread = threading.get_ident()
    ran_on = await work.run(threading.get_ident)
    assert ran_on != loop_thread
    assert work.done == 1 and work.pending == 0
    work.shutdown()


async def _the_loop_keeps_running_while_a_derivation_blocks() -> None:
    work = KeyWork(workers=1)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await work.run(time.sleep, 0.3)
    task.cancel()
    assert ticks >= 10, f"the loop ticked only {ticks} times in 0.3 s"
    work.shutdown()


async def _at_most_workers_run_at_once() -> None:
    work = KeyWork(workers=2, max_pending=10)
    running = 0
    peak = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    await asyncio.gather(*(work.run(job) for _ in range(8)))
    assert peak == 2
    work.shutdown()


async def _a_full_queue_refuses_new_work() -> None:
    work = KeyWork(workers=1, max_pending=3)
    jobs = [asyncio.create_task(work.run(time.sleep, 0.2)) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(KeyWorkBusy):
        await work.run(time.sleep, 0)
    assert work.refused == 1
    await asyncio.gather(*jobs)
    await work.run(time.sleep, 0)  # room again once the queue drains
    work.shutdown()


def test_work_runs_off_the_loop_thread() -> None:
    asyncio.run(_work_runs_off_the_loop_thread())


def test_the_loop_keeps_running_while_a_derivation_blocks() -> None:
    asyncio.run(_the_loop_keeps_running_while_a_derivation_blocks())


def test_at_most_workers_run_at_once() -> None:
    asyncio.run(_at_most_workers_run_at_once())


def test_a_full_queue_refuses_new_work() -> None:
    asyncio.run(_a_full_queue_refuses_new_work())
