"""`dr-control token ...`: commands run on the control plane's host, against its database.

They bootstrap what the API cannot: the first admin token (the API refuses every call
without one once auth is enabled). They use the daemon's configuration (--config and
DR_CONTROL_*) to find the database, so they run as the daemon's user.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from dr_common import config as config_loader
from dr_common.errors import DRError
from dr_control.config import ControlConfig
from dr_control.db.engine import make_engine, migrate, sessionmaker
from dr_control.services.tokens import ROLES, TokenService, token_name

COMMANDS = ("token",)


def is_local_command(argv: list[str]) -> bool:
    """Whether argv names a local command (not the daemon's --config)."""
    words = [a for i, a in enumerate(argv)
             if not a.startswith("-") and (i == 0 or argv[i - 1] != "--config")]
    return bool(words) and words[0] in COMMANDS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dr-control", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML configuration file (DR_CONTROL_* overrides it)")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action",
                                                                       required=True)
    create = token.add_parser("create", help="make a token and print its secret (once)")
    create.add_argument("--name", required=True, help="who or what uses the token")
    create.add_argument("--role", required=True, choices=ROLES)
    token.add_parser("list", help="list tokens (never their secrets)")
    revoke = token.add_parser("revoke", help="revoke a token for good")
    revoke.add_argument("token", metavar="apiTokens/ID")
    return parser


async def _run(cfg: ControlConfig, args: argparse.Namespace) -> None:
    Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)  # as the daemon does (SQLite)
    await migrate(cfg.db_url)
    engine = make_engine(cfg.db_url)
    try:
        tokens = TokenService(sessionmaker(engine))
        if args.action == "create":
            token, secret = await tokens.create(args.name, args.role)
            print(f"created {token_name(token.id)} ({token.role}); its secret is shown only "
                  "now, store it (e.g. in a file for drctl --token-file):", file=sys.stderr)
            print(secret)
        elif args.action == "list":
            for t in await tokens.list():
                state = "revoked" if t.revoked else "active"
                print(f"{token_name(t.id)}\t{t.name}\t{t.role}\t{state}")
        else:
            await tokens.revoke(args.token)
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config_loader.load(ControlConfig, args.config, env_prefix="DR_CONTROL_")
        asyncio.run(_run(cfg, args))
    except DRError as e:
        print(f"dr-control: {e.message}", file=sys.stderr)
        return 2
    return 0
