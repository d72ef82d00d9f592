"""The benchmark suite at tiny sizes, so it never rots. Structure and correctness only:
no timing is asserted (this machine is shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
IDS = ["P1", "P2", "P3", "P4", "P5", "P6"]
KVM_IDS = ["P1-NBD", "P2-CBT"]
KiB = 1 << 10


def _smoke(tmp_path: Path, ids: list[str]) -> dict:
    """Runs `python -m bench --smoke` for `ids`; checks and returns its results.json."""
    work = tmp_path / "work"
    committed = ROOT / "bench" / "results.json"
    before = committed.stat().st_mtime_ns if committed.exists() else None
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--runs", "1", "--work", str(work),
         "--no-install", "--warm", "--scenarios", ",".join(ids)],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    for sid in ids:  # the table was printed
        assert f"\n{sid} " in "\n" + proc.stdout

    results = json.loads((work / "results.json").read_text())
    # A smoke run never touches the committed numbers.
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before
    assert set(results) == {"machine", "scenarios"}
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    assert [s["id"] for s in results["scenarios"]] == ids
    for s in results["scenarios"]:
        assert set(s) == {"id", "ours_mb_s", "peak_rss_mib", "baselines", "extra"}
        assert isinstance(s["ours_mb_s"], float) and s["ours_mb_s"] > 0
        assert s["peak_rss_mib"] > 0
        for name, value in s["baselines"].items():
            assert name in ("qemu-img convert", "restic", "nbdcopy",
                            "link (1 TCP stream via the proxy)")
            assert value is None or value > 0  # null when the tool is absent
    # Repositories and generated images are cleaned up.
    assert sorted(p.name for p in work.iterdir()) == ["results.json"]
    return results


@pytest.mark.timeout(240)
def test_bench_smoke(tmp_path: Path) -> None:
    results = _smoke(tmp_path, IDS)
    by_id = {s["id"]: s for s in results["scenarios"]}

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


@pytest.mark.timeout(240)
def test_bench_smoke_kvm(tmp_path: Path) -> None:
    """P1-NBD and P2-CBT: qcow2 images through the kvm source (qemu-nbd, libnbd)."""
    for tool in ("qemu-img", "qemu-io", "qemu-nbd"):
        require_tool(tool)
    try:
        import nbd  # noqa: F401
    except ImportError:
        require_tool("python3-libnbd (nbd module)")
    results = _smoke(tmp_path, KVM_IDS)
    by_id = {s["id"]: s for s in results["scenarios"]}

    full = by_id["P1-NBD"]["extra"]
    # A first cycle reads every allocated byte once, over NBD, and the point restores
    # to the image's content.
    for cs in full["chunk_sizes"].values():
        assert cs["stats"]["bytes_read"] == full["image_bytes"]
        assert cs["stats"]["chunks_unchanged"] == 0
    assert full["source_bytes_read"] == full["image_bytes"] <= full["bytes_stored"]
    assert full["verified"] is True
    assert set(by_id["P1-NBD"]["baselines"]) == {"nbdcopy"}

    cbt = by_id["P2-CBT"]["extra"]
    assert len(cbt["sizes"]) == 2
    for z in cbt["sizes"].values():
        assert z["changed_bytes"] == z["writes"] * 64 * KiB > 0
        fine, coarse = z["chunk_sizes"]["64KiB"], z["chunk_sizes"]["1024KiB"]
        for c in (fine, coarse):
            assert c["verified"] is True  # the last incremental restores to the image
            assert c["stats"]["chunks_unchanged"] > 0  # clean extents were not read
        # At the bitmap granularity the incremental reads exactly the changed granules
        # and stores about that much (plus the new manifest).
        assert fine["source_bytes_read"] == z["changed_bytes"]
        assert fine["stats"]["chunks_read"] == z["writes"]
        assert 1 <= fine["stored_over_changed"] <= 2
        assert fine["goals_met"]["read_over_changed"]
        assert fine["goals_met"]["stored_over_changed"]
        # 1 MiB chunks read whole chunks around each dirty granule: more, never less.
        assert z["changed_bytes"] < coarse["source_bytes_read"] <= z["writes"] * (1 << 20)
        assert coarse["stored_bytes"] >= coarse["source_bytes_read"]


@pytest.mark.timeout(240)
def test_bench_smoke_paired_nodes(tmp_path: Path) -> None:
    """P9 with real daemons and the WAN proxy as processes, at 64 MiB."""
    [p9] = _smoke(tmp_path, ["P9"])["scenarios"]
    e = p9["extra"]
    assert p9["baselines"]["link (1 TCP stream via the proxy)"] > 0
    assert 0 < e["share_of_link"] and 0 < e["fixed_one_chunk"]["share_of_link"]
    # The 1 % incremental sends the changed chunks, not the disk.
    inc = e["incremental_1pct"]
    assert inc["changed_bytes"] <= inc["bytes_sent"] < e["image_bytes"] / 4
    assert set(e["peak_rss_mib_by_node"]) == {"src1", "tgt"}


@pytest.mark.timeout(240)
def test_bench_smoke_recovery(tmp_path: Path) -> None:
    """P10 at 3 workloads in 2 boot groups, one run per platform: real daemons, tiny TCG
    guests at a kvm site checked over HTTP, and EC2 on the AWS peer (moto)."""
    from tests.peers.kvm.guest import require_guest
    from tests.peers.tools import require_qemu, unavailable
    require_qemu()
    require_guest()
    try:
        import moto  # noqa: F401
    except ImportError:
        unavailable("moto[server] (the AWS peer): run `make test`, which installs it")
    [p10] = _smoke(tmp_path, ["P10"])["scenarios"]
    platforms = p10["extra"]["platforms"]
    assert set(platforms) == {"kvm", "ec2"}
    for name, p in platforms.items():
        assert p["workloads"] == 3 and p["groups"] == [1, 2], name
        [run] = p["per_run"]
        parts = ("restore_seconds", "provider_seconds", "validation_seconds",
                 "script_seconds", "delay_seconds", "overhead_seconds")
        # The split is disjoint: its parts add up to the measured RTO.
        assert sum(run[k] for k in parts) == pytest.approx(run["rto_seconds"], abs=1e-3)
        assert run["provider_seconds"] > 0 and set(run["provider_seconds_by_group"]) == {
            "g1", "g2"}
        # One run: no forecast before it, but one after it, from that run.
        assert p["forecast_error_pct"] is None and "forecast_rto_seconds" not in run
        assert p["next_forecast"]["rto_seconds"] > 0
        assert p["control_peak_rss_mib"] > 0
    kvm = platforms["kvm"]
    # The node wrote every disk at the site; each guest passed its HTTP check.
    assert kvm["restore_bytes"] == 3 * kvm["disk_bytes"] and kvm["restore_seconds"] > 0
    assert kvm["validation_seconds"] > 0
    assert set(kvm["per_run"][0]["polling_lag"]["group_seconds"]) == {"g1", "g2"}
    assert platforms["ec2"]["restore_bytes"] == 0  # EC2 boots from the point's snapshots


def test_merge_replaces_one_scenario_and_says_when(tmp_path: Path) -> None:
    """`--merge`: a subset run's scenarios replace theirs in the committed results, in
    scenario order, marked with their run's date; the document says so."""
    from bench import report
    from bench.scenarios import SCENARIOS
    committed = json.loads((ROOT / "bench" / "results.json").read_text())
    path = tmp_path / "results.json"
    path.write_text(json.dumps(committed))
    first = committed["scenarios"][0]
    new = {"machine": {"date": "2099-01-01 00:00 UTC", "runs": 1},
           "scenarios": [{**first, "ours_mb_s": 1.0}]}
    merged = report.merge(path, new, list(SCENARIOS))
    ids = [s["id"] for s in merged["scenarios"]]
    assert ids == [i for i in SCENARIOS if i in ids]
    assert len(ids) == len(committed["scenarios"])
    by_id = {s["id"]: s for s in merged["scenarios"]}
    assert by_id[first["id"]]["ours_mb_s"] == 1.0
    assert by_id[first["id"]]["measured"]["date"] == "2099-01-01 00:00 UTC"
    # Listed once, with scenarios merged before it (in scenario order).
    listed = merged["machine"]["merged"]
    assert [m for m in listed if m["id"] == first["id"]] == [
        {"id": first["id"], "date": "2099-01-01 00:00 UTC", "runs": 1}]
    assert [m["id"] for m in listed] == [i for i in SCENARIOS if i in {m["id"] for m in listed}]
    doc = report.markdown(merged, {k: v[0] for k, v in SCENARIOS.items()}, 3, "make bench")
    assert f"{first['id']} on 2099-01-01 00:00 UTC (1 runs)" in doc


def test_rewriting_the_document_keeps_sections_it_does_not_write() -> None:
    """A hand-kept section (Azure's numbers) survives the document's rewrite after a run;
    the generated sections are replaced, not doubled."""
    from bench import report
    old = "# Benchmarks\n\n## Results\n\nold table\n\n## Azure\n\nazure numbers\n"
    new = "# Benchmarks\n\n## Results\n\nnew table\n"
    doc = report.keep_sections(new, old)
    assert doc == "# Benchmarks\n\n## Results\n\nnew table\n\n## Azure\n\nazure numbers\n"
    assert report.keep_sections(new, "") == new
