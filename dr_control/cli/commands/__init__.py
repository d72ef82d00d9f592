"""One module per resource group; each adds its subcommands with `register`.

A handler takes (Context, argparse.Namespace) and returns the exit code.
"""

from __future__ import annotations

from . import inventory, nodes, operations, plans, points, recovery, restore

MODULES = (inventory, plans, points, restore, operations, nodes, recovery)
