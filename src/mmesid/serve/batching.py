"""Dynamic micro-batching: concurrent requests share one forward pass of the model.

Requests wait in a queue; one worker takes the first, then keeps collecting for at most `max_wait_ms`
or until `max_batch` histories are gathered, scores them all at once in a single thread (the model is
never run concurrently), and hands each request its own rows. With `max_batch = 1` every request gets
its own forward: the baseline the load test compares against.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], max_batch: int = 64, max_wait_ms: float = 5.0):
        """`fn` maps a list of work items (histories) to one result per item."""
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.queue: asyncio.Queue | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmesid-model")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._worker())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        """Results for `items`, computed together with whatever else is waiting."""
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((items, fut))
        return await fut

    async def _collect(self) -> list[tuple[list[Any], asyncio.Future]]:
        first = await self.queue.get()
        jobs, size = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            jobs.append(job)
            size += len(job[0])
        return jobs

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            flat = [x for items, _ in jobs for x in items]
            try:
                results = await loop.run_in_executor(self.pool, self.fn, flat)
            except Exception as e:  # noqa: BLE001 - handed to every waiting request, never kills the worker
                for _, fut in jobs:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            self.batches += 1
            self.items += len(flat)
            pos = 0
            for items, fut in jobs:
                if not fut.done():  # a client that went away
                    fut.set_result(list(results[pos:pos + len(items)]))
                pos += len(items)
