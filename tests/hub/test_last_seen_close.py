"""A hub that stops leaves no last_seen task pending and loses no last_seen time."""

from __future__ import annotations

import asyncio
from typing import Any

from hivemind_core.last_seen import LastSeenWriter


class TouchRecorder:
    def __init__(self) -> None:
        self.touched: list[tuple[int, float]] = []

    def touch(self, client_id: int, when: float) -> None:
        self.touched.append((client_id, when))


def test_aclose_writes_what_is_pending_and_ends_the_debounce_task() -> None:
    db = TouchRecorder()
    errors: list[str] = []

    async def main() -> Any:
        writer = LastSeenWriter(db, 60.0, errors.append)  # a write would wait a minute
        writer.touch(7)
        task = writer._task
        assert task is not None and not task.done()
        await writer.aclose()
        return task

    task = asyncio.run(main())
    assert task.done(), "the debounce task was left pending (destroyed at loop close)"
    assert [cid for cid, _ in db.touched] == [7]
    assert errors == []
