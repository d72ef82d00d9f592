"""Machine description, the printed table, bench/results.json and docs/BENCHMARKS.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

from bench import KiB, MiB

QEMU, RESTIC, NBDCOPY = "qemu-img convert", "restic", "nbdcopy"


def machine(versions: dict, page_cache: str, work: Path) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    fs = _filesystem(work)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "qemu_img": versions.get("qemu-img"),
        "restic": versions.get("restic"),
        "nbdcopy": versions.get("nbdcopy"),
        "filesystem": fs,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "page_cache": page_cache,
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _filesystem(path: Path) -> str:
    """Type and device of the filesystem holding `path` (longest mount point prefix)."""
    try:
        p = str(path.resolve())
        best = ("", "?", "?")
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ = line.split()[:3]
            if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[0]):
                best = (mnt, typ, dev)
        return f"{best[1]} on {best[2]}"
    except OSError:
        return "unknown"


# -- the table ------------------------------------------------------------------------

def _f(x, fmt="{:.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _mib(nbytes) -> str:
    if nbytes is None:
        return "-"
    m = nbytes / MiB
    return f"{m:.1f}" if m < 10 else f"{m:.0f}"


def _size(nbytes: int) -> str:
    """4 GiB, 64 MiB, 1.5 GiB."""
    for unit, name in ((1 << 30, "GiB"), (MiB, "MiB"), (1024, "KiB")):
        if nbytes >= unit:
            return f"{nbytes / unit:g} {name}"
    return f"{nbytes} B"


def _key_extras(s: dict) -> str:
    e = s["extra"]
    sid = s["id"]
    if sid == "P1":
        return f"stored {_mib(e['bytes_stored'])} MiB"
    if sid == "P2":
        amp = ", ".join(f"{k} {_mib(v['stored_bytes'])} MiB (x{v['amplification']:.1f})"
                        for k, v in e["chunk_sizes"].items())
        return (f"changed {_mib(e['changed_bytes'])} MiB; stored {amp}; restic added "
                f"{_mib(e.get('restic_added_bytes'))} MiB")
    if sid == "P1-NBD":
        other = ", ".join(f"{k} {_f(v['mb_s'])} MB/s (x{_f(v['ratio_vs_nbdcopy'], '{:.2f}')})"
                          for k, v in list(e["chunk_sizes"].items())[1:])
        return (f"{_size(e['image_bytes'])} qcow2, {e['chunk_size'] // KiB} KiB chunks; "
                f"{other}; restore " + _verified(e.get("verified")))
    if sid == "P2-CBT":
        parts = []
        for size, z in e["sizes"].items():
            cs = "; ".join(
                f"{k} {_f(c['seconds'], '{:.2f}')} s ({_f(c['speedup_vs_restic'], '{:.0f}')}x "
                f"restic), read x{c['read_over_changed']:.1f}, stored "
                f"x{c['stored_over_changed']:.1f}" for k, c in z["chunk_sizes"].items())
            parts.append(f"{size}: changed {_mib(z['changed_bytes'])} MiB; {cs}; restic "
                         f"{_f(z['restic_seconds'], '{:.1f}')} s")
        return " | ".join(parts)
    if sid == "P3":
        return (f"time sparse/dense {_f(e['sparse_over_dense_time'], '{:.2f}')}; read "
                f"{_size(e['bytes_read'])} of {_size(e['disk_bytes'])}; "
                f"budget {_size(e['budget_bytes'])}")
    if sid == "P4":
        return (f"{e['fraction_of_cap'] * 100:.0f} % of {e['cap_mb_s']:.0f} MB/s; window 1: "
                f"{e['window1_mb_s']:.1f} MB/s; limit final {e['limiter_final']:.1f} "
                f"max {e['limiter_max']:.1f}")
    if sid == "P5":
        return (f"{e['disks']} x {_size(e['disk_bytes'])}; x{_f(e['ratio_vs_p1'], '{:.2f}')}"
                f" of P1; finish {e['finish_seconds_min']:.1f}/{e['finish_seconds_median']:.1f}/"
                f"{e['finish_seconds_max']:.1f} s (±{e['finish_max_deviation_pct']:.0f} %)")
    if sid == "P6":
        return "restored image " + ("identical" if e["verified"] else "DIFFERS")
    if sid == "P9":
        fixed, resets, inc = e["fixed_one_chunk"], e["resets_1pct"], e["incremental_1pct"]
        return (f"{e['share_of_link'] * 100:.0f} % of {e['link_mbit']} Mbit/s "
                f"({e['share_of_measured_link'] * 100:.0f} % of the measured link); fixed "
                f"1-chunk window {fixed['share_of_link'] * 100:.0f} %; 1 % resets "
                f"{resets['share_of_link'] * 100:.0f} % ({resets['resets']} resets); "
                f"incremental 1 % {inc['seconds']:.1f} s")
    if sid == "P10":
        parts = []
        for name, p in e["platforms"].items():
            fc = p.get("forecast_error_pct")
            parts.append(
                f"{name}: RTO {p['rto_seconds']:.1f} s = restore {p['restore_seconds']:.1f} + "
                f"provider {p['provider_seconds']:.1f} + validation "
                f"{p['validation_seconds']:.1f} + overhead {p['overhead_seconds']:.2f} s "
                f"({p['overhead_pct']:.1f} %); forecast "
                + ("-" if fc is None else f"{fc:+.0f} %"))
        return "; ".join(parts) + "; MB/s = kvm restore"
    return ""


def _verified(v: bool | None) -> str:
    return "not checked" if v is None else ("identical" if v else "DIFFERS")


COLUMNS = ("id", "scenario", "ours MB/s", "qemu-img MB/s", "ours/qemu", "restic MB/s",
           "ours/restic", "nbdcopy MB/s", "ours/nbdcopy", "peak RSS MiB", "notes")


def rows(results: dict, titles: dict[str, str]) -> list[list[str]]:
    out = []
    for s in results["scenarios"]:
        b = s["baselines"]
        q, r, n = b.get(QEMU), b.get(RESTIC), b.get(NBDCOPY)
        ours = s["ours_mb_s"]
        out.append([s["id"], titles.get(s["id"], ""), _f(ours), _f(q),
                    _f(ours / q if ours and q else None, "{:.2f}"), _f(r),
                    _f(ours / r if ours and r else None, "{:.2f}"), _f(n),
                    _f(ours / n if ours and n else None, "{:.2f}"), _f(s["peak_rss_mib"]),
                    _key_extras(s)])
    return out


def text_table(results: dict, titles: dict[str, str]) -> str:
    data = [list(COLUMNS), *rows(results, titles)]
    widths = [max(len(r[i]) for r in data) for i in range(len(COLUMNS) - 1)]
    lines = []
    for n, r in enumerate(data):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells + [r[-1]]))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)


def markdown_table(results: dict, titles: dict[str, str]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows(results, titles):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, path)


def merge(path: Path, new: dict, order: list[str]) -> dict:
    """The committed results at `path` with `new`'s scenarios in place of theirs, each
    marked with its run's date and runs, and listed in machine["merged"]."""
    old = json.loads(path.read_text())
    stamp = {"date": new["machine"]["date"], "runs": new["machine"]["runs"]}
    by_id = {s["id"]: s for s in old["scenarios"]}
    for s in new["scenarios"]:
        by_id[s["id"]] = {**s, "measured": stamp}
    old["scenarios"] = [by_id[i] for i in order if i in by_id]
    merged = {m["id"]: m for m in old["machine"].get("merged", [])}
    merged.update({s["id"]: {"id": s["id"], **stamp} for s in new["scenarios"]})
    old["machine"]["merged"] = [merged[i] for i in order if i in merged]
    return old


