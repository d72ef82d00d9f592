"""P9: paired nodes over an emulated WAN (issue 7).

A source node's engine streams a `file` disk to a target node's TransferService in the
same process, through bench.wanproxy (50 ms RTT, a 200 Mbit/s cap shared by all
connections): a full sync, then a 1 % incremental, with the adaptive credit window;
the same full sync with a fixed one-chunk window for contrast, and with 1 % of
1 MiB segments resetting their connection (the task is resumed from its checkpoint,
as the control plane would). Prints throughput as a share of the link, and peak RSS.

    .venv/bin/python -m bench.paired --size-mib 512
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from bench.wanproxy import WanProxy
from tests.conftest import MiB, make_disk
from tests.test_transfer import Source, Target

LINK = 25_000_000  # 200 Mbit/s in bytes/s
RTT = 0.050


def _scribble(path: Path, size: int, share: float) -> None:
    rnd = random.Random(7)
    with open(path, "r+b") as f:
        for _ in range(max(1, int(size / MiB * share))):
            f.seek(rnd.randrange(0, size - 4096))
            f.write(rnd.randbytes(4096))


async def _run(source, disk, port, repo, *, previous="", resets=False):
    """One replication; with resets, retried from the last checkpoint as a task is."""
    checkpoints = []

    async def progress(cp, *_):
        if cp is not None:
            checkpoints.append(cp)

    t0 = time.monotonic()
    for attempt in range(50):
        try:
            res = await source.replicate(disk, port, repo, previous=previous,
                                         checkpoint=checkpoints[-1] if checkpoints else None,
                                         progress=progress)
            return res, time.monotonic() - t0, attempt
        except BaseException as exc:  # noqa: BLE001 - a broken stream: resume
            if not resets:
                raise
            del exc
    raise RuntimeError("too many resets")


async def main(size_mib: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        disk = tmp / "disk.img"
        size = size_mib * MiB
        make_disk(disk, size, [(0, size)])
        cases = [("full, adaptive window", {}, 0.0),
                 ("full, fixed 1-chunk window",
                  dict(window_bytes=MiB + 1, min_window_bytes=MiB + 1,
                       max_window_bytes=MiB + 1), 0.0),
                 ("full, adaptive, 1 % of MiB reset", {}, 0.01)]
        for name, window, resets in cases:
            target = await Target(tmp, **window).start()
            source = Source(tmp)
            repo = str(tmp / f"repo-{len(out)}")
            try:
                async with WanProxy("127.0.0.1", target.port, rtt=RTT, rate_bytes_per_second=LINK,
                                    reset_probability=resets, reset_every_bytes=MiB,
                                    seed=1) as proxy:
                    res, secs, attempts = await _run(source, disk, proxy.port, repo,
                                                     resets=bool(resets))
                    out[name] = _row(size, secs, attempts)
                    if not out.get("incremental 1 %") and not window and not resets:
                        _scribble(disk, size, 0.01)
                        inc, secs, _ = await _run(source, disk, proxy.port, repo,
                                                  previous=res.root_hash)
                        out["incremental 1 %"] = dict(
                            seconds=round(secs, 2), chunks_sent=inc.stats.chunks_sent,
                            bytes_sent=inc.stats.bytes_sent)
            finally:
                await source.close()
                await target.stop()
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _row(size: int, secs: float, attempts: int) -> dict:
    rate = size / secs
    return dict(seconds=round(secs, 2), mb_per_s=round(rate / 1e6, 1),
                share_of_link=round(rate / LINK, 3), resumed=attempts)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=4096)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main(args.size_mib)), indent=2))
