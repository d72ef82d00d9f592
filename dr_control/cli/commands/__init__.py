"""One module per resource group; each adds its subcommands with `register`.

A handler takes (Context, argparse.Namespace) and returns the exit code.
"""

from __future__ import annotations

from . import (certs, inventory, nodes, operations, plans, points, recovery, reports, restore,
               tokens)

MODULES = (inventory, plans, points, restore, operations, nodes, recovery, reports, tokens,
           certs)
