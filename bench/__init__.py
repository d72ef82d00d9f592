"""The Hybrid DR benchmark suite: `python -m bench` (or `make bench`).

It builds its own test data, measures our engine and the baselines (`qemu-img convert`,
`restic`) in the same run, prints a table, writes `bench/results.json` and rewrites
`docs/BENCHMARKS.md`. See docs/BENCHMARKS.md for what each scenario measures.
"""

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
# Throughput is quoted in MB/s: 10^6 bytes per second.
MB = 10**6
