"""dr-node configuration (TOML file + DR_NODE_* environment overrides)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineConfig:
    # Chunks in flight per disk (the rolling window). DESIGN: a 32 MiB window of 1 MiB chunks.
    window_chunks: int = 32
    # Bytes held in memory at once by the whole node (read buffers, compressed data,
    # in-flight writes): the backpressure that bounds memory whatever the disk count.
    budget_bytes: int = 256 << 20
    # Threads for blocking work (pread, hashing, compression, file writes).
    workers: int = 4
    # Seconds between progress reports (the lease is also renewed by heartbeats).
    progress_seconds: float = 2.0
    # Bounds of the adaptive number of writes in flight per target.
    min_concurrency: int = 1
    max_concurrency: int = 64
    # The node's bandwidth cap in bytes/s of chunk data sent; 0 = unlimited. Re-read on
    # SIGHUP, so it can change while cycles run.
    bandwidth_bytes_per_second: int = 0


@dataclass(frozen=True)
class NodeConfig:
    control: str = "127.0.0.1:50051"
    # Stable id of this node; empty: derived from the host name.
    node_id: str = ""
    # Disks (tasks) this node works on at once (DESIGN: at most 40).
    max_tasks: int = 8
    heartbeat_seconds: float = 5.0
    # Source disks, repositories and restore destinations must lie inside these.
    file_roots: list[str] = field(default_factory=lambda: ["/var/lib/hybrid-dr"])
    metrics_host: str = "127.0.0.1"
    # -1 disables the /metrics endpoint; 0 picks a free port.
    metrics_port: int = 9465
    log_level: str = "info"
    # aws sources: how long a cycle's snapshots may take to complete.
    snapshot_timeout_seconds: float = 3600.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    # mutual TLS to dr-control (PEM files, e.g. from `drctl certs init --node ID`).
    # tls_ca_file empty: plaintext. The certificate's CN must be this node's id.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @property
    def id(self) -> str:
        from dr_common.sources.file import resource_id
        return self.node_id or resource_id(socket.gethostname())
