"""Resource names: the short ids operators type, expanded to the API's full names.

The API only speaks full names (AIP-122: "plans/p1/recoveryPoints/r1"). Typing those is
tedious, so the CLI also accepts the ids alone, joined by "/" in the order of the
hierarchy ("p1/r1"), and expands them. Full names are accepted as they are, so a name
copied from JSON output works too. Tables print the short form, so what an operator
reads can be pasted back into the next command.
"""

from __future__ import annotations

from dataclasses import dataclass


class InvalidName(ValueError):
    """A name that matches neither the short nor the full form of its resource."""


@dataclass(frozen=True)
class Pattern:
    """The collection ids of one resource type, outermost first."""

    what: str
    collections: tuple[str, ...]
    short_example: str

    @property
    def full_example(self) -> str:
        ids = self.short_example.split("/")
        return "/".join(f"{c}/{i}" for c, i in zip(self.collections, ids))


SITE = Pattern("site", ("sites",), "SITE")
WORKLOAD = Pattern("workload", ("sites", "workloads"), "SITE/WORKLOAD")
DISK = Pattern("disk", ("sites", "workloads", "disks"), "SITE/WORKLOAD/DISK")
PLAN = Pattern("plan", ("plans",), "PLAN")
CYCLE = Pattern("cycle", ("plans", "cycles"), "PLAN/CYCLE")
RECOVERY_POINT = Pattern("recovery point", ("plans", "recoveryPoints"), "PLAN/POINT")
OPERATION = Pattern("operation", ("operations",), "OPERATION")
NODE = Pattern("node", ("nodes",), "NODE")


def expand(pattern: Pattern, text: str, *, parents: tuple[str, ...] = ()) -> str:
    """Return the full name for `text`, given short ("s1/w1") or full.

    `parents` supplies leading ids the operator may leave out where the command makes
    them obvious (a plan's workloads live at its source site, so `--workload w1` with
    `--source s1` means "sites/s1/workloads/w1").
    """
    text = text.strip()
    parts = text.split("/")
    n = len(pattern.collections)
    if len(parts) == 2 * n and tuple(parts[0::2]) == pattern.collections:
        ids = parts[1::2]
    else:
        ids = parts
        missing = n - len(ids)
        if 0 < missing <= len(parents):
            ids = list(parents[:missing]) + ids
    if len(ids) != n or not all(ids):
        raise InvalidName(
            f"invalid {pattern.what} name {text!r}: "
            f"use {pattern.short_example} or {pattern.full_example}"
        )
    return "/".join(f"{c}/{i}" for c, i in zip(pattern.collections, ids))


def resource_id(pattern: Pattern, text: str, *, parents: tuple[str, ...] = ()) -> str:
    """The last id of a name: what Create calls take as `*_id`."""
    return expand(pattern, text, parents=parents).rsplit("/", 1)[1]


def short_name(name: str) -> str:
    """The ids of a full name joined by "/": the form the CLI accepts back.

    Anything that does not look like collection/id pairs is returned unchanged, so a
    surprising name from the server is shown, not hidden.
    """
    parts = name.split("/")
    if len(parts) < 2 or len(parts) % 2 or not all(parts):
        return name
    return "/".join(parts[1::2])


def parent_of(name: str) -> str:
    """The parent's full name: "plans/p1/cycles/c1" -> "plans/p1"."""
    return name.rsplit("/", 2)[0]
