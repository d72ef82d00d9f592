"""The benchmark suite at tiny sizes, so it never rots. Structure and correctness only:
no timing is asserted (this machine is shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IDS = ["P1", "P2", "P3", "P4", "P5", "P6"]


@pytest.mark.timeout(240)
def test_bench_smoke(tmp_path: Path) -> None:
    work = tmp_path / "work"
    committed = ROOT / "bench" / "results.json"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--runs", "1", "--work", str(work),
         "--no-install", "--warm", "--scenarios", ",".join(IDS)],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    for sid in IDS:  # the table was printed
        assert f"\n{sid} " in "\n" + proc.stdout

    results = json.loads((work / "results.json").read_text())
    # A smoke run never touches the committed numbers.
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    assert set(results) == {"machine", "scenarios"}
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    by_id = {s["id"]: s for s in results["scenarios"]}
    assert list(by_id) == IDS
    for s in results["scenarios"]:
        assert set(s) == {"id", "ours_mb_s", "peak_rss_mib", "baselines", "extra"}
        assert isinstance(s["ours_mb_s"], float) and s["ours_mb_s"] > 0
        assert s["peak_rss_mib"] > 0
        for name, value in s["baselines"].items():
            assert name in ("qemu-img convert", "restic")
            assert value is None or value > 0  # null when the tool is absent

    p1, p2, p3 = by_id["P1"]["extra"], by_id["P2"]["extra"], by_id["P3"]["extra"]
    assert p1["stats"]["bytes_read"] == p1["image_bytes"]
    assert p1["bytes_stored"] >= p1["image_bytes"]  # random data: nothing to save
    # The incremental stores far less than the full sync, and at least what changed.
    for cs in p2["chunk_sizes"].values():
        assert p2["changed_bytes"] <= cs["stored_bytes"] < p1["bytes_stored"]
        assert cs["amplification"] >= 1
        assert cs["stats"]["bytes_read"] == p2["image_bytes"]
    # Larger chunks amplify more.
    amps = [cs["amplification"] for cs in p2["chunk_sizes"].values()]
    assert amps == sorted(amps)
    # The sparse disk: only its data was read, holes were skipped.
    assert p3["bytes_read"] == p3["data_bytes"] < p3["disk_bytes"]
    p4 = by_id["P4"]["extra"]
    assert p4["window1_mb_s"] > 0 and p4["limiter_max"] >= 1
    p5 = by_id["P5"]["extra"]
    assert p5["finish_seconds_min"] <= p5["finish_seconds_median"] <= p5["finish_seconds_max"]
    p6 = by_id["P6"]["extra"]
    assert p6["verified"] and p6["source_blake3"] == p6["restored_blake3"]

    # Repositories and generated images are cleaned up.
    assert sorted(p.name for p in work.iterdir()) == ["results.json"]
