"""`make demo`: protect a 1 GiB disk, change it twice, restore the first and the latest
recovery points, and show they equal the source at those moments.

Everything runs on loopback in ./demo-work: one dr-control (SQLite), one dr-node, an
`fs` repository. No cloud account or external server is needed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from tools.localcluster import Cluster, sha256, wait_for

MiB = 1 << 20
GiB = 1 << 30


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def make_sample_disk(path: Path, size: int, rnd: random.Random) -> None:
    """Data extents with holes between them, and one allocated-but-zero extent."""
    with open(path, "wb") as f:
        f.truncate(size)
        for start_mib, length_mib in ((0, 64), (200, 48), (512, 32), (900, 16)):
            f.seek(start_mib * MiB)
            for _ in range(length_mib):
                f.write(rnd.randbytes(MiB))
        f.seek(700 * MiB)
        f.write(bytes(16 * MiB))  # allocated zeros: detected, never sent


def change(path: Path, rnd: random.Random, writes: int) -> None:
    """Scattered 64 KiB writes, as a running guest would make."""
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        for _ in range(writes):
            os.pwrite(fd, rnd.randbytes(64 << 10), rnd.randrange(0, size - (64 << 10), 4096))
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="demo-work")
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rnd = random.Random(2026)
    c = Cluster(work)
    disk = c.src / "vm1.img"
    print(f"==> making a {args.size_mib} MiB sample disk with data and holes: {disk}")
    make_sample_disk(disk, args.size_mib * MiB, rnd)
    try:
        print(f"==> starting dr-control on {c.address} and one dr-node (logs in {work})")
        c.start_control()
        c.start_node("n1")
        run = lambda *a: print(c.drctl(*a)[1], end="")  # noqa: E731
        run("site", "add", "src", "--kind", "file", "--path", str(c.src))
        run("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        print("==> protecting src/vm1 (RPO 1h); the first cycle starts at once")
        run("plan", "create", "demo", "--source", "src", "--target", "dst",
            "--workload", "src/vm1", "--rpo", "1h")
        sums = [sha256(disk)]
        wait_for(lambda: c.points("demo"), timeout=600, what="the first recovery point")
        for i, writes in enumerate((200, 400), start=2):
            print(f"==> change {i - 1}: {writes} scattered 64 KiB writes; cycle {i}")
            change(disk, rnd, writes)
            sums.append(sha256(disk))
            c.drctl("plan", "run", "demo", "--wait")
        points = c.points("demo")
        first, latest = points[0], points[-1]
        ok = True
        for label, point, expected in (("first", first, sums[0]), ("latest", latest, sums[-1])):
            dest = c.out / f"{label}.raw"
            print(f"==> restoring the {label} recovery point {point['name']}")
            c.drctl("restore", point["name"], "--to", str(dest))
            got = sha256(dest)
            same = got == expected
            ok &= same
            print(f"    sha256 source then: {expected}\n    sha256 restored:    {got}  "
                  f"{'EQUAL' if same else 'DIFFERENT'}")
        print("\n==> summary")
        print(f"{'cycle':<6} {'seconds':>8} {'read':>11} {'sent':>11} {'stored':>11} "
              f"{'chunks sent':>12} {'unchanged':>10} {'zero':>6}")
        for cy in c.cycles("demo"):
            s = {k: int(v) for k, v in cy["stats"].items()}
            secs = (datetime.fromisoformat(cy["end_time"].replace("Z", "+00:00")) -
                    datetime.fromisoformat(cy["create_time"].replace("Z", "+00:00"))
                    ).total_seconds()
            print(f"{cy['name'].rsplit('/', 1)[1]:<6} {secs:>8.2f} "
                  f"{_human(s.get('bytes_read', 0)):>11} {_human(s.get('bytes_sent', 0)):>11} "
                  f"{_human(s.get('bytes_stored', 0)):>11} {s.get('chunks_sent', 0):>12} "
                  f"{s.get('chunks_unchanged', 0):>10} {s.get('chunks_zero', 0):>6}")
        print(f"\nrestores equal to the source at their points in time: {'yes' if ok else 'NO'}")
        return 0 if ok else 1
    finally:
        print("==> stopping dr-node and dr-control")
        c.stop()


if __name__ == "__main__":
    t0 = time.monotonic()
    code = main()
    print(f"demo finished in {time.monotonic() - t0:.1f}s")
    sys.exit(code)
