"""dr-control configuration (TOML file + DR_CONTROL_* environment overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerConfig:
    # Seconds between scheduler passes (due plans, expired leases).
    tick_seconds: float = 1.0
    # A node's leases last this long without a heartbeat or progress report.
    lease_seconds: int = 30
    # Times a task is tried before its cycle fails.
    max_attempts: int = 3
    # Persist a disk's checkpoint at least every this many bytes (DESIGN: 500 MB).
    checkpoint_interval_bytes: int = 500_000_000
    # Garbage collection of a plan's repository after retention deleted points: at most
    # this often (seconds), counted from the last collection or the plan's creation.
    gc_interval_seconds: int = 86400
    # Unreferenced repository objects younger than this are kept: it must exceed the
    # longest replication cycle, so a running cycle's objects survive (gc.py).
    gc_grace_seconds: int = 86400


@dataclass(frozen=True)
class AuthConfig:
    # Require an API token (authorization: Bearer) with a sufficient role on every
    # operator call. Off by default so the embedded demo works without setup; bootstrap
    # the first token with `dr-control token create --name NAME --role admin`.
    enabled: bool = False


@dataclass(frozen=True)
class RecoveryLimits:
    """How hard the executions against one recovery site may push its API, shared by
    every execution there (a cloud's limits are per account); 0: the provider's own
    default (dr_control/recovery/<provider>.py). Throttling is retried, never fatal:
    these bound how much is in flight so that it is rare."""

    # API calls in flight (aws: EC2, default 4; azure: ARM, 6; vsphere: vCenter, 4).
    api_calls_in_flight: int = 0
    # Workloads started at once (kvm: QEMU processes, default 4).
    launches_in_flight: int = 0
    # Disks moved to the site at once, each a node restore task (default 4).
    restores_in_flight: int = 0


@dataclass(frozen=True)
class RecoveryConfig:
    limits: RecoveryLimits = field(default_factory=RecoveryLimits)


@dataclass(frozen=True)
class ControlConfig:
    listen: str = "127.0.0.1:50051"
    state_dir: str = "/var/lib/hybrid-dr/control"
    # Empty: sqlite+aiosqlite:///{state_dir}/control.db. Several replicas share one
    # PostgreSQL database: postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB.
    database_url: str = ""
    # `file` sites and restore destinations must lie inside one of these directories.
    file_roots: list[str] = field(default_factory=lambda: ["/var/lib/hybrid-dr"])
    metrics_host: str = "127.0.0.1"
    # -1 disables the /metrics endpoint; 0 picks a free port.
    metrics_port: int = 9464
    log_level: str = "info"
    # Key that encrypts site credentials in the database; empty: {state_dir}/secret.key
    # (created on first start). Several replicas must share it.
    secret_key_file: str = ""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    # TLS of the gRPC port (PEM files, e.g. from `drctl certs init`). Both empty: plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # With TLS: every client (nodes and drctl) must present a certificate signed by this CA.
    tls_client_ca_file: str = ""
    auth: AuthConfig = field(default_factory=AuthConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    # REST/JSON API and the web UI (HTTP, HOST:PORT); "" disables both. Plain HTTP:
    # keep it on loopback or behind a TLS-terminating proxy, with auth enabled.
    rest_listen: str = "127.0.0.1:8080"

    @property
    def secret_key_path(self) -> str:
        return self.secret_key_file or f"{self.state_dir}/secret.key"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.state_dir}/control.db"
