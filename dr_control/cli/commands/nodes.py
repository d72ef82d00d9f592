"""`drctl node list|drain|undrain`: the registered dr-node daemons, how loaded they are,
and taking one out of service without failing a cycle."""

from __future__ import annotations

import argparse
import time

from dr_common.proto.dr.v1 import nodes_pb2

from .. import argtypes, names
from ..context import Context
from ..errors import EXIT_INTERRUPTED, EXIT_OK, CliError
from ..table import format_table
from ..units import format_age, format_rate, format_size

# Between looks at a draining node (drain --wait).
POLL_INTERVAL = 1.0


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    node = sub.add_parser("node", help="replication nodes")
    node_sub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = node_sub.add_parser("list", parents=parents, help="list nodes and their load")
    p.set_defaults(handler=node_list)
    p = node_sub.add_parser(
        "drain", parents=parents,
        help="give a node no new tasks and hand its running tasks to other nodes "
             "(they resume from their checkpoints; no cycle fails)")
    p.add_argument("node", metavar="NODE", type=argtypes.name(names.NODE))
    p.add_argument("--wait", action="store_true",
                   help="return only when the node runs no task")
    p.set_defaults(handler=node_drain)
    p = node_sub.add_parser("undrain", parents=parents, help="let a drained node take tasks")
    p.add_argument("node", metavar="NODE", type=argtypes.name(names.NODE))
    p.set_defaults(handler=node_undrain)


def node_list(ctx: Context, args: argparse.Namespace) -> int:
    nodes = ctx.client.list_all(ctx.client.nodes.ListNodes, nodes_pb2.ListNodesRequest(), "nodes")
    ctx.out.resources(nodes, render_nodes)
    return EXIT_OK


def _busy(node: nodes_pb2.Node) -> bool:
    """Tasks still leased to it, or (while it is online) tasks it says it runs."""
    return node.leased_tasks > 0 or (node.state == "online" and node.running_tasks > 0)


def _find(ctx: Context, name: str) -> nodes_pb2.Node:
    for n in ctx.client.list_all(ctx.client.nodes.ListNodes, nodes_pb2.ListNodesRequest(),
                                 "nodes"):
        if n.name == name:
            return n
    raise CliError(f"node {name} is gone")


def node_drain(ctx: Context, args: argparse.Namespace) -> int:
    node = ctx.client.call(ctx.client.nodes.DrainNode, nodes_pb2.DrainNodeRequest(name=args.node))
    if args.wait:
        try:
            while _busy(node):
                time.sleep(POLL_INTERVAL)
                node = _find(ctx, args.node)
        except KeyboardInterrupt:
            raise CliError(f"interrupted; {args.node} stays draining: `drctl node list` to "
                           f"follow it", exit_code=EXIT_INTERRUPTED) from None
    ctx.out.resource(node, lambda n: render_nodes([n]))
    if not args.wait and _busy(node):
        ctx.out.note(f"{names.short_name(node.name)} hands its tasks back at their next "
                     f"progress report; `drctl node drain --wait` waits for that")
    return EXIT_OK


def node_undrain(ctx: Context, args: argparse.Namespace) -> int:
    node = ctx.client.call(ctx.client.nodes.UndrainNode,
                           nodes_pb2.UndrainNodeRequest(name=args.node))
    ctx.out.resource(node, lambda n: render_nodes([n]))
    return EXIT_OK


def format_pair(p: nodes_pb2.PairHealth) -> str:
    """One pair as a source node sees it, compactly: target node, round trip, acked
    throughput, credits granted and unused, errors (`-o json` has every field)."""
    return (f"{names.short_name(p.node)} {1000 * p.rtt_seconds:.0f}ms "
            f"{format_rate(p.throughput_bytes_per_second)} "
            f"{format_size(p.credit_bytes)} cr {p.errors} err")


def render_nodes(nodes: list[nodes_pb2.Node]) -> str:
    """RUNNING TASKS is the node's own count (its last heartbeat), LEASED the control
    plane's; LOAD, what task placement uses, is the larger of LEASED/MAX TASKS and the
    backpressure of the node's byte budget. SITE is where the node sits ("-": none, it
    takes unbound tasks); PAIRS, for a paired source node, the target nodes it streams
    to (docs/PAIRED.md)."""
    return format_table(
        ["NODE", "HOSTNAME", "SITE", "STATE", "RUNNING TASKS", "MAX TASKS", "LEASED",
         "DRAINING", "LOAD", "BACKPRESSURE", "IN FLIGHT", "LAST HEARTBEAT", "PAIRS"],
        [
            [
                names.short_name(n.name),
                n.hostname,
                n.site or "-",
                n.state,
                n.running_tasks,
                n.max_tasks,
                n.leased_tasks,
                "yes" if n.draining else "no",
                f"{100 * n.load:.0f}%",
                f"{100 * n.backpressure:.0f}%",
                format_size(n.inflight_bytes),
                format_age(n.last_heartbeat_time),
                "; ".join(format_pair(p) for p in n.pairs) or "-",
            ]
            for n in nodes
        ],
        right=["RUNNING TASKS", "MAX TASKS", "LEASED", "LOAD", "BACKPRESSURE", "IN FLIGHT"],
    )