# -- docs/BENCHMARKS.md ---------------------------------------------------------------

def _by_id(results: dict) -> dict[str, dict]:
    return {s["id"]: s for s in results["scenarios"]}


def _paragraphs(results: dict, runs: int) -> list[str]:
    s = _by_id(results)
    out = []
    if "P1" in s:
        e = s["P1"]["extra"]
        out.append(
            f"**P1 — full sync.** A {_size(e['image_bytes'])} raw image of random "
            f"(incompressible) data is replicated into a fresh `fs` repository with "
            f"{e['chunk_size'] // MiB} MiB chunks and no compression; the time runs from the "
            f"engine call to its return (the engine syncs the repository) plus a final "
            f"`sync`. Baselines on the same image: `qemu-img convert -O raw` into a new file, "
            f"plus `sync`; and `restic backup` (first run, into a freshly initialised local "
            f"repository, `restic init` not timed; restic's defaults: repository format 2, "
            f"compression `auto`), plus `sync`. We stored "
            f"{_mib(e['bytes_stored'])} MiB; restic added {_mib(e['restic_added_bytes'])} MiB. "
            f"Goal (issue): >= 0.5x `qemu-img convert` and >= 5x `restic backup`.")
    if "P1-NBD" in s:
        e = s["P1-NBD"]["extra"]
        others = "; ".join(
            f"with {k} chunks {_f(v['mb_s'])} MB/s "
            f"(x{_f(v['ratio_vs_nbdcopy'], '{:.2f}')} nbdcopy)"
            for k, v in list(e["chunk_sizes"].items())[1:])
        ratio = e["ratio_vs_nbdcopy"]
        verified = e.get("verified")
        checked = ("was not compared (image larger than the check limit)" if verified is None
                   else "is identical to the image" if verified else "DIFFERS from the image")
        goal = "-" if ratio is None else \
            f"x{ratio:.2f}, " + ("met" if ratio >= e["goal_ratio_vs_nbdcopy"] else "NOT met")
        out.append(
            f"**P1-NBD — full sync over NBD (`kvm` source).** A {_size(e['image_bytes'])} "
            f"qcow2 image of random data (every cluster allocated; made by `qemu-img "
            f"convert -O qcow2` of a random raw image) read through the `kvm` source as a "
            f"first cycle: `KvmDisk` adds a dirty bitmap, starts `qemu-nbd` (read-only, "
            f"`--shared 4`) and the engine reads every allocated extent over 4 libnbd "
            f"connections into a fresh `fs` repository, {e['chunk_size'] // MiB} MiB chunks, "
            f"no compression. The time runs from opening the source (`qemu-img info`, "
            f"bitmap, starting `qemu-nbd`: {_f(e['ours_open_seconds'], '{:.2f}')} s) to "
            f"closing it, plus a final `sync`: {_f(e['ours_seconds'], '{:.2f}')} s; "
            f"{others}. Baseline: `nbdcopy -- [ qemu-nbd -r -e 4 -f qcow2 "
            f"IMAGE ] OUT.raw` (nbdcopy starts qemu-nbd itself and copies with its defaults, "
            f"multi-conn with up to 4 connections) into a new raw file, plus `sync`: "
            f"{_f(e['nbdcopy_seconds'], '{:.2f}')} s. The restored point {checked}. "
            f"Goal (issue): >= {e['goal_ratio_vs_nbdcopy']}x `nbdcopy`: {goal}.")
    if "P2" in s:
        e = s["P2"]["extra"]
        cs = e["chunk_sizes"]
        amp = "; ".join(f"{k}: {_mib(v['stored_bytes'])} MiB stored, amplification "
                        f"{v['amplification']:.1f}, {_f(v['mb_s'])} MB/s"
                        for k, v in cs.items())
        out.append(
            f"**P2 — incremental, `file` source (hash diff).** On the P1 image, "
            f"{e['writes']} writes of 64 KiB of new random data at distinct, 64 KiB-aligned "
            f"offsets drawn uniformly with a seeded RNG (seed = run number): "
            f"{_mib(e['changed_bytes'])} MiB, 1 % of the image. Each run applies its "
            f"writes, measures, then writes the original data back. Ours: an incremental "
            f"against the previous recovery point (made untimed before the runs), which "
            f"reads and hashes the whole image and sends only changed chunks, once per chunk "
            f"size ({amp}; amplification = bytes the repository grew by, metadata included, "
            f"/ bytes changed). The quoted MB/s is the 1 MiB run, image size / time. "
            f"Baseline: `restic backup` of the changed image into a repository holding the "
            f"previous snapshot (restic re-reads a file whose mtime changed); it added "
            f"{_mib(e['restic_added_bytes'])} MiB in {_f(e['restic_seconds'], '{:.1f}')} s. "
            f"Stored bytes are repository growth (sum of file sizes) for both. Goal (issue): "
            f"faster than restic's second run; stored bytes <= 0.25x what restic adds.")
    if "P2-CBT" in s:
        e = s["P2-CBT"]["extra"]
        g = e["goals"]
        items = []
        for size, z in e["sizes"].items():
            for k, c in z["chunk_sizes"].items():
                met = c["goals_met"]
                goals = ", ".join(f"{name} {'-' if v is None else 'met' if v else 'NOT met'}"
                                  for name, v in (("speed", met["speedup_vs_restic"]),
                                                  ("read", met["read_over_changed"]),
                                                  ("stored", met["stored_over_changed"])))
                items.append(
                    f"- {size.replace('GiB', ' GiB').replace('MiB', ' MiB')}, {k} chunks: "
                    f"{_f(c['seconds'], '{:.2f}')} s ({_f(c['open_seconds'], '{:.2f}')} s of "
                    f"it opening the source) against restic's {_f(z['restic_seconds'], '{:.1f}')}"
                    f" s: {_f(c['speedup_vs_restic'], '{:.1f}')}x faster; read "
                    f"{_mib(c['source_bytes_read'])} MiB (x{c['read_over_changed']:.2f} the "
                    f"{_mib(z['changed_bytes'])} MiB changed), stored "
                    f"{_mib(c['stored_bytes'])} MiB (x{c['stored_over_changed']:.2f}; restic "
                    f"added {_mib(z['restic_added_bytes'])} MiB); restore "
                    f"{_verified(c.get('verified'))}. Goals: {goals}.")
        out.append(
            f"**P2-CBT — incremental, `kvm` source (qcow2 dirty bitmap).** qcow2 images of "
            f"random data (made as in P1-NBD) change by 1 % in scattered 64 KiB writes made "
            f"with `qemu-io` (`write -s FILE OFF 64k`, each from its own file of fresh random "
            f"data, at distinct 64 KiB-aligned offsets drawn with a seeded RNG, seed = run "
            f"number), so the image's persistent dirty bitmap records them. Ours: a cycle of "
            f"the `kvm` source against the previous point: `KvmDisk` rotates bitmaps (adds a "
            f"new one, exports the previous one with `qemu-nbd`) and the engine reads only "
            f"the chunks the bitmap marks dirty; the time runs from opening the source to "
            f"closing it, plus `sync`. With 64 KiB chunks (the bitmap's granularity) a dirty "
            f"granule is exactly one chunk; with 1 MiB chunks the whole chunk around it is "
            f"read and stored. Bytes read are those read over NBD; stored bytes are the "
            f"repository's growth (chunk files and the new manifest). Baseline: `restic "
            f"backup` of the .qcow2 file into a repository holding its previous snapshot (the "
            f"first backup untimed; restic re-reads the whole file, whose mtime changed), "
            f"plus `sync`. Ours at each chunk size and restic run one after the other, a "
            f"phase each, so that only one repository of the image's size exists at a time: "
            f"a full sync (or restic's first backup), untimed, then per run that run's writes "
            f"and the timed incremental, runs chained (each against the previous run's "
            f"point); at the end of a phase the original data is written back, so every "
            f"phase sees byte for byte the same changes. The last point of each phase is "
            f"restored and compared with the image when the image is small enough "
            f"(`verify_max`, 2 GiB). Goals (issue): cycle >= {g['speedup_vs_restic']}x faster "
            f"than restic's second run, bytes read <= {g['read_over_changed']}x and stored "
            f"<= {g['stored_over_changed']}x the changed bytes. The table quotes the largest "
            f"image with 64 KiB chunks (MB/s = image size / cycle time; ours/restic = the "
            f"speed-up).\n\n" + "\n".join(items))
    if "P3" in s:
        e = s["P3"]["extra"]
        out.append(
            f"**P3 — sparse disk.** A {_size(e['disk_bytes'])} sparse file holding "
            f"{_size(e['data_bytes'])} of data in {e['extents']} extents of 4 MiB spread evenly "
            f"(holes elsewhere), full sync into a fresh repository, against a dense "
            f"{_size(e['data_bytes'])} image with the same amount of data. MB/s is "
            f"data bytes / time. Sparse took {_f(e['sparse_seconds'], '{:.2f}')} s, dense "
            f"{_f(e['dense_seconds'], '{:.2f}')} s (ratio "
            f"{_f(e['sparse_over_dense_time'], '{:.2f}')}); the engine read "
            f"{e['bytes_read'] / MiB:.0f} MiB. Peak RSS {s['P3']['peak_rss_mib']:.0f} MiB with "
            f"a byte budget of {e['budget_bytes'] / MiB:.0f} MiB (the process held "
            f"{e['rss_before_mib']:.0f} MiB before replicating: interpreter and imports). "
            f"Baseline: `qemu-img convert -O raw` of the sparse file (it skips holes too). "
            f"Goal (issue): time proportional to data, not size; peak RSS <= byte budget + "
            f"200 MiB.")
    if "P4" in s:
        e = s["P4"]["extra"]
        out.append(
            f"**P4 — slow, capped target.** The `fs` repository wrapped in an ObjectStore "
            f"(`bench/linkstore.py`) that adds {e['latency_ms']:.0f} ms to every request "
            f"(asyncio.sleep: this kernel has no netem) and sends payload bytes over one "
            f"shared FIFO \"wire\" of {e['cap_mb_s']:.0f} MB/s, so requests queue for "
            f"bandwidth and their latency rises when the cap is exceeded. A "
            f"{_size(e['image_bytes'])} image, full sync: with adaptive concurrency "
            f"{_f(e['adaptive_mb_s'], '{:.1f}')} MB/s ({e['fraction_of_cap'] * 100:.0f} % of "
            f"the cap; the limiter ended at {e['limiter_final']:.1f}, peaked at "
            f"{e['limiter_max']:.1f}, cut {e['limiter_decreases']} times; puts took "
            f"{e['link_mean_put_ms']:.0f} ms on average, at most {e['link_max_put_ms']:.0f} "
            f"ms); with a window of 1 chunk {_f(e['window1_mb_s'], '{:.1f}')} MB/s (puts "
            f"{e['window1_mean_put_ms']:.0f} ms). No baseline. Goal (issue): >= 85 % of the "
            f"cap with adaptive concurrency.")
    if "P5" in s:
        e = s["P5"]["extra"]
        out.append(
            f"**P5 — many disks.** {e['disks']} images of {_size(e['disk_bytes'])} "
            f"replicated at once by one engine (one process, shared budget and thread pool) "
            f"into one repository. Aggregate {_f(e['aggregate_mb_s'])} MB/s = "
            f"x{_f(e['ratio_vs_p1'], '{:.2f}')} P1's throughput in this run. Per-disk finish "
            f"times (from the common start; run with the median wall time): min "
            f"{e['finish_seconds_min']:.1f} s, median {e['finish_seconds_median']:.1f} s, max "
            f"{e['finish_seconds_max']:.1f} s, at most {e['finish_max_deviation_pct']:.0f} % "
            f"from the median. Baseline: `qemu-img convert -O raw` of every disk, "
            f"{e['disks']} processes started at once, plus `sync`: the same bytes read and "
            f"written with no engine in the way. Goal (issue): aggregate >= 0.9x P1's "
            f"throughput; per-disk finish times within ±20 %.")
    if "P6" in s:
        e = s["P6"]["extra"]
        out.append(
            f"**P6 — restore.** The recovery point of P1 (or, when P1 did not run, one made "
            f"untimed) restored to a new raw file: every chunk read back and checked against "
            f"its hash, written, the file fsynced and renamed into place, plus a final `sync`. "
            f"Baseline: `qemu-img convert -O raw` of the source image, plus `sync`. After the "
            f"runs the restored file's BLAKE3 was compared with the source's: "
            f"{'identical' if e['verified'] else 'DIFFERENT'}. Goal (issue): >= 0.5x "
            f"`qemu-img convert`.")
    if "P9" in s:
        e = s["P9"]["extra"]
        fixed, resets, inc = e["fixed_one_chunk"], e["resets_1pct"], e["incremental_1pct"]
        out.append(
            f"**P9 — paired nodes over a WAN.** dr-control, a source node and a target node "
            f"(separate dr-node processes) and `bench/wanproxy.py` as its own process "
            f"between them: {e['rtt_ms']} ms RTT, a {e['link_mbit']} Mbit/s cap shared by "
            f"all connections (user space: this kernel has no netem). A "
            f"{_size(e['image_bytes'])} image from the source site to the paired site's "
            f"repository; time is the replicate task's, from the source node's log. Full "
            f"sync with the adaptive credit window: {_f(s['P9']['ours_mb_s'], '{:.1f}')} "
            f"MB/s = {e['share_of_link'] * 100:.0f} % of the link "
            f"({e['share_of_measured_link'] * 100:.0f} % of one plain TCP stream through the "
            f"same proxy, measured in the same run: the baseline). A fixed one-chunk window "
            f"({_size(fixed['image_bytes'])}): {fixed['share_of_link'] * 100:.0f} %. With 1 % "
            f"of each connection's MiB segments reset: {resets['share_of_link'] * 100:.0f} % "
            f"({resets['resets']} resets, each stream resumed in place from the newest "
            f"checkpoint). A 1 % incremental (scattered 64 KiB writes, "
            f"{_mib(inc['changed_bytes'])} MiB): {inc['seconds']:.1f} s, "
            f"{_mib(inc['bytes_sent'])} MiB of 1 MiB chunks sent. Peak RSS per node "
            f"(VmHWM): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in
                                     e["peak_rss_mib_by_node"].items()) +
            ". Goal (issue): >= 90 % of the link with the adaptive window.")
    if "P10" in s:
        out.append(_p10(s["P10"]))
    return out


