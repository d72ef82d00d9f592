"""The committed generated code must match proto/ (run `make proto` after editing it)."""

from __future__ import annotations

import filecmp
from pathlib import Path

from tools.genproto import ROOT, generate


def test_generated_code_is_fresh(tmp_path: Path):
    generate(tmp_path)
    committed = ROOT / "dr_common" / "proto" / "dr" / "v1"
    fresh = tmp_path / "dr" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.suffix in (".py", ".pyi"))
    assert names == sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi"))
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code: {mismatch + errors}; run make proto"
