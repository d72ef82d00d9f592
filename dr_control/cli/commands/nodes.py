"""`drctl node list`: the registered dr-node daemons and how busy they are."""

from __future__ import annotations

import argparse

from dr_common.proto.dr.v1 import nodes_pb2

from .. import names
from ..context import Context
from ..errors import EXIT_OK
from ..table import format_table
from ..units import format_age


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    node = sub.add_parser("node", help="replication nodes")
    node_sub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = node_sub.add_parser("list", parents=parents, help="list nodes")
    p.set_defaults(handler=node_list)


def node_list(ctx: Context, args: argparse.Namespace) -> int:
    nodes = ctx.client.list_all(ctx.client.nodes.ListNodes, nodes_pb2.ListNodesRequest(), "nodes")
    ctx.out.resources(nodes, render_nodes)
    return EXIT_OK


def render_nodes(nodes: list[nodes_pb2.Node]) -> str:
    return format_table(
        ["NODE", "HOSTNAME", "STATE", "RUNNING TASKS", "MAX TASKS", "LAST HEARTBEAT"],
        [
            [
                names.short_name(n.name),
                n.hostname,
                n.state,
                n.running_tasks,
                n.max_tasks,
                format_age(n.last_heartbeat_time),
            ]
            for n in nodes
        ],
        right=["RUNNING TASKS", "MAX TASKS"],
    )
