"""Dynamic batching of a model replica: a batch is formed when the model is free to run it.

Serve's `@serve.batch` (Ray 2.60) forms each batch as soon as its first request has waited
`batch_wait_timeout_s`, then queues it behind the batch that is running. Under load its batches are
therefore as small as the bursts in which requests arrive, not as large as the backlog: with 16
questions in flight on the pretrained LM it ran batches of 1 to 4 while a dozen requests waited
(measured in the replica, 2026-12-06). Here the requests queue, and the next batch takes up to
`max_batch_size` of them at the moment the previous one is done: the first request of an idle
replica waits at most `wait_s` for company, and a busy replica never waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable


class Batcher:
    """`await batcher(item)` -> `fn`'s result for it; `fn(items) -> results` (one per item, in order) runs in
    a worker thread, one batch at a time, so the replica keeps accepting requests meanwhile."""

    def __init__(self, fn: Callable[[list], list], max_batch_size: int, wait_s: float):
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError(f"max_batch_size {max_batch_size} must be >= 1 and wait_s {wait_s} >= 0")
        self.fn, self.max_batch_size, self.wait_s = fn, max_batch_size, wait_s
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.sizes: deque[int] = deque(maxlen=1000)  # the last batches' sizes (cache_stats)

    async def __call__(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            deadline = loop.time() + self.wait_s
            while len(self._queue) < self.max_batch_size and loop.time() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch, self._queue = self._queue[: self.max_batch_size], self._queue[self.max_batch_size :]
            batch = [(item, f) for item, f in batch if not f.done()]  # a caller that gave up is not computed
            if not batch:
                continue
            self.sizes.append(len(batch))
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(batch)} items")
            except Exception as e:  # the whole batch failed: every request in it hears why
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), result in zip(batch, results):
                if not f.done():
                    f.set_result(result)
