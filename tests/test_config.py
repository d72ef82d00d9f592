"""Configuration: TOML, environment overrides, and errors that name the culprit."""

from __future__ import annotations

import pytest

from dr_common.config import load
from dr_common.errors import InvalidArgument
from dr_control.config import ControlConfig
from dr_node.config import NodeConfig


def test_defaults_toml_and_env_layer_in_that_order(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('control = "10.0.0.1:1"\nmax_tasks = 3\n[engine]\nworkers = 2\n')
    cfg = load(NodeConfig, path, env_prefix="DR_NODE_",
               environ={"DR_NODE_MAX_TASKS": "5", "DR_NODE_ENGINE__BUDGET_BYTES": "1024",
                        "DR_NODE_FILE_ROOTS": "/a, /b"})
    assert cfg.control == "10.0.0.1:1"            # from TOML
    assert cfg.max_tasks == 5                     # env beats TOML
    assert cfg.engine.workers == 2                # nested TOML section
    assert cfg.engine.budget_bytes == 1024        # nested env with "__"
    assert cfg.file_roots == ["/a", "/b"]         # comma-separated list
    assert cfg.engine.window_chunks == NodeConfig().engine.window_chunks  # default kept


def test_bad_values_name_the_key():
    with pytest.raises(InvalidArgument, match="DR_CONTROL_SCHEDULER__LEASE_SECONDS"):
        load(ControlConfig, None, env_prefix="DR_CONTROL_",
             environ={"DR_CONTROL_SCHEDULER__LEASE_SECONDS": "soon"})


def test_unknown_and_mistyped_toml_keys_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("listn = 'x'\n")
    with pytest.raises(InvalidArgument, match="unknown configuration key.*listn"):
        load(ControlConfig, path, env_prefix="DR_CONTROL_", environ={})
    path.write_text("[scheduler]\nlease_seconds = 'x'\n")
    with pytest.raises(InvalidArgument, match="scheduler.lease_seconds must be int"):
        load(ControlConfig, path, env_prefix="DR_CONTROL_", environ={})
    with pytest.raises(InvalidArgument, match="does not exist"):
        load(ControlConfig, tmp_path / "missing.toml", env_prefix="DR_CONTROL_", environ={})
