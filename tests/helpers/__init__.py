"""Helpers that several test modules share: plain functions, classes and constants, no
fixtures (those are in tests/conftest.py) and no tests. A test module imports from here,
never from another test module.

  disks.py       disk images and their content: MiB, make_disk, write_at, punch_hole,
                 qemu_io, block_content
  repository.py  repository content as cycles write it: chunk_data, write_point
  engines.py     ObjectStore wrappers that instrument the replication engine
  services.py    the control plane's services in-process: service_context, two_disk_plan
  cluster.py     driving a tools.localcluster.Cluster: setup_plan, wait_points, the REST
                 API (rest_call, wait_rest), the services each daemon serves
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository's root
