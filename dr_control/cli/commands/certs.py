"""`drctl certs ...`: the private CA and certificates of mutual TLS (offline: no server).

`init` makes the CA, dr-control's server certificate, drctl's client certificate and
one per --node; `node` adds a node's certificate from the CA already in the directory.
The CA key (ca-key.pem) should then be kept offline: only `drctl certs node` needs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dr_common import tls
from dr_common.errors import DRError

from ..context import Context
from ..errors import EXIT_OK, CliError


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser("certs", help="certificates for mutual TLS (works offline)")
    certs_sub = certs.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = certs_sub.add_parser("init", parents=parents,
                             help="make a CA and the certificates of dr-control, drctl, nodes")
    p.add_argument("--dir", required=True, type=Path, help="directory for the PEM files")
    p.add_argument("--server-name", action="append", dest="server_names", metavar="NAME",
                   help="DNS name or IP address of dr-control (repeat; default: "
                        f"{', '.join(tls.DEFAULT_SERVER_NAMES)})")
    p.add_argument("--node", action="append", dest="nodes", default=[], metavar="ID",
                   help="a node id to make a client certificate for (repeat)")
    p.set_defaults(handler=certs_init, offline=True)

    p = certs_sub.add_parser("node", parents=parents,
                             help="make one more node's certificate from the existing CA")
    p.add_argument("node", metavar="ID", help="the node's id (its node_id setting)")
    p.add_argument("--dir", required=True, type=Path, help="directory holding ca.pem")
    p.set_defaults(handler=certs_node, offline=True)


def certs_init(ctx: Context, args: argparse.Namespace) -> int:
    names = args.server_names or list(tls.DEFAULT_SERVER_NAMES)
    written = _run(lambda: tls.init_dir(args.dir, server_names=names, nodes=args.nodes))
    _report(ctx, written)
    return EXIT_OK


def certs_node(ctx: Context, args: argparse.Namespace) -> int:
    _report(ctx, [_run(lambda: tls.add_client(args.dir, args.node))])
    return EXIT_OK


def _run(make):
    try:
        return make()
    except DRError as e:
        raise CliError(e.message) from None
    except OSError as e:
        raise CliError(f"cannot write certificates: {e}") from None


def _report(ctx: Context, certificates: list[Path]) -> None:
    """Each certificate written (its key is beside it, NAME-key.pem, mode 0600)."""
    for path in certificates:
        ctx.out.text(str(path))
