"""Dynamic batching: requests that arrive together are scored in one batched forward pass.

Each request submits its items and awaits a future. One loop takes the first waiting request,
then gathers more until the batch holds ``max_batch`` items or ``max_wait_s`` has passed since
it started, and runs ``process(items)`` on a single worker thread (so the model and the reward's
running state are only ever touched by one thread, batch after batch, in order). Requests that
arrive while a batch is being scored form the next batch, so one-sample-per-request clients get
batched throughput without waiting for the timer. A request is never split across batches.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence


class DynamicBatcher:
    """Gathers concurrent requests' items into batches for ``process(items) -> results`` (one per item)."""

    def __init__(self, process: Callable[[list[Any]], Sequence[Any]], max_batch: int = 64, max_wait_s: float = 0.005) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        self.process, self.max_batch, self.max_wait_s = process, max_batch, max_wait_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bayesrm-score")
        self._pending: collections.deque[tuple[list[Any], asyncio.Future]] = collections.deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.batches = 0  # forward passes run
        self.items = 0  # items scored
        self.largest = 0  # most items in one batch
        self.busy_s = 0.0  # time spent in process()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        await asyncio.get_running_loop().run_in_executor(self.executor, lambda: None)  # let a running batch finish
        self.executor.shutdown(wait=True)

    async def submit(self, items: list[Any]) -> list[Any]:
        """Results for ``items`` (in order) once the batch holding them has been processed."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((list(items), future))
        self._arrived.set()
        return await future

    async def run_exclusive(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the scoring thread, between batches (e.g. fitting references)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _wait_for_arrival(self, timeout: float | None) -> bool:
        self._arrived.clear()
        if self._pending:
            return True
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                await self._wait_for_arrival(None)
            batch = [self._pending.popleft()]
            size = len(batch[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                if self._pending:
                    if size + len(self._pending[0][0]) > self.max_batch:
                        break  # keep whole requests together: it starts the next batch
                    batch.append(self._pending.popleft())
                    size += len(batch[-1][0])
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or not await self._wait_for_arrival(remaining):
                    break
            batch = [(items, future) for items, future in batch if not future.done()]  # clients gone
            if not batch:
                continue
            flat = [item for items, _ in batch for item in items]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self.process, flat)
            except Exception as err:  # noqa: BLE001 - every waiting request learns of the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            finally:
                self.busy_s += time.perf_counter() - started
            self.batches += 1
            self.items += len(flat)
            self.largest = max(self.largest, len(flat))
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(list(results[start : start + len(items)]))
                start += len(items)

    def stats(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "items": self.items,
            "largest_batch": self.largest,
            "queued_requests": len(self._pending),
            "busy_s": round(self.busy_s, 3),
        }
