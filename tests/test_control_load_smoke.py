"""The control-plane load benchmark (bench/control_load.py) at a tiny size, so it never
rots. Structure only: no latency is asserted (this machine is shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_control_load_runs_and_reports(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.control_load", "--disks", "12", "--disks-per-plan", "4",
         "--nodes", "3", "--slots", "2", "--heartbeat", "1", "--seconds", "4", "--rpo", "2",
         "--tick", "0.2", "--work", str(tmp_path / "work"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DR_BENCH_DATABASE_URL": ""})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "scheduler pass (tick)" in proc.stdout and "peak RSS" in proc.stdout
    r = json.loads(out.read_text())
    assert r["setup"]["plans"] == 3 and r["setup"]["database"] == "sqlite"
    calls = r["calls"]
    for call in ("Heartbeat", "AcquireTask (leased)", "ReportProgress", "CompleteTask",
                 "ListPlans", "GetRpoReport"):
        assert calls[call]["count"] > 0 and calls[call]["errors"] == 0, (call, calls[call])
        assert 0 < calls[call]["p50_ms"] <= calls[call]["p99_ms"] <= calls[call]["max_ms"]
    # Every plan's first cycle ran through: 12 replicate tasks and 3 points at least.
    assert r["throughput"]["by_kind"]["replicate"] >= 12
    assert r["throughput"]["cycles_completed"] >= 3
    assert r["scheduler_pass"]["count"] > 0 and r["scheduler_pass"]["mean_ms"] > 0
    assert r["control_peak_rss_mib"] > 0
