"""Resource names (AIP-122): one format for each resource, from proto to CLI to UI."""

from __future__ import annotations

import re

from dr_common.errors import InvalidArgument

# AIP-122 resource ids: lowercase letters, digits and hyphens, starting with a letter.
ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_SEGMENT = r"([a-z0-9][a-z0-9-]{0,62})"
_ID_CHARS = re.compile(r"[^a-z0-9-]+")


def check_id(value: str, *, field: str, what: str) -> str:
    if not ID_PATTERN.match(value or ""):
        raise InvalidArgument(
            f"{what} id {value!r} is not valid: use 1-63 lowercase letters, digits or "
            f"hyphens, starting with a letter", field=field)
    return value


def resource_id(name: str) -> str:
    """Turns a name found by inventory (a file name, a host name) into a resource id:
    lowercase letters, digits, hyphens, starting with a letter."""
    ident = _ID_CHARS.sub("-", name.lower()).strip("-")
    if not ident or not ident[0].isalpha():
        ident = "d-" + ident
    return ident[:63].rstrip("-")


def _parser(template: str):
    keys = re.findall(r"{(\w+)}", template)
    pattern = re.compile("^" + re.sub(r"{\w+}", _SEGMENT, template) + "$")

    def parse(name: str, *, field: str = "name") -> tuple[str, ...]:
        m = pattern.match(name or "")
        if not m:
            raise InvalidArgument(f"{name!r} is not a valid name: expected {template}",
                                  field=field)
        return m.groups() if len(keys) > 1 else m.group(1)

    def build(*parts: object) -> str:
        return template.format(**dict(zip(keys, (str(p) for p in parts))))

    return parse, build


parse_site, site_name = _parser("sites/{site}")
parse_workload, workload_name = _parser("sites/{site}/workloads/{workload}")
parse_disk, disk_name = _parser("sites/{site}/workloads/{workload}/disks/{disk}")
parse_plan, plan_name = _parser("plans/{plan}")
parse_cycle, cycle_name = _parser("plans/{plan}/cycles/{cycle}")
parse_point, point_name = _parser("plans/{plan}/recoveryPoints/{point}")
parse_operation, operation_name = _parser("operations/{operation}")
parse_node, node_name = _parser("nodes/{node}")
parse_task, task_name = _parser("tasks/{task}")