def _goal(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "NOT met"


def _p10_restore_miss(p: dict) -> str:
    """Says so when the forecast restores data that no execution moved."""
    nf = p["next_forecast"]
    if p["restore_bytes"] or not nf.get("restore_seconds"):
        return ""
    return (f" The miss is the forecast's restore: {nf['restore_seconds']:.0f} s, the plan's "
            f"{nf['restore_bytes'] / (1 << 30):.0f} GiB at the default "
            f"{nf['throughput_bytes_per_second'] / MiB:.0f} MiB/s, although no execution "
            f"moved a byte (measured restore {p['restore_seconds'] * 1000:.0f} ms: the gap "
            f"from started to prepare-completed, with no disk-prepared event), so the "
            f"forecast takes the plan for one that moves data.")


def _p10(s: dict) -> str:
    e = s["extra"]
    g = e["goals"]
    items = []
    for name, p in e["platforms"].items():
        fc, worst = p.get("forecast_error_pct"), p.get("forecast_max_abs_error_pct")
        gaps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in
                         p["overhead_gaps_seconds"].items()) or "none"
        by_run = ", ".join(f"{r['forecast_rto_seconds']:.1f} s against {r['rto_seconds']:.1f}"
                           f" s ({r['forecast_error_pct']:+.1f} %)"
                           for r in p["per_run"] if "forecast_rto_seconds" in r)
        lag = p.get("polling_lag_seconds")
        polling = "" if lag is None else (
            f" Our probes of the forwarded ports (every 50 ms, from the bench) saw the "
            f"last guest of each group serve HTTP {lag:.2f} s in all before its "
            f"group-running event: that much of the provider wait is ours, the kvm "
            f"provider's polling (0.1 s doubling to 1 s between probes, and a probe sent "
            f"before the guest listens waits up to 2 s for its answer); with it, overhead "
            f"would be "
            f"{p['overhead_plus_polling_pct']:.1f} % of RTO. Starting the QEMU processes "
            f"(group-started to a group's last instance-launched) took "
            f"{p['launch_seconds']:.2f} s in all; the rest of the wait is the guests' boot "
            f"under TCG.")
        items.append(
            f"- {name} ({p['workloads']} workloads in groups of "
            f"{'/'.join(map(str, p['groups']))}; check: {p['check']}): RTO "
            f"{p['rto_seconds']:.1f} s (median of {p['runs']}) = restore "
            f"{p['restore_seconds']:.2f} s ({_mib(p['restore_bytes'])} MiB) + provider waits "
            f"{p['provider_seconds']:.2f} s + validation {p['validation_seconds']:.2f} s + "
            f"scripts {p['script_seconds']:.2f} s + delays {p['delay_seconds']:.2f} s + our "
            f"orchestration overhead {p['overhead_seconds']:.3f} s = "
            f"{p['overhead_pct']:.2f} % of RTO (goal < {g['overhead_pct_below']:g} %: "
            f"{_goal(p['overhead_goal_met'])}); the overhead's largest gaps (previous step "
            f"-> next step, median): {gaps}.{polling} Forecast before runs 2..N: "
            f"{by_run or 'none (one run)'}; median error "
            + ("-" if fc is None else f"{fc:+.1f} %") +
            (f", worst {worst:.1f} %" if worst is not None else "") +
            f" (goal within ±{g['forecast_error_pct_within']:g} %, on the median: "
            f"{_goal(p['forecast_goal_met'])}; in every run: "
            f"{_goal(p.get('forecast_goal_met_every_run'))})" +
            ("" if p.get("forecast_error_pct_excluding_restore") is None else
             f"; with restore taken out of both sides (a diagnostic, not the figure): "
             f"{p['forecast_error_pct_excluding_restore']:+.1f} %") +
            "." + _p10_restore_miss(p) +
            f" dr-control peak RSS {p['control_peak_rss_mib']:.0f} MiB.")
    k = e["platforms"]["kvm"]
    shape = (f"{k['workloads']} workloads in {len(k['groups'])} boot groups "
             f"({', '.join(map(str, k['groups']))})")
    return (
        f"**P10 — a recovery plan's RTO, split, and its forecast.** A recovery plan of "
        f"{shape} run as test drills through the real "
        f"daemons (dr-control and one dr-node), {k['runs']} times per platform: on a `kvm` "
        f"recovery site, {k['workloads']} `file` workloads ({_size(k['disk_bytes'])} ext4 "
        f"disks with an index file) "
        "protected into an `fs` repository, each recovered as a tiny guest (Debian kernel + "
        f"busybox initramfs, TCG, {k['memory_mib']} MiB) with `wait_for` \"http\" (the "
        "provider's wait lasts until the guest serves HTTP) and an HTTP check asking its "
        "forwarded port for its index file; and on EC2 (the AWS peer, moto), as many "
        "instances "        "protected into an `ebs` target, with no check (moto runs no guest: nothing "
        "listens), in the same groups. Each execution is read back and split by "
        "`dr_control.recovery.forecast.measure` (restore, provider waits, validation, "
        "scripts, delays; the rest is our orchestration overhead); before each run after "
        "the first, `drctl recovery-plan forecast` is asked and its RTO compared with the "
        "run's. Each drill is cleaned up before the next. The table's MB/s is the kvm "
        "site's aggregate restore (disks written by the node as qcow2; the ext4 disks are "
        "mostly unallocated, so this is no disk-throughput figure). "
        f"{e['note']}\n\n" + "\n".join(items))


