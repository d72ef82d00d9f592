"""Which nodes may take a task: the site a task is bound to (paired topology, issue 7).

A *paired* site's storage is reachable only from nodes inside it. A plan that targets
one replicates through a pair: a *source node* at the plan's source site reads the disk
and streams chunks to a *target node* inside the target site, which writes them. So a
task is bound to a site (Task.site) and only nodes of that site take it:
- the source-side work of such a plan (snapshot, replicate) to the plan's source site;
- everything that opens the repository (finalize, restore, verify, delete, gc) to the
  target site.
Tasks of other plans stay unbound (""), taken by nodes of no site, as before pairing.
The target node of a replicate task is chosen when it is leased (leasing.py).
"""

from __future__ import annotations

from google.protobuf.message import Message

from dr_common import targets
from dr_common.proto.dr.v1 import nodes_pb2
from dr_control.db.models import Plan, Site, Task
from dr_control.services import taskspecs
from dr_control.services.inventory import is_paired

# Task kinds that read the source and so run at the source site.
SOURCE_KINDS = ("snapshot", "replicate", "drop_snapshots")


def locator(plan: Plan, target: Site) -> nodes_pb2.TargetLocator:
    """Where a plan's points go (the target site's settings are added when a task is
    leased, from Task.target_site: never stored in the spec)."""
    return targets.locator(plan.target_kind, target.path)


def bound_site(plan: Plan, target: Site, kind: str) -> str:
    """The site whose nodes may take a task of `kind` for `plan` ("" = unbound)."""
    if not is_paired(target):
        return ""
    return plan.source_site if kind in SOURCE_KINDS else target.id


async def target_task(s, plan: Plan, kind: str, *, spec: Message, **fields) -> Task:
    """A new task (not yet added) that opens the plan's target: its spec gets the
    target's locator, and it is bound to the site that can reach it."""
    target = await s.get(Site, plan.target_site)
    spec.target.CopyFrom(locator(plan, target))
    return Task(kind=kind, plan_id=plan.id, site=bound_site(plan, target, kind),
                target_site=target.id, spec=taskspecs.store(spec), **fields)
