"""Tables of the control plane's metadata (the only durable state besides target storage).

Names follow DESIGN.md section 3. Times are timezone-aware UTC. JSON columns hold
values the database never queries into (specs, stats, checkpoints).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey,
                        ForeignKeyConstraint, Index, Integer, String, Text, UniqueConstraint,
                        text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores UTC; returns aware datetimes (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict: JSON}


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    credential_ref: Mapped[str] = mapped_column(Text, default="")
    # Non-secret settings of the site kind (aws: region, endpoint, profile, key id).
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    # Secrets (aws: the secret key), sealed with the control plane's key file
    # (dr_common.secretbox); never returned by the API.
    secret: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    workloads: Mapped[list["Workload"]] = relationship(
        back_populates="site", cascade="all, delete-orphan", order_by="Workload.id")


class Workload(Base):
    __tablename__ = "workloads"
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[Site] = relationship(back_populates="workloads")
    disks: Mapped[list["Disk"]] = relationship(
        back_populates="workload", cascade="all, delete-orphan", order_by="Disk.id")


class Disk(Base):
    __tablename__ = "disks"
    # The full resource name is the key: plans and tasks refer to disks by it.
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(63))
    workload_id: Mapped[str] = mapped_column(String(63))
    id: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(Text, default="")
    locator: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sector_size: Mapped[int] = mapped_column(Integer, default=512)
    cbt: Mapped[str] = mapped_column(String(32), default="none")
    workload: Mapped[Workload] = relationship(back_populates="disks")
    __table_args__ = (
        ForeignKeyConstraint(["site_id", "workload_id"], ["workloads.site_id", "workloads.id"]),
    )


class Plan(Base):
    __tablename__ = "plans"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    source_site: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    target_site: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    target_kind: Mapped[str] = mapped_column(String(16))
    workloads: Mapped[list] = mapped_column(JSON, default=list)
    disks: Mapped[list] = mapped_column(JSON, default=list)
    rpo_seconds: Mapped[int] = mapped_column(BigInteger)
    keep_last: Mapped[int] = mapped_column(Integer, default=0)
    # Retention beyond keep_last (dr_control/services/retention.py); 0 = rule off.
    keep_hourly: Mapped[int] = mapped_column(Integer, default=0)
    keep_daily: Mapped[int] = mapped_column(Integer, default=0)
    keep_weekly: Mapped[int] = mapped_column(Integer, default=0)
    chunk_size: Mapped[int] = mapped_column(BigInteger)
    compression: Mapped[str] = mapped_column(String(16), default="none")
    bandwidth: Mapped[int] = mapped_column(BigInteger, default=0)
    quiesce: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by RunPlan: the scheduler starts a cycle at its next tick.
    run_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Points were deleted: the repository has garbage. The scheduler collects it at most
    # once per scheduler.gc_interval_seconds, counted from last_gc_time (or creation).
    gc_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_gc_time: Mapped[datetime | None] = mapped_column(nullable=True)


class Cycle(Base):
    __tablename__ = "cycles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    # queued | running | completed | partially-completed | failed
    state: Mapped[str] = mapped_column(String(24), default="queued", index=True)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(nullable=True)
    recovery_point_id: Mapped[str | None] = mapped_column(String(63), nullable=True)
    error_reason: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (
        UniqueConstraint("plan_id", "seq"),
        # At most one active cycle per plan, even across control replicas (migration 0007).
        Index("uq_cycles_plan_id_active", "plan_id", unique=True,
              postgresql_where=text("state IN ('queued', 'running')"),
              sqlite_where=text("state IN ('queued', 'running')")),
    )


class Task(Base):
    """Work leased to one node at a time: replicate and finalize belong to a cycle;
    restore and verify are the long-running operations users see."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("cycles.id"), nullable=True,
                                                 index=True)
    plan_id: Mapped[str | None] = mapped_column(String(63), nullable=True)
    disk: Mapped[str] = mapped_column(String(255), default="")
    target: Mapped[str] = mapped_column(String(255), default="")
    # queued | leased | completed | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    node_id: Mapped[str | None] = mapped_column(String(63), nullable=True)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_expire_time: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The typed spec message in proto-JSON form (dr_control/services/taskspecs.py).
    spec: Mapped[dict] = mapped_column(JSON, default=dict)
    checkpoint: Mapped[dict] = mapped_column(JSON, default=dict)
    stats: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    full_sync: Mapped[bool] = mapped_column(Boolean, default=False)
    error_reason: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(nullable=True)
    # The site whose nodes may take the task: "" = nodes of no site (unbound tasks);
    # a paired plan's are bound (dr_control/services/routing.py, docs/PAIRED.md).
    site: Mapped[str] = mapped_column(String(63), default="")
    # Whose settings and credentials the node gets with the task when it is leased (the
    # spec never holds them): the plan's source site (snapshot, replicate) and target
    # site (everything that opens the target). "" = none.
    source_site: Mapped[str] = mapped_column(String(63), default="")
    target_site: Mapped[str] = mapped_column(String(63), default="")
    # A paired replicate task: the target site whose nodes may be its pair (the pair
    # itself is chosen at lease and sent in the spec).
    pair_site: Mapped[str] = mapped_column(String(63), default="")
    # A restore that writes to another site (recovery's prepare step: a disk uploaded
    # to a vSphere datastore): that site, whose settings go in spec.destination.site.
    destination_site: Mapped[str] = mapped_column(String(63), default="")


