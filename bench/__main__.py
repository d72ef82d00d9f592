"""`python -m bench` / `make bench`: run the benchmark scenarios P1-P6, P1-NBD, P2-CBT, P9, P10.

A full run (all scenarios, not --smoke) writes bench/results.json and rewrites
docs/BENCHMARKS.md; any other run writes WORK/results.json only, unless --merge: then
its scenarios replace theirs in bench/results.json (each marked with when it was
measured) and docs/BENCHMARKS.md is rewritten, saying which scenarios are newer than
the full run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench import GiB, MiB, baselines, report
from bench.scenarios import KVM_SCENARIOS, ROOT, SCENARIOS, Bench, Settings


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma-separated ids (default: all: %(default)s)")
    ap.add_argument("--size-gib", type=float, default=None,
                    help="image size of P1, P2, P6 and P1-NBD in GiB (default: 4; P1-NBD 2)")
    ap.add_argument("--cbt-sizes-gib", default="2,16",
                    help="comma-separated qcow2 image sizes of P2-CBT in GiB "
                         "(default %(default)s)")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per measurement; medians are quoted (default 3; --smoke: 2)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work",
                    help="directory for test data and repositories (default bench/work)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes (64 MiB images, 1 GiB sparse disk, 4 x 16 MiB disks, "
                         "32 and 64 MiB qcow2): checks that everything runs; numbers mean "
                         "little")
    ap.add_argument("--no-install", action="store_true",
                    help="do not apt-get missing baselines (they are then reported as null)")
    ap.add_argument("--warm", action="store_true",
                    help="do not drop the page cache before measurements")
    ap.add_argument("--keep-data", action="store_true",
                    help="keep the generated images in WORK/data for the next run")
    ap.add_argument("--merge", action="store_true",
                    help="a subset run: put its scenarios into bench/results.json and "
                         "rewrite docs/BENCHMARKS.md (the others keep their last full "
                         "run's numbers)")
    args = ap.parse_args(argv)
    args.ids = [x.strip().upper() for x in args.scenarios.split(",") if x.strip()]
    unknown = [x for x in args.ids if x not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.runs is not None and args.runs < 1:
        ap.error("--runs must be at least 1")
    if args.merge and (args.smoke or args.size_gib is not None):
        ap.error("--merge takes full-size runs only (no --smoke, no --size-gib)")
    try:
        args.cbt_sizes = tuple(max(MiB, int(float(x) * GiB) // MiB * MiB)
                               for x in args.cbt_sizes_gib.split(",") if x.strip())
    except ValueError:
        ap.error(f"--cbt-sizes-gib: not a list of numbers: {args.cbt_sizes_gib!r}")
    if not args.cbt_sizes:
        ap.error("--cbt-sizes-gib: no size given")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        settings = Settings.smoke(work, runs=args.runs or 2)
    else:
        settings = Settings(work=work, runs=args.runs or 3, cbt_sizes=args.cbt_sizes)
        if args.size_gib is not None:
            settings.size = settings.nbd_size = max(MiB, int(args.size_gib * GiB) // MiB * MiB)
    settings.drop = not args.warm
    settings.keep_data = args.keep_data
    kvm = [sid for sid in args.ids if sid in KVM_SCENARIOS]
    missing = baselines.kvm_missing() if kvm else []
    if missing:
        log(f"{', '.join(kvm)} read qcow2 images through the kvm source, which needs "
            f"{', '.join(missing)}: run `make bench` (it runs tools/install-system-deps.sh) "
            f"or leave them out with --scenarios")
        return 2
    tools = baselines.ensure_tools(not args.no_install, log)
    for name, path in tools.items():
        if path is None:
            log(f"{name} not found: its baseline is reported as null")
    versions = baselines.versions(tools)
    bench = Bench(settings, tools, log)
    scenarios = []
    t0 = time.monotonic()
    try:
        # Always in order: P5 compares with P1, P6 restores P1's point.
        for sid in SCENARIOS:
            if sid not in args.ids:
                continue
            title, fn = SCENARIOS[sid]
            log(f"{sid}: {title}")
            scenarios.append(fn(bench))
    finally:
        bench.cleanup()
    drops = bench.cache_drops
    if drops and all(drops):
        cache = "dropped before every measurement (cold reads)"
    elif any(drops):
        cache = f"dropped before {sum(drops)} of {len(drops)} measurements"
    else:
        cache = "warm: not dropped" + (" (--warm)" if args.warm else
                                       " (/proc/sys/vm/drop_caches refused)")
    results = {"machine": report.machine(versions, cache, work), "scenarios": scenarios}
    results["machine"]["runs"] = settings.runs
    results["machine"]["minutes"] = round((time.monotonic() - t0) / 60, 1)
    titles = {k: v[0] for k, v in SCENARIOS.items()}
    print(report.text_table(results, titles))
    full = not args.smoke and args.ids == list(SCENARIOS)
    if args.merge and not full:
        results = report.merge(ROOT / "bench" / "results.json", results, list(SCENARIOS))
    if full or args.merge:
        out = ROOT / "bench" / "results.json"
        report.write_json(results, out)
        # A merge rewrites the full run's document: it keeps that run's command.
        command = "make bench" + (f" BENCH_ARGS={shlex.quote(' '.join(sys.argv[1:]))}"
                                  if sys.argv[1:] and not args.merge else "")
        doc = ROOT / "docs" / "BENCHMARKS.md"
        old = doc.read_text() if doc.exists() else ""
        doc.write_text(report.keep_sections(
            report.markdown(results, titles, settings.runs, command), old))
        log(f"wrote {out} and {doc} ({time.monotonic() - t0:.0f} s)")
    else:
        out = work / "results.json"
        report.write_json(results, out)
        log(f"wrote {out} (not a full run: bench/results.json and docs/BENCHMARKS.md "
            f"untouched; {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
