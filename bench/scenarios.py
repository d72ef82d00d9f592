"""The scenarios P1-P6, P1-NBD and P2-CBT: build data, measure ours and the baselines
in the same run.

Every measurement is repeated `runs` times and the median is quoted; ours and the
baselines alternate within each run so that noise on this shared machine hits both
(except in P2-CBT, whose phases run one after the other to bound disk use: see there).
Before every timed measurement dirty pages are written back and, when the kernel
allows it, the page cache is dropped (so every read is cold; see `Settings.drop`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import GiB, KiB, MB, MiB, baselines, data, qcow2
from bench.worker import RESULT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
QEMU = "qemu-img convert"
RESTIC = "restic"
NBDCOPY = "nbdcopy"
P2_CHUNK_SIZES = (256 * KiB, 1 * MiB, 4 * MiB)
# P1-NBD: the quoted chunk size, then the others measured alongside (in extra).
NBD_CHUNK_SIZES = (1 * MiB, 256 * KiB)
# P2-CBT: 64 KiB is the bitmap granularity (a dirty granule is one chunk), 1 MiB the default.
CBT_CHUNK_SIZES = (64 * KiB, 1 * MiB)
# Our bitmaps carry the kvm source's prefix, so its rotation removes stale ones.
CBT_BITMAP = "hdr-bench"
# Goals (issue): P2-CBT cycle >= 20x faster than restic's second run, bytes read from
# the source <= 2x and stored bytes <= 4x the changed bytes; P1-NBD >= 0.7x nbdcopy.
CBT_SPEEDUP_GOAL, CBT_READ_GOAL, CBT_STORED_GOAL, NBD_GOAL = 20, 2, 4, 0.7
P4_LATENCY = 0.040
P4_RATE = 100e6


@dataclass
class Settings:
    work: Path
    runs: int = 3
    size: int = 4 * GiB            # P1, P2, P6 image
    chunk_size: int = 1 * MiB
    p2_fraction: float = 0.01
    p3_size: int = 64 * GiB
    p3_data: int = 1 * GiB
    p4_size: int = 1 * GiB
    p5_disks: int = 50
    p5_disk_size: int = 256 * MiB
    nbd_size: int = 2 * GiB        # P1-NBD's qcow2 image
    cbt_sizes: tuple[int, ...] = (2 * GiB, 16 * GiB)   # P2-CBT's qcow2 images
    p10_groups: tuple[int, ...] = (2, 4, 4)   # P10's boot groups (workloads in each)
    verify_max: int = 2 * GiB      # restores of P1-NBD / P2-CBT points checked up to this size
    drop: bool = True              # try to drop the page cache before each measurement
    keep_data: bool = False

    @classmethod
    def smoke(cls, work: Path, runs: int = 2) -> Settings:
        return cls(work=work, runs=runs, size=64 * MiB, p3_size=1 * GiB, p3_data=16 * MiB,
                   p4_size=64 * MiB, p5_disks=4, p5_disk_size=16 * MiB, nbd_size=64 * MiB,
                   cbt_sizes=(32 * MiB, 64 * MiB), p10_groups=(1, 2))


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mb_s(nbytes: int, seconds: float | None) -> float | None:
    return nbytes / seconds / MB if seconds else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Bench:
    s: Settings
    tools: dict[str, str | None]
    log: callable
    cache_drops: list[bool] = field(default_factory=list)
    state: dict = field(default_factory=dict)

    # -- helpers -----------------------------------------------------------------------

    def dir(self, *parts: str, fresh: bool = True) -> Path:
        p = self.s.work.joinpath(*parts)
        if fresh:
            shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def cold(self) -> None:
        self.cache_drops.append(baselines.drop_caches(self.s.drop))

    def worker(self, spec: dict) -> dict:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get(
            "PYTHONPATH", "")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(spec)],
                              capture_output=True, text=True, cwd=ROOT, env=env)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"bench worker {spec['op']} failed ({proc.returncode}):\n"
                               f"{proc.stderr.strip()[-4000:]}")
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_PREFIX):
                out = json.loads(line[len(RESULT_PREFIX):])
                out["process_seconds"] = elapsed
                return out
        raise RuntimeError(f"bench worker {spec['op']} printed no result:\n{proc.stdout[-2000:]}")

    def has(self, tool: str) -> bool:
        return self.tools.get(tool) is not None

    def base_image(self) -> Path:
        return data.make_image(self.s.work / "data" / "base.img", self.s.size, "base")

    def replicate(self, image: Path, repo: Path, *, chunk_size: int | None = None,
                  previous: str | None = None, **extra) -> dict:
        return self.worker({"op": "replicate", "image": str(image), "repo": str(repo),
                            "chunk_size": chunk_size or self.s.chunk_size,
                            "previous": previous, **extra})

    def kvm(self, image: Path, repo: Path, *, chunk_size: int, new_bitmap: str,
            previous_bitmap: str = "", previous: str | None = None) -> dict:
        """One cycle through the kvm source (KvmDisk: bitmaps, qemu-nbd, libnbd)."""
        return self.worker({"op": "replicate_kvm", "image": str(image), "repo": str(repo),
                            "chunk_size": chunk_size, "previous": previous,
                            "previous_bitmap": previous_bitmap, "new_bitmap": new_bitmap})

    def verify_restore(self, repo: Path, root_hash: str, image: Path, where: Path) -> bool:
        """Restores a point to raw (untimed) and compares it with the image's content."""
        dest = where / "restored.raw"
        dest.unlink(missing_ok=True)
        try:
            self.worker({"op": "restore", "repo": str(repo), "root_hash": root_hash,
                         "disk": "d1", "destination": str(dest)})
            return data.file_hash(dest) == qcow2.guest_hash(image, where)
        finally:
            dest.unlink(missing_ok=True)

    def _baseline(self, errors: dict, name: str, fn):
        try:
            return fn()
        except Exception as e:  # a broken tool is reported, not fatal
            errors[name] = str(e)[-500:]
            self.log(f"  {name} failed: {e}")
            return None

    def _progress(self, sid: str, run: int, what: str, nbytes: int, seconds: float) -> None:
        self.log(f"  {sid} run {run + 1}/{self.s.runs}: {what:<24} "
                 f"{nbytes / seconds / MB:9.1f} MB/s  ({seconds:.2f} s)")

    # -- P1 ----------------------------------------------------------------------------

    def p1(self) -> dict:
        img = self.base_image()
        size = self.s.size
        ours, qemu, restic, restic_added, rss, base_rss = [], [], [], [], [], {}
        errors: dict[str, str] = {}
        last = None
        rst = baselines.Restic(self.s.work / "p1" / "restic") if self.has("restic") else None
        for r in range(self.s.runs):
            repo = self.dir("p1", "repo")
            self.cold()
            last = self.replicate(img, repo)
            ours.append(last["seconds"])
            rss.append(last["peak_rss_mib"])
            self._progress("P1", r, "ours", size, last["seconds"])
            if self.has("qemu-img"):
                self.cold()
                t = self._baseline(errors, QEMU, lambda: baselines.qemu_convert(
                    img, self.s.work / "p1" / "qemu.raw"))
                if t:
                    qemu.append(t.seconds)
                    base_rss[QEMU] = max(base_rss.get(QEMU, 0), t.peak_rss_mib)
                    self._progress("P1", r, QEMU, size, t.seconds)
            if rst:
                def first_run():
                    rst.reset()
                    self.cold()
                    return rst.backup(img)
                res = self._baseline(errors, RESTIC, first_run)
                if res:
                    t, added = res
                    restic.append(t.seconds)
                    restic_added.append(added)
                    base_rss[RESTIC] = max(base_rss.get(RESTIC, 0), t.peak_rss_mib)
                    self._progress("P1", r, "restic backup (1st)", size, t.seconds)
        if rst:
            rst.remove()
        self.state["p1"] = {"repo": str(self.s.work / "p1" / "repo"),
                            "root_hash": last["root_hash"]}
        ours_mb = mb_s(size, median(ours))
        bl = {QEMU: mb_s(size, median(qemu)), RESTIC: mb_s(size, median(restic))}
        self.state["p1_ours_mb_s"] = ours_mb
        return {
            "id": "P1", "ours_mb_s": ours_mb, "peak_rss_mib": max(rss), "baselines": bl,
            "extra": {
                "image_bytes": size, "chunk_size": self.s.chunk_size,
                "ours_seconds": median(ours),
                "ours_startup_seconds": last["process_seconds"] - last["seconds"],
                "bytes_stored": last["stats"]["bytes_stored"], "stats": last["stats"],
                "budget_peak_bytes": last["budget_peak"],
                "ratio_vs_qemu": ratio(ours_mb, bl[QEMU]),
                "ratio_vs_restic": ratio(ours_mb, bl[RESTIC]),
                "restic_added_bytes": median(restic_added),
                "baseline_peak_rss_mib": base_rss,
                "runs_seconds": {"ours": ours, QEMU: qemu, RESTIC: restic},
                **({"baseline_errors": errors} if errors else {}),
            },
        }

    # -- P2 ----------------------------------------------------------------------------

    def p2(self) -> dict:
        img = self.base_image()
        size = self.s.size
        errors: dict[str, str] = {}
        repos, base_roots = {}, {}
        self.log("  P2: full syncs of the base image (untimed)")
        for cs in P2_CHUNK_SIZES:
            repos[cs] = self.dir("p2", f"repo-{cs // KiB}k")
            base_roots[cs] = self.replicate(img, repos[cs], chunk_size=cs)["root_hash"]
        rst = None
        if self.has("restic"):
            rst = baselines.Restic(self.s.work / "p2" / "restic")
            if self._baseline(errors, RESTIC, lambda: (rst.reset(), rst.backup(img))) is None:
                rst = None
        per_cs = {cs: {"seconds": [], "stored": [], "stats": None, "rss": []}
                  for cs in P2_CHUNK_SIZES}
        restic_s, restic_added, changed_bytes = [], [], 0
        base_rss: dict[str, float] = {}
        for r in range(self.s.runs):
            offsets = data.scattered_offsets(size, self.s.p2_fraction, seed=r)
            changed_bytes = data.apply_writes(img, offsets, f"p2-run{r}")
            try:
                for cs in P2_CHUNK_SIZES:
                    before = data.tree_file_bytes(repos[cs])
                    self.cold()
                    out = self.replicate(img, repos[cs], chunk_size=cs, previous=base_roots[cs])
                    assert not out["full_sync"], "P2's incremental ran as a full sync"
                    d = per_cs[cs]
                    d["seconds"].append(out["seconds"])
                    d["stored"].append(data.tree_file_bytes(repos[cs]) - before)
                    d["stats"] = out["stats"]
                    d["rss"].append(out["peak_rss_mib"])
                    self._progress("P2", r, f"ours {cs // KiB} KiB chunks", size, out["seconds"])
                if rst:
                    self.cold()
                    res = self._baseline(errors, RESTIC, lambda: rst.backup(img))
                    if res:
                        restic_s.append(res[0].seconds)
                        restic_added.append(res[1])
                        base_rss[RESTIC] = max(base_rss.get(RESTIC, 0), res[0].peak_rss_mib)
                        self._progress("P2", r, "restic backup (2nd)", size, res[0].seconds)
            finally:
                data.restore_writes(img, offsets)
        if rst:
            rst.remove()
        shutil.rmtree(self.s.work / "p2", ignore_errors=True)
        main = per_cs[self.s.chunk_size if self.s.chunk_size in per_cs else MiB]
        ours_mb = mb_s(size, median(main["seconds"]))
        restic_mb = mb_s(size, median(restic_s))
        restic_add = median(restic_added)
        chunks = {}
        for cs, d in per_cs.items():
            stored = median(d["stored"])
            chunks[f"{cs // KiB}KiB"] = {
                "seconds": median(d["seconds"]), "mb_s": mb_s(size, median(d["seconds"])),
                "stored_bytes": stored, "amplification": stored / changed_bytes,
                "stored_vs_restic": ratio(stored, restic_add), "stats": d["stats"],
                "peak_rss_mib": max(d["rss"]), "runs_seconds": d["seconds"]}
        return {
            "id": "P2", "ours_mb_s": ours_mb,
            "peak_rss_mib": max(max(d["rss"]) for d in per_cs.values()),
            "baselines": {RESTIC: restic_mb},
            "extra": {
                "image_bytes": size, "changed_bytes": changed_bytes,
                "writes": len(offsets), "write_size": data.WRITE_SIZE,
                "chunk_size": MiB, "ours_seconds": median(main["seconds"]),
                "ratio_vs_restic": ratio(ours_mb, restic_mb),
                "chunk_sizes": chunks,
                "restic_seconds": median(restic_s), "restic_added_bytes": restic_add,
                "restic_runs_seconds": restic_s, "baseline_peak_rss_mib": base_rss,
                **({"baseline_errors": errors} if errors else {}),
            },
        }

    # -- P1-NBD ------------------------------------------------------------------------

    def nbd_image(self) -> Path:
        return qcow2.make_qcow2(self.s.work / "data" / "nbd.qcow2", self.s.nbd_size, "nbd")

    def p1_nbd(self) -> dict:
        s = self.s
        img = self.nbd_image()
        size = s.nbd_size
        per_cs = {cs: {"seconds": [], "open": [], "rss": [], "last": None}
                  for cs in NBD_CHUNK_SIZES}
        nbd_s: list[float] = []
        errors: dict[str, str] = {}
        base_rss: dict[str, float] = {}
        out_dir = self.dir("p1nbd")
        for r in range(s.runs):
            for n, cs in enumerate(NBD_CHUNK_SIZES):
                if n == 1 and self.has(NBDCOPY):  # ours (main), nbdcopy, ours (others)
                    self.cold()
                    t = self._baseline(errors, NBDCOPY, lambda: baselines.nbdcopy_qcow2(
                        img, out_dir / "nbdcopy.raw"))
                    if t:
                        nbd_s.append(t.seconds)
                        base_rss[NBDCOPY] = max(base_rss.get(NBDCOPY, 0), t.peak_rss_mib)
                        self._progress("P1-NBD", r, NBDCOPY, size, t.seconds)
                repo = self.dir("p1nbd", f"repo-{cs // KiB}k")
                self.cold()
                out = self.kvm(img, repo, chunk_size=cs, new_bitmap=f"{CBT_BITMAP}-full")
                assert out["full_sync_reason"] == "first-cycle", out["full_sync_reason"]
                d = per_cs[cs]
                d["seconds"].append(out["seconds"])
                d["open"].append(out["open_seconds"])
                d["rss"].append(out["peak_rss_mib"])
                d["last"] = out
                self._progress("P1-NBD", r, f"ours {cs // KiB} KiB chunks", size,
                               out["seconds"])
        main_cs = NBD_CHUNK_SIZES[0]
        verified = None
        if size <= s.verify_max:
            self.log("  P1-NBD: restoring the point and comparing it with the image (untimed)")
            verified = self.verify_restore(out_dir / f"repo-{main_cs // KiB}k",
                                           per_cs[main_cs]["last"]["root_hash"], img, out_dir)
        qcow2.remove_bitmaps(img, CBT_BITMAP)
        shutil.rmtree(out_dir, ignore_errors=True)
        main = per_cs[main_cs]
        ours_mb = mb_s(size, median(main["seconds"]))
        nbd_mb = mb_s(size, median(nbd_s))
        chunks = {f"{cs // KiB}KiB": {
            "seconds": median(d["seconds"]), "mb_s": mb_s(size, median(d["seconds"])),
            "ratio_vs_nbdcopy": ratio(mb_s(size, median(d["seconds"])), nbd_mb),
            "open_seconds": median(d["open"]), "peak_rss_mib": max(d["rss"]),
            "stats": d["last"]["stats"], "runs_seconds": d["seconds"]}
            for cs, d in per_cs.items()}
        return {
            "id": "P1-NBD", "ours_mb_s": ours_mb, "peak_rss_mib": max(main["rss"]),
            "baselines": {NBDCOPY: nbd_mb},
            "extra": {
                "image_bytes": size, "image_allocated_bytes": qcow2.allocated(img),
                "chunk_size": main_cs, "ours_seconds": median(main["seconds"]),
                "ours_open_seconds": median(main["open"]),
                "source_bytes_read": main["last"]["source_bytes_read"],
                "bytes_stored": main["last"]["stats"]["bytes_stored"],
                "ratio_vs_nbdcopy": ratio(ours_mb, nbd_mb),
                "goal_ratio_vs_nbdcopy": NBD_GOAL,
                "goal_met": None if ratio(ours_mb, nbd_mb) is None else
                ratio(ours_mb, nbd_mb) >= NBD_GOAL,
                "chunk_sizes": chunks, "nbdcopy_seconds": median(nbd_s),
                "verified": verified, "baseline_peak_rss_mib": base_rss,
                "runs_seconds": {"ours": main["seconds"], NBDCOPY: nbd_s},
                **({"baseline_errors": errors} if errors else {}),
            },
        }

    # -- P2-CBT ------------------------------------------------------------------------

    def p2_cbt(self) -> dict:
        sizes = {}
        rss = 0.0
        for size in self.s.cbt_sizes:
            sizes[_size_key(size)] = res = self._cbt_size(size)
            rss = max([rss, *(c["peak_rss_mib"] for c in res["chunk_sizes"].values())])
        # The row quotes the largest image at the bitmap granularity.
        big = sizes[_size_key(max(self.s.cbt_sizes))]
        main = big["chunk_sizes"][f"{CBT_CHUNK_SIZES[0] // KiB}KiB"]
        return {
            "id": "P2-CBT", "ours_mb_s": main["mb_s"], "peak_rss_mib": rss,
            "baselines": {RESTIC: big["restic_mb_s"]},
            "extra": {
                "image_bytes": big["image_bytes"], "chunk_size": CBT_CHUNK_SIZES[0],
                "changed_bytes": big["changed_bytes"], "ours_seconds": main["seconds"],
                "speedup_vs_restic": main["speedup_vs_restic"],
                "goals": {"speedup_vs_restic": CBT_SPEEDUP_GOAL,
                          "read_over_changed": CBT_READ_GOAL,
                          "stored_over_changed": CBT_STORED_GOAL},
                "sizes": sizes,
            },
        }

    def _cbt_size(self, size: int) -> dict:
        """One image size: a phase per chunk size, then restic's, on the same changes.

        Each phase starts from the same image content: a full sync (or restic's first
        run), untimed, then `runs` times: 1 % scattered 64 KiB writes through qemu-io
        (offsets seeded by the run number, data seeded by the run number too, so every
        phase sees byte for byte the same changes), then the timed incremental (restic's
        next backup). Runs chain: run r's incremental is against run r-1's point. At
        the end of a phase the original data is written back at every offset touched.
        Phases run one after the other so that only one repository of the image's size
        exists at a time (16 GiB: image + one repository, not three).
        """
        s = self.s
        key = _size_key(size)
        img = qcow2.make_qcow2(s.work / "data" / f"cbt-{key}.qcow2", size, f"cbt-{key}")
        work = self.dir("p2cbt")
        scratch = work / "scratch"
        runs = [data.scattered_offsets(size, s.p2_fraction, seed=r) for r in range(s.runs)]
        touched = sorted(set().union(*runs))
        changed = len(runs[0]) * data.WRITE_SIZE

        def change(r: int) -> None:
            qcow2.scattered_writes(img, runs[r], f"cbt-change-{r}", scratch)

        def undo() -> None:
            qcow2.scattered_writes(img, touched, f"cbt-{key}", scratch)

        chunks, errors = {}, {}
        for cs in CBT_CHUNK_SIZES:
            ck = f"{cs // KiB}KiB"
            repo = self.dir("p2cbt", f"repo-{ck}")
            bitmap = f"{CBT_BITMAP}-{ck}-0"
            self.log(f"  P2-CBT {key}: full sync, {ck} chunks (untimed)")
            first = self.kvm(img, repo, chunk_size=cs, new_bitmap=bitmap)
            assert first["full_sync_reason"] == "first-cycle", first["full_sync_reason"]
            root = first["root_hash"]
            d = {"seconds": [], "open": [], "read": [], "stored": [], "rss": [], "stats": []}
            for r in range(s.runs):
                change(r)
                before = data.tree_file_bytes(repo)
                self.cold()
                new = f"{CBT_BITMAP}-{ck}-{r + 1}"
                out = self.kvm(img, repo, chunk_size=cs, previous=root,
                               previous_bitmap=bitmap, new_bitmap=new)
                assert not out["full_sync"] and not out["full_sync_reason"], \
                    f"P2-CBT's incremental ran as a full sync ({out['full_sync_reason']})"
                d["stored"].append(data.tree_file_bytes(repo) - before)
                d["seconds"].append(out["seconds"])
                d["open"].append(out["open_seconds"])
                d["read"].append(out["source_bytes_read"])
                d["rss"].append(out["peak_rss_mib"])
                d["stats"].append(out["stats"])
                root, bitmap = out["root_hash"], new
                self._progress(f"P2-CBT {key}", r, f"ours {cs // KiB} KiB chunks", size,
                               out["seconds"])
            verified = None
            if size <= s.verify_max:
                self.log(f"  P2-CBT {key}: restoring the last point, comparing (untimed)")
                verified = self.verify_restore(repo, root, img, work)
            shutil.rmtree(repo)
            undo()
            chunks[ck] = d | {"verified": verified}
        restic_s, restic_added, base_rss = [], [], {}
        if self.has("restic"):
            rst = baselines.Restic(work / "restic")
            self.log(f"  P2-CBT {key}: restic's first backup (untimed)")
            if self._baseline(errors, RESTIC, lambda: (rst.reset(), rst.backup(img))):
                for r in range(s.runs):
                    change(r)
                    self.cold()
                    res = self._baseline(errors, RESTIC, lambda: rst.backup(img))
                    if res is None:
                        break
                    restic_s.append(res[0].seconds)
                    restic_added.append(res[1])
                    base_rss[RESTIC] = max(base_rss.get(RESTIC, 0), res[0].peak_rss_mib)
                    self._progress(f"P2-CBT {key}", r, "restic backup (2nd)", size,
                                   res[0].seconds)
                undo()
            rst.remove()
        qcow2.remove_bitmaps(img, CBT_BITMAP)
        qcow2.mark_clean(img)
        shutil.rmtree(work, ignore_errors=True)
        if not s.keep_data:
            qcow2.remove(img)
        restic_sec = median(restic_s)
        out_chunks = {}
        for ck, d in chunks.items():
            sec, read, stored = median(d["seconds"]), median(d["read"]), median(d["stored"])
            speedup = ratio(restic_sec, sec)
            out_chunks[ck] = {
                "seconds": sec, "mb_s": mb_s(size, sec), "open_seconds": median(d["open"]),
                "speedup_vs_restic": speedup,
                "source_bytes_read": read, "read_over_changed": read / changed,
                "stored_bytes": stored, "stored_over_changed": stored / changed,
                "goals_met": {
                    "speedup_vs_restic": None if speedup is None else
                    speedup >= CBT_SPEEDUP_GOAL,
                    "read_over_changed": read / changed <= CBT_READ_GOAL,
                    "stored_over_changed": stored / changed <= CBT_STORED_GOAL},
                "stats": d["stats"][-1], "peak_rss_mib": max(d["rss"]),
                "verified": d["verified"], "runs_seconds": d["seconds"]}
        return {
            "image_bytes": size, "changed_bytes": changed, "writes": len(runs[0]),
            "write_size": data.WRITE_SIZE, "chunk_sizes": out_chunks,
            "restic_seconds": restic_sec, "restic_mb_s": mb_s(size, restic_sec),
            "restic_added_bytes": median(restic_added),
            "restic_added_over_changed": ratio(median(restic_added), changed),
            "restic_runs_seconds": restic_s, "baseline_peak_rss_mib": base_rss,
            **({"baseline_errors": errors} if errors else {}),
        }

    # -- P3 ----------------------------------------------------------------------------

    def p3(self) -> dict:
        s = self.s
        extents = data.sparse_extents(s.p3_size, s.p3_data)
        sparse = data.make_image(s.work / "data" / "p3-sparse.img", s.p3_size, "p3", extents)
        dense = data.make_image(s.work / "data" / "p3-dense.img", s.p3_data, "p3")
        sp, de, rss, qemu = [], [], [], []
        errors: dict[str, str] = {}
        last = None
        base_rss: dict[str, float] = {}
        for r in range(s.runs):
            self.cold()
            last = self.replicate(sparse, self.dir("p3", "repo-sparse"))
            sp.append(last["seconds"])
            rss.append(last["peak_rss_mib"])
            self._progress("P3", r, "ours sparse (data)", s.p3_data, last["seconds"])
            self.cold()
            out = self.replicate(dense, self.dir("p3", "repo-dense"))
            de.append(out["seconds"])
            self._progress("P3", r, "ours dense", s.p3_data, out["seconds"])
            if self.has("qemu-img"):
                self.cold()
                t = self._baseline(errors, QEMU, lambda: baselines.qemu_convert(
                    sparse, s.work / "p3" / "qemu.raw"))
                if t:
                    qemu.append(t.seconds)
                    base_rss[QEMU] = max(base_rss.get(QEMU, 0), t.peak_rss_mib)
                    self._progress("P3", r, f"{QEMU} sparse", s.p3_data, t.seconds)
        shutil.rmtree(s.work / "p3", ignore_errors=True)
        ours_mb = mb_s(s.p3_data, median(sp))
        qemu_mb = mb_s(s.p3_data, median(qemu))
        return {
            "id": "P3", "ours_mb_s": ours_mb, "peak_rss_mib": max(rss),
            "baselines": {QEMU: qemu_mb},
            "extra": {
                "disk_bytes": s.p3_size, "data_bytes": s.p3_data, "extents": len(extents),
                "sparse_seconds": median(sp), "dense_seconds": median(de),
                "sparse_over_dense_time": ratio(median(sp), median(de)),
                "logical_mb_s": mb_s(s.p3_size, median(sp)),
                "bytes_read": last["stats"]["bytes_read"],
                "chunks_zero": last["stats"]["chunks_zero"],
                "budget_bytes": last["budget_bytes"], "budget_peak_bytes": last["budget_peak"],
                "rss_before_mib": last["rss_before_mib"],
                "rss_over_budget_mib": max(rss) - last["budget_bytes"] / MiB,
                "ratio_vs_qemu": ratio(ours_mb, qemu_mb), "baseline_peak_rss_mib": base_rss,
                "runs_seconds": {"sparse": sp, "dense": de, QEMU: qemu},
                **({"baseline_errors": errors} if errors else {}),
            },
        }

    # -- P4 ----------------------------------------------------------------------------

    def p4(self) -> dict:
        s = self.s
        img = data.make_image(s.work / "data" / "p4.img", s.p4_size, "p4")
        link = {"latency": P4_LATENCY, "rate": P4_RATE}
        adaptive, single, rss = [], [], []
        last = w1 = None
        for r in range(s.runs):
            self.cold()
            last = self.replicate(img, self.dir("p4", "repo"), link=link)
            adaptive.append(last["seconds"])
            rss.append(last["peak_rss_mib"])
            self._progress("P4", r, "ours adaptive", s.p4_size, last["seconds"])
            self.cold()
            w1 = self.replicate(img, self.dir("p4", "repo"), link=link, window=1)
            single.append(w1["seconds"])
            rss.append(w1["peak_rss_mib"])
            self._progress("P4", r, "ours window 1", s.p4_size, w1["seconds"])
        shutil.rmtree(s.work / "p4", ignore_errors=True)
        ours_mb = mb_s(s.p4_size, median(adaptive))
        cap = P4_RATE / MB
        return {
            "id": "P4", "ours_mb_s": ours_mb, "peak_rss_mib": max(rss), "baselines": {},
            "extra": {
                "image_bytes": s.p4_size, "latency_ms": P4_LATENCY * 1000, "cap_mb_s": cap,
                "adaptive_mb_s": ours_mb, "window1_mb_s": mb_s(s.p4_size, median(single)),
                "fraction_of_cap": ours_mb / cap,
                "window1_fraction_of_cap": mb_s(s.p4_size, median(single)) / cap,
                "limiter_final": last["limiter"]["final_limit"],
                "limiter_max": last["limiter"]["max_limit"],
                "limiter_changes": last["limiter"]["changes"],
                "link_requests": last["link"]["requests"],
                "limiter_decreases": last["limiter"]["decreases"],
                "link_mean_put_ms": last["link"]["mean_put_seconds"] * 1000,
                "link_max_put_ms": last["link"]["max_put_seconds"] * 1000,
                "window1_mean_put_ms": w1["link"]["mean_put_seconds"] * 1000,
                "runs_seconds": {"adaptive": adaptive, "window1": single},
            },
        }

    # -- P5 ----------------------------------------------------------------------------

    def p5(self) -> dict:
        s = self.s
        images = [data.make_image(s.work / "data" / "p5" / f"disk{i:02d}.img",
                                  s.p5_disk_size, f"p5-{i}") for i in range(s.p5_disks)]
        total = s.p5_disks * s.p5_disk_size
        secs, rss, finishes, qemu = [], [], [], []
        errors: dict[str, str] = {}
        base_rss: dict[str, float] = {}
        last = None
        for r in range(s.runs):
            repo = self.dir("p5", "repo")
            self.cold()
            last = self.worker({"op": "replicate_many", "images": [str(p) for p in images],
                                "repo": str(repo), "chunk_size": s.chunk_size})
            secs.append(last["seconds"])
            rss.append(last["peak_rss_mib"])
            finishes.append(last["finish_seconds"])
            self._progress("P5", r, f"ours {s.p5_disks} disks", total, last["seconds"])
            shutil.rmtree(repo)
            if self.has("qemu-img"):
                out_dir = self.dir("p5", "qemu")
                self.cold()
                t = self._baseline(errors, QEMU, lambda: baselines.qemu_convert_many(
                    [(p, out_dir / p.name) for p in images]))
                if t:
                    qemu.append(t.seconds)
                    base_rss[QEMU] = max(base_rss.get(QEMU, 0), t.peak_rss_mib)
                    self._progress("P5", r, f"{QEMU} x{s.p5_disks}", total, t.seconds)
        shutil.rmtree(s.work / "p5", ignore_errors=True)
        # The run whose wall time is the median is the one whose spread is reported.
        mid = sorted(range(len(secs)), key=lambda i: secs[i])[(len(secs) - 1) // 2]
        fin = finishes[mid]
        med = statistics.median(fin)
        ours_mb = mb_s(total, median(secs))
        qemu_mb = mb_s(total, median(qemu))
        p1 = self.state.get("p1_ours_mb_s")
        return {
            "id": "P5", "ours_mb_s": ours_mb, "peak_rss_mib": max(rss),
            "baselines": {QEMU: qemu_mb},
            "extra": {
                "ratio_vs_qemu": ratio(ours_mb, qemu_mb), "baseline_peak_rss_mib": base_rss,
                **({"baseline_errors": errors} if errors else {}),
                "disks": s.p5_disks, "disk_bytes": s.p5_disk_size, "total_bytes": total,
                "aggregate_mb_s": ours_mb, "p1_ours_mb_s": p1, "ratio_vs_p1": ratio(ours_mb, p1),
                "finish_seconds_min": min(fin), "finish_seconds_median": med,
                "finish_seconds_max": max(fin),
                "finish_max_deviation_pct": max(abs(f - med) for f in fin) / med * 100,
                "budget_peak_bytes": last["budget_peak"], "budget_bytes": last["budget_bytes"],
                "runs_seconds": {"ours": secs, QEMU: qemu},
            },
        }

    # -- P6 ----------------------------------------------------------------------------

    def p6(self) -> dict:
        img = self.base_image()
        size = self.s.size
        p1 = self.state.get("p1")
        if p1 is None or not Path(p1["repo"]).is_dir():
            self.log("  P6: full sync of the base image to restore from (untimed)")
            repo = self.dir("p6", "repo")
            p1 = {"repo": str(repo), "root_hash": self.replicate(img, repo)["root_hash"]}
        out_dir = self.dir("p6", "restore")
        dest = out_dir / "restored.raw"
        ours, qemu, rss = [], [], []
        errors: dict[str, str] = {}
        base_rss: dict[str, float] = {}
        for r in range(self.s.runs):
            dest.unlink(missing_ok=True)
            self.cold()
            out = self.worker({"op": "restore", "repo": p1["repo"], "root_hash": p1["root_hash"],
                               "disk": "d1", "destination": str(dest)})
            ours.append(out["seconds"])
            rss.append(out["peak_rss_mib"])
            self._progress("P6", r, "ours restore", size, out["seconds"])
            if self.has("qemu-img"):
                self.cold()
                t = self._baseline(errors, QEMU, lambda: baselines.qemu_convert(
                    img, out_dir / "qemu.raw"))
                if t:
                    qemu.append(t.seconds)
                    base_rss[QEMU] = max(base_rss.get(QEMU, 0), t.peak_rss_mib)
                    self._progress("P6", r, QEMU, size, t.seconds)
        self.log("  P6: comparing the restored image with the source (untimed)")
        src_hash, out_hash = data.file_hash(img), data.file_hash(dest)
        shutil.rmtree(self.s.work / "p6", ignore_errors=True)
        shutil.rmtree(self.s.work / "p1", ignore_errors=True)
        ours_mb = mb_s(size, median(ours))
        qemu_mb = mb_s(size, median(qemu))
        return {
            "id": "P6", "ours_mb_s": ours_mb, "peak_rss_mib": max(rss),
            "baselines": {QEMU: qemu_mb},
            "extra": {
                "image_bytes": size, "ours_seconds": median(ours),
                "ratio_vs_qemu": ratio(ours_mb, qemu_mb),
                "verified": src_hash == out_hash, "source_blake3": src_hash,
                "restored_blake3": out_hash, "baseline_peak_rss_mib": base_rss,
                "runs_seconds": {"ours": ours, QEMU: qemu},
                **({"baseline_errors": errors} if errors else {}),
            },
        }

    # -- P9 ----------------------------------------------------------------------------

    def p9(self) -> dict:
        from bench import paired  # starts daemons: imported only when P9 runs
        return paired.p9(self)

    # -- P10 ---------------------------------------------------------------------------

    def p10(self) -> dict:
        from bench import recovery  # starts daemons, QEMU and moto: only when P10 runs
        return recovery.p10(self)

    def cleanup(self) -> None:
        for name in ("p1", "p1nbd", "p2", "p2cbt", "p3", "p4", "p5", "p6", "p9"):
            shutil.rmtree(self.s.work / name, ignore_errors=True)
        if not self.s.keep_data:
            shutil.rmtree(self.s.work / "data", ignore_errors=True)


def _size_key(size: int) -> str:
    """2GiB, 64MiB: the key of an image size in results.json."""
    return f"{size // GiB}GiB" if size % GiB == 0 else f"{size // MiB}MiB"


SCENARIOS = {
    "P1": ("full sync, raw image -> fs repository", Bench.p1),
    "P1-NBD": ("full sync, qcow2 over NBD (kvm source)", Bench.p1_nbd),
    "P2": ("incremental after 1 % scattered 64 KiB writes (hash diff)", Bench.p2),
    "P2-CBT": ("incremental after 1 % scattered 64 KiB writes (qcow2 dirty bitmap)",
               Bench.p2_cbt),
    "P3": ("sparse disk: 1 GiB of data in 64 GiB", Bench.p3),
    "P4": ("40 ms/request, 100 MB/s link, adaptive concurrency", Bench.p4),
    "P5": ("many disks at once on one node", Bench.p5),
    "P6": ("restore a recovery point -> raw, verified", Bench.p6),
    "P9": ("paired nodes over a 50 ms, 200 Mbit/s WAN (separate processes)", Bench.p9),
    "P10": ("recovery plan, 10 workloads in 3 boot groups: RTO split, forecast (kvm, EC2)",
            Bench.p10),
}
# Scenarios that read through the kvm source (qemu-io, qemu-nbd, libnbd's module).
KVM_SCENARIOS = ("P1-NBD", "P2-CBT")
