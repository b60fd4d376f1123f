"""Python-side overhead of agentvm, printed beside the Rust numbers.

    python python/benches/bench.py [--rust-image-get-us 0.76] [--rust-image-get-file-us 1.8]

- ``images.get`` round trip on a local runtime, in memory and with a data dir (redb): the
  asyncio API (``await vm.images.get``), the raw native call, and the blocking API (derived
  from the async one); the ratio is against the Rust in-process call
  (``cargo bench -p agentvm-benches --bench ffi``, ``ffi/rust_image_get/memory`` and
  ``/file``; pass its medians).
- events/s into Python: a replayed session log drained as fast as Python takes it, and live
  replies of 10 agents streaming while one subscriber consumes everything; each by batches
  (``async for batch in sub.batches()``, one native call per batch) and event by event
  (``async for event in sub``).

``--cpu`` times with the calling thread's CPU time (``time.thread_time``) instead of the wall
clock: on a shared machine it leaves out the time the thread waited for a core (for events it
then counts what the Python thread spends taking them, not the runtime's threads).

Build the module in release for meaningful numbers (``MATURIN_RELEASE=1
scripts/test-python.sh`` or ``maturin build --release``). Targets: ``images.get`` <= 2x the
Rust call, >= 500k events/s with batches.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any, Awaitable, Callable, Optional

import agentvm
from agentvm import _native

#: The native layer of the embedding (``_native.Call``): batches and the raw call exist.
EMBED = hasattr(_native, "Call")

#: The clock (``--cpu``: the calling thread's CPU time).
clock = time.perf_counter


def median_us(run_batch: Callable[[int], float], batch: int, rounds: int) -> float:
    """Median per-operation time (µs) over ``rounds`` batches of ``batch`` operations."""
    return statistics.median(run_batch(batch) / batch * 1e6 for _ in range(rounds))


async def amedian_us(run_batch: Callable[[int], Awaitable[float]], batch: int, rounds: int) -> float:
    times = [await run_batch(batch) / batch * 1e6 for _ in range(rounds)]
    return statistics.median(times)


async def bench_get(where: str, data_dir: Optional[str], rust_us: float) -> dict[str, float]:
    vm = await agentvm.open(data_dir, llm="mock")
    img = await vm.images.create("bench", name="bench")
    image_id = img["imageId"]
    native = vm.native
    command = {"type": "image_get_request", "data": {"imageId": image_id}}

    async def api(n: int) -> float:
        get = vm.images.get
        t = clock()
        for _ in range(n):
            await get(image_id)
        return clock() - t

    async def raw(n: int) -> float:
        request = native.request
        t = clock()
        for _ in range(n):
            await request(command)
        return clock() - t

    def blocking(n: int) -> float:
        get = svm.images.get
        t = clock()
        for _ in range(n):
            get(simg)
        return clock() - t

    out = {f"async images.get ({where})": 0.0}
    await api(2000)
    out[f"async images.get ({where})"] = await amedian_us(api, 5000, 15)
    if EMBED:
        await raw(2000)
        out[f"raw native request ({where})"] = await amedian_us(raw, 5000, 15)
    await vm.close()

    sdir = None if data_dir is None else data_dir + "-sync"
    svm = agentvm.open_sync(sdir, llm="mock")
    simg = svm.images.create("bench")["imageId"]
    blocking(2000)
    out[f"sync images.get ({where})"] = median_us(blocking, 5000, 15)
    svm.close()

    print(f"\nimages.get round trip, {where} (median, µs)   Rust in-process image_get: {rust_us:.2f} µs")
    for name, us in out.items():
        print(f"  {name:<34} {us:7.2f} µs   {us / rust_us:5.1f}x Rust")
    return out


async def wait_turns(vm: agentvm.AgentVm, image_id: str, turns: int) -> None:
    """Waits until every reply is stored (then a moment for the replay log to be written)."""
    while len(await vm.images.messages(image_id)) < 2 * turns:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)


async def consume(events: Any, total: int, batches: bool) -> int:
    """Takes ``total`` events from ``events``, by batches or one by one."""
    n = 0
    if batches:
        async for batch in events.batches():
            n += len(batch)
            if n >= total:
                break
    else:
        async for _ in events:
            n += 1
            if n == total:
                break
    return n


async def bench_events() -> dict[str, float]:
    vm = await agentvm.open(llm="mock:long-stream")
    # A log of ~9k events: 44 long replies (100 deltas each) on one session.
    img = await vm.images.create("bench")
    turns = 44
    for i in range(turns):
        await vm.agents.send(f"m{i}", image_id=img["imageId"])
    await wait_turns(vm, img["imageId"], turns)

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

    async def replay(batches: bool) -> float:
        rates = []
        for _ in range(7):
            events = vm.events(img["sessionId"], after=0)
            t = clock()
            n = await consume(events, total, batches)
            rates.append(n / (clock() - t))
            events.close()
        return statistics.median(rates)

    async def live(batches: bool) -> tuple[int, float]:
        # 10 agents stream long replies while one subscriber consumes everything (about 2k
        # events: within one subscriber queue, so no resume is involved).
        events = vm.events(all_sessions=True)
        images = [await vm.images.create("live") for _ in range(10)]
        t = clock()
        for im in images:
            await vm.agents.send("go", image_id=im["imageId"])
        n = 0
        ends = 0
        if batches:
            async for batch in events.batches():
                n += len(batch)
                ends += sum(1 for e in batch if e["type"] == "conversation_end")
                if ends == len(images):
                    break
        else:
            async for e in events:
                n += 1
                if e["type"] == "conversation_end":
                    ends += 1
                    if ends == len(images):
                        break
        rate = n / (clock() - t)
        events.close()
        return n, rate

    out: dict[str, float] = {}
    modes = [("batches", True), ("one by one", False)] if EMBED else [("one by one", False)]
    print(f"\nevents into Python (target >= 500k/s with batches)")
    for label, batches in modes:
        out[f"replay {label}"] = r = await replay(batches)
        print(f"  replayed log ({total} events), {label:<10} {r / 1000:7.1f} k events/s (median of 7)")
    for label, batches in modes:
        n, r = await live(batches)
        out[f"live {label}"] = r
        print(f"  live, 10 agents ({n} events), {label:<10} {r / 1000:7.1f} k events/s")
    await vm.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rust-image-get-us", type=float, default=0.76,
                        help="median of ffi/rust_image_get/memory, µs (default 0.76)")
    parser.add_argument("--rust-image-get-file-us", type=float, default=1.8,
                        help="median of ffi/rust_image_get/file, µs (default 1.8)")
    parser.add_argument("--cpu", action="store_true", help="time with the thread's CPU time")
    args = parser.parse_args()
    if args.cpu:
        global clock
        clock = time.thread_time
        print("(times: the calling thread's CPU time)")
    asyncio.run(bench_get("memory", None, args.rust_image_get_us))
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(bench_get("file", d + "/data", args.rust_image_get_file_us))
    asyncio.run(bench_events())


if __name__ == "__main__":
    main()