class RecoveryPoint(Base):
    __tablename__ = "recovery_points"
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("cycles.id"))
    cycle_seq: Mapped[int] = mapped_column(Integer)
    create_time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # [{"disk", "size", "root_hash", "full_sync"}]
    disks: Mapped[list] = mapped_column(JSON, default=list)
    stats: Mapped[dict] = mapped_column(JSON, default=dict)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    # ready | deleting (a delete task is removing it at the target; then the row goes)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    # A plan's newest point by one index probe (planfacts.py; migration 0010).
    __table_args__ = (Index("ix_recovery_points_plan_id_create_time", "plan_id", "create_time"),)


class Node(Base):
    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    hostname: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[str] = mapped_column(String(32), default="")
    max_tasks: Mapped[int] = mapped_column(Integer, default=1)
    budget_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    running_tasks: Mapped[int] = mapped_column(Integer, default=0)
    inflight_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    last_heartbeat_time: Mapped[datetime] = mapped_column(default=utcnow)
    register_time: Mapped[datetime] = mapped_column(default=utcnow)
    # 0..1 as the node last reported it (its byte budget's pressure).
    backpressure: Mapped[float] = mapped_column(Float, default=0.0)
    # DrainNode: no new tasks; running ones are handed back at their next report.
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    # The site the node sits in ("" = none: it takes unbound tasks only).
    site: Mapped[str] = mapped_column(String(63), default="")
    # host:port of its TransferService, which paired source nodes dial ("" = none).
    transfer_address: Mapped[str] = mapped_column(Text, default="")
    # The name on the client certificate it registered with (its id, or the prefix a
    # shared certificate names; "" = TLS off): paired source nodes check it for that name.
    cert_name: Mapped[str] = mapped_column(Text, default="")
    # Its pairs' health as of its last heartbeat: [{"node", "address", "streams",
    # "rtt_seconds", "throughput_bytes_per_second", "credit_bytes", "errors"}].
    pairs: Mapped[list] = mapped_column(JSON, default=list)


class RecoveryPlan(Base):
    """Ordered boot groups of a protection plan's workloads with their target settings."""

    __tablename__ = "recovery_plans"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"), index=True)
    # The site recovered to; its kind picks the provider (default: the plan's target).
    site_id: Mapped[str] = mapped_column(String(63), default="")
    # [{"name", "workloads": [{"workload", "tags", ...the provider's own settings}]}]
    # (aws: "instance_type", "subnet_id", "security_group_ids", "private_ip";
    # vsphere: "vsphere": {...})
    boot_groups: Mapped[list] = mapped_column(JSON, default=list)
    # {"pre": [script], "post": [script]}, each {"command", "timeout_seconds"}
    # (a workload's own checks and scripts are in its entry of boot_groups).
    scripts: Mapped[dict] = mapped_column(JSON, default=dict)
    # The execution that failed the plan's workloads over last ("" never).
    failed_over_by: Mapped[str] = mapped_column(String(255), default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)


class Execution(Base):
    """One run of a recovery plan; every step is recorded so it can be watched and
    resumed after a control-plane restart."""

    __tablename__ = "executions"
    recovery_plan_id: Mapped[str] = mapped_column(ForeignKey("recovery_plans.id"),
                                                  primary_key=True)
    # "{utc time}-{seq}": unique even across a deleted and re-created recovery plan,
    # because the execution's name tags (and so finds) what it creates in the cloud.
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    # "plans/{plan}/recoveryPoints/{point}"
    recovery_point: Mapped[str] = mapped_column(String(255))
    # test | failover | migrate
    mode: Mapped[str] = mapped_column(String(16))
    # started | running | completed | partially-completed | failed | cancelled |
    # cleaned-up
    state: Mapped[str] = mapped_column(String(24), default="started", index=True)
    # Set while a cleanup runs (so a restarted control plane resumes it).
    cleanup_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set by CancelExecution; the run stops at its next step boundary.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The recovery plan as the execution started it: {"boot_groups", "scripts"}.
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    # [{"workload", "group", "state", "checks": [check result], "reason"}]
    workloads: Mapped[list] = mapped_column(JSON, default=list)
    # [{"time" (ISO 8601), "group", "workload", "step", "detail"}]
    events: Mapped[list] = mapped_column(JSON, default=list)
    # [{"workload", "instance_id", "private_ip", "state", "volume_ids", "image_id"}]
    instances: Mapped[list] = mapped_column(JSON, default=list)
    error_reason: Mapped[str] = mapped_column(String(64), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(nullable=True)
    __table_args__ = (UniqueConstraint("recovery_plan_id", "seq"),)


class ApiToken(Base):
    """A bearer token for the operator API; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    # admin | operator | viewer
    role: Mapped[str] = mapped_column(String(16))
    # hex SHA-256 of the secret (the secret itself is shown once, at creation)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    create_time: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_time: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