def _merged(m: dict) -> str:
    if not m.get("merged"):
        return ""
    rows = "; ".join(f"{x['id']} on {x['date']} ({x['runs']} runs)" for x in m["merged"])
    return (f"\n\nMeasured after the full run, on the same machine, with `make bench "
            f"BENCH_ARGS=\"--scenarios ID --merge\"`: {rows}. The machine table above is "
            f"the full run's.")


def markdown(results: dict, titles: dict[str, str], runs: int, command: str) -> str:
    m = results["machine"]
    mach = "\n".join(f"| {k} | {v} |" for k, v in (
        ("CPU", m["cpu"]), ("cores", m["cores"]), ("RAM", f"{m['ram_gib']} GiB"),
        ("OS / kernel", f"{m['os']} / {m['kernel']}"), ("Python", m["python"]),
        ("qemu-img", m["qemu_img"] or "absent"), ("restic", m["restic"] or "absent"),
        ("nbdcopy", m.get("nbdcopy") or "absent"),
        ("work directory", m["filesystem"]), ("page cache", m["page_cache"]),
        ("date", m["date"])))
    paragraphs = "\n\n".join(_paragraphs(results, runs))
    return f"""# Benchmarks

Generated by `{command}` (`bench/`); the raw numbers are in
[`bench/results.json`](../bench/results.json). Re-run it on your machine: it builds its
own test data, installs the baselines (`qemu-utils`, `restic`, `libnbd-bin`) with
apt-get when missing (and `make bench` the kvm source's `qemu-utils` and libnbd, via
`tools/install-system-deps.sh`), and measures our engine and the baselines **in the
same run**.

Run it as root on an idle machine if you can (root: apt-get and dropping the page
cache). A full run took {_f(m.get("minutes"))} minutes here and needs about 50 GB free
under `bench/work` (generated images and repositories; removed at the end unless
`--keep-data`; P2-CBT's 16 GiB image and one repository of it are the peak).

```sh
make bench                                   # all scenarios, 3 runs each, then this file
make bench BENCH_ARGS="--scenarios P1,P6"    # a subset: results in bench/work/results.json
make bench BENCH_ARGS="--smoke"              # tiny sizes, a minute: does it all still run?
.venv/bin/python -m bench --help             # --runs, --size-gib, --cbt-sizes-gib, --work, ...
```

## Machine

| | |
|---|---|
{mach}

The machine is shared with other work, so numbers are noisy: every figure is the
**median of {runs} runs**, and ours and the baselines alternate inside each run
(P2-CBT: phase after phase, see there).{_merged(m)}

## Results

{markdown_table(results, titles)}

- MB/s = 10^6 bytes per second of the image (or data) size over the wall time.
  "ours/qemu", "ours/restic": our MB/s over the baseline's, same run, same data.
- Every timed command ends with `sync` (`os.sync()`), timed, for ours and for the
  baselines alike: nothing is counted as done while it sits in the page cache. Before each
  timed measurement dirty pages are written back and
  {"the page cache is dropped (`/proc/sys/vm/drop_caches`), so reads are cold" if
  m["page_cache"].startswith("dropped") else "the page cache is NOT dropped (warm cache)"}.
- Ours runs in a fresh process per measurement (`python -m bench.worker`), on uvloop
  like the node daemon, with `EngineConfig()` defaults (window 32 chunks, byte budget
  256 MiB, 4 worker threads); its time excludes interpreter start-up and opening the
  repository (about {_proc(results)} s in all, `extra.ours_startup_seconds` of P1).
  The baselines' times are their whole process lifetime.
- Peak RSS is that process's `ru_maxrss` (the largest over the runs); the baselines'
  own peaks are in `results.json` under `extra.baseline_peak_rss_mib`.

## What each scenario measures

{paragraphs}
"""


def keep_sections(new: str, old: str) -> str:
    """`new` (markdown()'s document) followed by the sections ("## " headings) of `old`
    that markdown() does not write, e.g. the Azure section `make bench-azure`'s numbers
    were put into by hand: rewriting the document after a run must not drop them."""
    def sections(text: str) -> list[tuple[str, str]]:
        out, head, body = [], None, []
        for line in text.splitlines(keepends=True):
            if line.startswith("## "):
                if head is not None:
                    out.append((head, "".join(body)))
                head, body = line.strip(), [line]
            elif head is not None:
                body.append(line)
        if head is not None:
            out.append((head, "".join(body)))
        return out
    ours = {h for h, _ in sections(new)}
    kept = [body for h, body in sections(old) if h not in ours]
    if not kept:
        return new
    return new.rstrip("\n") + "\n\n" + "".join(kept).rstrip("\n") + "\n"


def _proc(results: dict) -> str:
    p1 = _by_id(results).get("P1")
    if not p1:
        return "0.5"
    return f"{p1['extra']['ours_startup_seconds']:.1f}"
