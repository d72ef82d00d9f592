"""`drctl token ...`: API tokens (admin role). The secret is printed once, at creation."""

from __future__ import annotations

import argparse

from dr_common.proto.dr.v1 import admin_pb2

from ..context import Context
from ..errors import EXIT_OK
from ..table import format_table
from ..units import format_age

ROLES = ("viewer", "operator", "admin")


def register(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="API tokens (admin only)")
    token_sub = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = token_sub.add_parser("create", parents=parents, help="make a token; prints its secret")
    p.add_argument("--name", required=True, help="who or what uses the token")
    p.add_argument("--role", required=True, choices=ROLES)
    p.set_defaults(handler=token_create)
    p = token_sub.add_parser("list", parents=parents, help="list tokens (never their secrets)")
    p.set_defaults(handler=token_list)
    p = token_sub.add_parser("revoke", parents=parents, help="revoke a token for good")
    p.add_argument("token", metavar="apiTokens/ID")
    p.set_defaults(handler=token_revoke)


def token_create(ctx: Context, args: argparse.Namespace) -> int:
    resp = ctx.client.call(ctx.client.admin.CreateApiToken, admin_pb2.CreateApiTokenRequest(
        display_name=args.name, role=args.role))
    if ctx.out.json:
        ctx.out.resource(resp, str)
    else:
        ctx.out.note(f"created {resp.api_token.name} ({resp.api_token.role}); the secret is "
                     "shown only now:")
        ctx.out.text(resp.secret)
    return EXIT_OK


def token_list(ctx: Context, args: argparse.Namespace) -> int:
    tokens = ctx.client.list_all(ctx.client.admin.ListApiTokens,
                                 admin_pb2.ListApiTokensRequest(), "api_tokens")
    ctx.out.resources(tokens, render_tokens)
    return EXIT_OK


def token_revoke(ctx: Context, args: argparse.Namespace) -> int:
    name = args.token if args.token.startswith("apiTokens/") else f"apiTokens/{args.token}"
    ctx.client.call(ctx.client.admin.RevokeApiToken, admin_pb2.RevokeApiTokenRequest(name=name))
    ctx.out.note(f"revoked {name}")
    return EXIT_OK


def render_tokens(tokens: list[admin_pb2.ApiToken]) -> str:
    return format_table(
        ["TOKEN", "NAME", "ROLE", "STATE", "LAST USED"],
        [[t.name, t.display_name, t.role, "revoked" if t.revoked else "active",
          format_age(t.last_used_time) if t.HasField("last_used_time") else "never"]
         for t in tokens])
