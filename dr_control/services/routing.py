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

from dr_control.db.models import Plan, Site, Task
from dr_control.services.inventory import is_paired

# Task kinds that read the source and so run at the source site.
SOURCE_KINDS = ("snapshot", "replicate")
# Spec key of a replicate task streamed to a target node: the target site whose nodes
# may be its pair (not a wire field: the node gets pair_node, pair_address, pair_cert_name).
PAIR_SITE = "pair_site"


def locator(plan: Plan, target: Site) -> dict:
    """Where a plan's points go; "site" names the site whose credentials a node gets
    with the task (never stored in the spec itself)."""
    return {"kind": plan.target_kind, "path": target.path, "site": target.id}


def bound_site(plan: Plan, target: Site, kind: str) -> str:
    """The site whose nodes may take a task of `kind` for `plan` ("" = unbound)."""
    if not is_paired(target):
        return ""
    return plan.source_site if kind in SOURCE_KINDS else target.id


async def target_task(s, plan: Plan, kind: str, *, spec: dict, **fields) -> Task:
    """A new task (not yet added) that opens the plan's repository: its spec gets the
    repository's locator, and it is bound to the site that can reach it."""
    target = await s.get(Site, plan.target_site)
    return Task(kind=kind, plan_id=plan.id, site=bound_site(plan, target, kind),
                spec={**spec, "repository": locator(plan, target)}, **fields)
