"""typed task specs: source and target locators, control-only keys as task columns

Task specs were dicts with loose keys (source_kind, source_locator, repository,
source_aws...); they are now the proto-JSON form of the typed spec messages
(proto/dr/v1/nodes.proto), read back strictly. Every row is rewritten here, so a task
queued or leased before the upgrade is leased after it with the same meaning; the keys
only the control plane used (source_site, the repository's site, pair_site) become the
columns source_site, target_site and pair_site.

A row whose spec cannot be understood (a kind or key this migration does not know) is
left as it is and fails with a clear error when it is next read, instead of being
guessed at. Downgrade turns the specs back into the untyped form (`revert`) and drops
the columns.

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The old spec keys, by what they become.
_SOURCE_KEYS = {"source_kind", "source_locator", "source_site", "previous_bitmap", "bitmap",
                "source_snapshot_id", "previous_source_snapshot_id", "source_aws"}
_PAIR_KEYS = {"pair_node": "node", "pair_address": "address", "pair_cert_name": "cert_name"}


def _target(repository: dict) -> dict:
    kind, path = repository.get("kind", ""), repository.get("path", "")
    if kind == "fs":
        return {"fs": {"path": path}}
    if kind == "s3":
        return {"s3": {"location": path}}
    if kind == "ebs":
        return {"ebs": {}}
    raise ValueError(f"unknown repository kind {kind!r}")


def _source(spec: dict) -> dict:
    kind, where = spec.get("source_kind", ""), spec.get("source_locator", "")
    if kind == "file":
        return {"file": {"path": where}}
    if kind == "kvm":
        return {"kvm": {"path": where, "previous_bitmap": spec.get("previous_bitmap", ""),
                        "bitmap": spec.get("bitmap", "")}}
    if kind == "aws":
        return {"aws": {"volume_id": where, "snapshot_id": spec.get("source_snapshot_id", ""),
                        "previous_snapshot_id": spec.get("previous_source_snapshot_id", ""),
                        "size_bytes": str(spec.get("size_bytes", 0))}}
    raise ValueError(f"unknown source kind {kind!r}")


def convert(kind: str, spec: dict) -> tuple[dict, dict]:
    """(new spec, column values) of an old spec; ValueError if it is not understood."""
    spec = dict(spec)
    cols = {"source_site": "", "target_site": "", "pair_site": spec.pop("pair_site", "")}
    if "repository" in spec:
        repository = spec.pop("repository")
        cols["target_site"] = repository.get("site", "")
        spec["target"] = _target(repository)
    if kind == "replicate":
        cols["source_site"] = spec.get("source_site", "")
        spec["source"] = _source(spec)
        for k in _SOURCE_KEYS:
            spec.pop(k, None)
        pair = {new: spec.pop(old) for old, new in _PAIR_KEYS.items() if old in spec}
        if pair.get("node"):
            spec["pair"] = pair
    elif kind == "snapshot":
        cols["source_site"] = spec.pop("source_site", "")
        spec.pop("source_aws", None)
        spec["source"] = {"aws": {}}
        spec["disks"] = [{"disk": v["disk"], "workload": v["instance_id"],
                          "locator": v["volume_id"]} for v in spec.pop("volumes", [])]
    elif kind not in ("finalize", "restore", "verify", "delete", "gc"):
        raise ValueError(f"unknown task kind {kind!r}")
    return spec, cols


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        for name in ("source_site", "target_site", "pair_site"):
            batch.add_column(sa.Column(name, sa.String(63), nullable=False, server_default=""))
    conn = op.get_bind()
    tasks = sa.table("tasks", sa.column("id", sa.Integer), sa.column("kind", sa.String),
                     sa.column("spec", sa.JSON), sa.column("source_site", sa.String),
                     sa.column("target_site", sa.String), sa.column("pair_site", sa.String))
    for row in conn.execute(sa.select(tasks.c.id, tasks.c.kind, tasks.c.spec)).all():
        try:
            spec, cols = convert(row.kind, row.spec or {})
        except (ValueError, KeyError, TypeError):
            continue  # read strictly later: the task fails saying what is wrong
        conn.execute(tasks.update().where(tasks.c.id == row.id).values(spec=spec, **cols))


def _repository(target: dict, site: str) -> dict:
    (kind, loc), = target.items() if target else (("fs", {}),)
    return {"kind": kind, "path": loc.get("path", loc.get("location", "")), "site": site}


def revert(kind: str, spec: dict, cols: dict) -> dict:
    """The untyped spec of a typed one (downgrade)."""
    spec = dict(spec)
    if "target" in spec:
        spec["repository"] = _repository(spec.pop("target"), cols["target_site"])
    if cols["pair_site"]:
        spec["pair_site"] = cols["pair_site"]
    if kind == "replicate":
        (src_kind, src), = spec.pop("source", {"file": {}}).items()
        spec.update(source_kind=src_kind, source_site=cols["source_site"],
                    source_locator=src.get("path", src.get("volume_id", "")),
                    previous_bitmap=src.get("previous_bitmap", ""),
                    bitmap=src.get("bitmap", ""),
                    source_snapshot_id=src.get("snapshot_id", ""),
                    previous_source_snapshot_id=src.get("previous_snapshot_id", ""))
        pair = spec.pop("pair", {})
        spec.update({old: pair[new] for old, new in _PAIR_KEYS.items() if new in pair})
    elif kind == "snapshot":
        spec.pop("source", None)
        spec["source_site"] = cols["source_site"]
        spec["volumes"] = [{"disk": d["disk"], "instance_id": d["workload"],
                            "volume_id": d["locator"]} for d in spec.pop("disks", [])]
    return spec


def downgrade() -> None:
    conn = op.get_bind()
    tasks = sa.table("tasks", sa.column("id", sa.Integer), sa.column("kind", sa.String),
                     sa.column("spec", sa.JSON), sa.column("source_site", sa.String),
                     sa.column("target_site", sa.String), sa.column("pair_site", sa.String))
    for row in conn.execute(sa.select(tasks)).all():
        try:
            spec = revert(row.kind, row.spec or {}, {"source_site": row.source_site,
                                                     "target_site": row.target_site,
                                                     "pair_site": row.pair_site})
        except (ValueError, KeyError, TypeError):
            continue
        conn.execute(tasks.update().where(tasks.c.id == row.id).values(spec=spec))
    with op.batch_alter_table("tasks") as batch:
        for name in ("source_site", "target_site", "pair_site"):
            batch.drop_column(name)
