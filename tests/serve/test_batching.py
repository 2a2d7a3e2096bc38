"""serve/batching.py: a batch is formed when the model is free, from everything that waited."""

import asyncio
import threading
import time

import pytest

from cl3dor_ray.serve.batching import Batcher


def test_requests_that_arrive_while_a_batch_runs_form_the_next_batch_whole():
    started = threading.Event()

    def slow_double(items):
        started.set()
        time.sleep(0.3)  # the model's forward pass
        return [2 * i for i in items]

    async def main():
        batcher = Batcher(slow_double, max_batch_size=16, wait_s=0.01)
        first = asyncio.create_task(batcher(0))
        while not started.is_set():
            await asyncio.sleep(0.005)
        # 14 requests trickle in while the first batch runs, a few milliseconds apart
        rest = []
        for i in range(1, 15):
            rest.append(asyncio.create_task(batcher(i)))
            await asyncio.sleep(0.004)
        return await asyncio.gather(first, *rest), list(batcher.sizes)

    results, sizes = asyncio.run(main())
    assert results == [2 * i for i in range(15)]
    # Serve's own batching formed batches of the arrival bursts (1 to 4 here) behind the running one
    assert sizes == [1, 14], sizes


def test_a_batch_is_at_most_max_batch_size_and_order_is_kept():
    async def main():
        batcher = Batcher(lambda items: [f"r{i}" for i in items], max_batch_size=4, wait_s=0.01)
        out = await asyncio.gather(*(batcher(i) for i in range(10)))
        return out, list(batcher.sizes)

    out, sizes = asyncio.run(main())
    assert out == [f"r{i}" for i in range(10)]
    assert sizes == [4, 4, 2]


def test_a_failing_batch_fails_each_of_its_requests_and_the_next_batch_still_runs():
    def fn(items):
        if "bad" in items:
            raise ValueError("scene 'bad' is not prepared")
        return [i.upper() for i in items]

    async def main():
        batcher = Batcher(fn, max_batch_size=2, wait_s=0.01)
        out = await asyncio.gather(batcher("bad"), batcher("ok"), batcher("fine"), return_exceptions=True)
        return out

    out = asyncio.run(main())
    assert [type(o) for o in out[:2]] == [ValueError, ValueError] and "not prepared" in str(out[0])
    assert out[2] == "FINE"


def test_a_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="max_batch_size 0 must be >= 1"):
        Batcher(lambda items: items, max_batch_size=0, wait_s=0.01)
