"""Python-side overhead of agentvm, printed beside the Rust numbers.

    python python/benches/bench.py [--rust-image-get-us 1.7]

- ``images.get`` round trip on a local in-memory runtime: the asyncio API
  (``await vm.images.get``), the raw native awaitable, and the blocking API; the ratio is
  against the Rust in-process round trip (``cargo bench -p agentvm-benches --bench request``,
  ``image_get/memory``; pass its median with ``--rust-image-get-us``).
- events/s consumed by ``async for``: a replayed session log drained as fast as Python takes it
  (pure consumption), and live replies of agents streaming while they are consumed.

Build the module in release for meaningful numbers (``MATURIN_RELEASE=1
scripts/test-python.sh`` or ``maturin build --release``). Targets: <= 3x the Rust round
trip, >= 100k events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, Awaitable, Callable

import agentvm


def median_us(run_batch: Callable[[int], float], batch: int, rounds: int) -> float:
    """Median per-operation time (µs) over ``rounds`` batches of ``batch`` operations."""
    return statistics.median(run_batch(batch) / batch * 1e6 for _ in range(rounds))


async def amedian_us(run_batch: Callable[[int], Awaitable[float]], batch: int, rounds: int) -> float:
    times = [await run_batch(batch) / batch * 1e6 for _ in range(rounds)]
    return statistics.median(times)


async def bench_get(rust_us: float) -> dict[str, float]:
    vm = await agentvm.open(llm="mock")
    img = await vm.images.create("bench", name="bench")
    image_id = img["imageId"]
    native = vm.native
    command = {"type": "image_get_request", "data": {"imageId": image_id}}

    async def api(n: int) -> float:
        get = vm.images.get
        t = time.perf_counter()
        for _ in range(n):
            await get(image_id)
        return time.perf_counter() - t

    async def raw(n: int) -> float:
        request = native.request
        t = time.perf_counter()
        for _ in range(n):
            await request(command, "record")
        return time.perf_counter() - t

    svm = agentvm.open_sync(llm="mock")
    simg = svm.images.create("bench")

    def blocking(n: int) -> float:
        get = svm.images.get
        sid = simg["imageId"]
        t = time.perf_counter()
        for _ in range(n):
            get(sid)
        return time.perf_counter() - t

    for warm in (api, raw):
        await warm(2000)
    blocking(2000)
    out = {
        "async images.get": await amedian_us(api, 5000, 15),
        "async native request": await amedian_us(raw, 5000, 15),
        "sync images.get": median_us(blocking, 5000, 15),
    }
    print(f"\nimages.get round trip (median, µs)   Rust in-process image_get: {rust_us:.2f} µs")
    for name, us in out.items():
        print(f"  {name:<24} {us:7.2f} µs   {us / rust_us:5.1f}x Rust")
    await vm.close()
    svm.close()
    return out


async def wait_turns(vm: agentvm.AgentVm, image_id: str, turns: int) -> None:
    """Waits until every reply is stored (then a moment for the replay log to be written)."""
    while len(await vm.images.messages(image_id)) < 2 * turns:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


async def bench_events() -> dict[str, float]:
    vm = await agentvm.open(llm="mock:long-stream")
    # A log of ~9k events: 44 long replies (100 deltas each) on one session.
    img = await vm.images.create("bench")
    turns = 44
    for i in range(turns):
        await vm.agents.send(f"m{i}", image_id=img["imageId"])
    await wait_turns(vm, img["imageId"], turns)

    async def drain() -> tuple[int, float]:
        events = vm.events(img["sessionId"], after=0)
        n = 0
        t = time.perf_counter()
        async for _ in events:
            n += 1
            if n == total:
                break
        dt = time.perf_counter() - t
        events.close()
        return n, dt

    # Count the log once, then time full drains.
    counting = vm.events(img["sessionId"], after=0)
    total = 0
    ends = 0
    async for e in counting:
        total += 1
        if e["type"] == "conversation_end":
            ends += 1
            if ends == turns:
                break
    counting.close()
    rates = []
    for _ in range(7):
        n, dt = await drain()
        rates.append(n / dt)
    replay_rate = statistics.median(rates)

    # Live: 10 agents stream long replies while one subscriber consumes everything (about
    # 2k events: within one subscriber queue, so no resume is involved).
    live = vm.events(all_sessions=True)
    images = [await vm.images.create("live") for _ in range(10)]
    t = time.perf_counter()
    for im in images:
        await vm.agents.send("go", image_id=im["imageId"])
    n = 0
    ends = 0
    async for e in live:
        n += 1
        if e["type"] == "conversation_end":
            ends += 1
            if ends == len(images):
                break
    live_rate = n / (time.perf_counter() - t)
    live.close()

    print(f"\nevents consumed by `async for` (target >= 100k/s)")
    print(f"  replayed log ({total} events)   {replay_rate / 1000:7.1f} k events/s (median of 7)")
    print(f"  live, 10 agents ({n} events)   {live_rate / 1000:7.1f} k events/s")
    await vm.close()
    return {"replay": replay_rate, "live": live_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rust-image-get-us", type=float, default=1.7,
                        help="median of the Rust image_get/memory bench, µs (default 1.7)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    results.update(asyncio.run(bench_get(args.rust_image_get_us)))
    results.update(asyncio.run(bench_events()))


if __name__ == "__main__":
    main()
