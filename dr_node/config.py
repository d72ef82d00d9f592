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
class TransferConfig:
    """The paired topology's chunk streams (dr_node.transfer, DESIGN section 2)."""

    # host:port this node's TransferService listens on ("" = it is not a target node).
    # It uses the node's TLS files: paired nodes authenticate each other with them.
    listen: str = ""
    # The address source nodes dial (a name they can resolve); "" = `listen`.
    advertise: str = ""
    # HTTP/2 connections a source node keeps to each paired target node; disk streams
    # are spread over them, so one slow or lost connection does not stall the others.
    connections: int = 4
    # Credits a target node grants per disk stream: bytes of chunk data in flight,
    # adapted to its write latency within these bounds (DESIGN: 32 MiB in 16-64 MiB).
    window_bytes: int = 32 << 20
    min_window_bytes: int = 16 << 20
    max_window_bytes: int = 64 << 20
    # How long a source node waits for its pair to answer before the task fails (and
    # is retried from its checkpoint).
    connect_timeout_seconds: float = 30.0


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
    # The site this node sits in. Tasks bound to a site (a paired plan's, see
    # docs/PAIRED.md) go to that site's nodes only; "" takes only unbound tasks.
    site: str = ""
    transfer: TransferConfig = field(default_factory=TransferConfig)
    # mutual TLS to dr-control (PEM files, e.g. from `drctl certs init --node ID`).
    # tls_ca_file empty: plaintext. The certificate's CN must be this node's id.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @property
    def id(self) -> str:
        from dr_common.names import resource_id
        return self.node_id or resource_id(socket.gethostname())
