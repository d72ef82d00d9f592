"""drctl's entry point: parse the command line, run one command, map failures to exit codes.

Nothing a user can cause (a wrong flag, a server that says no, a server that is not
there) ends in a traceback: each becomes one "error: ..." line on stderr and an exit
code from errors.py. Only drctl's own bugs still show a traceback, on purpose.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import grpc

from . import argtypes
from .client import Client, TlsFiles
from .commands import MODULES
from .context import Context
from .errors import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CliError, UsageError,
                     describe_rpc_error)
from .output import FORMATS, TABLE, Output

DEFAULT_SERVER = "127.0.0.1:50051"
SERVER_ENV = "DRCTL_SERVER"
DEFAULT_TIMEOUT = 30.0
CA_ENV, CERT_ENV, KEY_ENV = "DRCTL_CA_FILE", "DRCTL_CERT_FILE", "DRCTL_KEY_FILE"
TOKEN_ENV, TOKEN_FILE_ENV = "DRCTL_TOKEN", "DRCTL_TOKEN_FILE"


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes.

    They are added twice: to the top-level parser with real defaults (so they work
    before the command), and to every command's parser with SUPPRESS defaults (so
    they also work after it, and a command parser that did not see one does not
    overwrite the value given before the command).
    """

    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--server", metavar="HOST:PORT",
        default=default(os.environ.get(SERVER_ENV) or DEFAULT_SERVER),
        help=f"dr-control's gRPC address (default: ${SERVER_ENV}, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--output", "-o", choices=FORMATS, default=default(TABLE),
        help="table for people (default), json for scripts",
    )
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=argtypes.positive_seconds,
        default=default(DEFAULT_TIMEOUT),
        help=f"deadline of each call to dr-control (default {DEFAULT_TIMEOUT:g})",
    )
    _add_security_options(parser, default)


def _add_security_options(parser: argparse.ArgumentParser, default) -> None:
    """TLS files and the API token; each also from a DRCTL_* variable (for scripts)."""
    for flag, env, text in (
        ("--ca-file", CA_ENV, "CA certificate that signed dr-control's (turns TLS on)"),
        ("--cert-file", CERT_ENV, "drctl's client certificate (drctl.pem of certs init)"),
        ("--key-file", KEY_ENV, "its private key"),
        ("--token-file", TOKEN_FILE_ENV, f"file holding the API token (or set ${TOKEN_ENV})"),
    ):
        parser.add_argument(flag, metavar="FILE", default=default(os.environ.get(env, "")),
                            help=f"{text} (default: ${env})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drctl", description="Operate Hybrid DR: sites, plans, recovery points, restores."
    )
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in MODULES:
        module.register(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help (0) and on usage errors (2, message already printed);
        # main() returns codes instead, so it can be called from tests and wrappers.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    stdout, stderr = sys.stdout, sys.stderr
    out = Output(args.output, stdout, stderr)
    try:
        if getattr(args, "offline", False):  # e.g. `drctl certs`: no server involved
            return args.handler(Context(client=None, out=out, server=args.server,
                                        progress=False), args)
        with Client(args.server, args.timeout, tls_files=_tls_files(args),
                    token=_token(args)) as client:
            ctx = Context(
                client=client,
                out=out,
                server=args.server,
                progress=stderr.isatty() or args.output == TABLE,
            )
            return args.handler(ctx, args)
    except grpc.RpcError as err:
        code, lines = describe_rpc_error(err, server=args.server, timeout=args.timeout)
        for line in lines:
            print(line, file=stderr)
        return code
    except CliError as err:
        prefix = "drctl: error" if err.exit_code == EXIT_USAGE else "error"
        print(f"{prefix}: {err}", file=stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `drctl ... | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's final flush does not complain, and stop quietly.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_FAILURE


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if not args.ca_file:
        if args.cert_file or args.key_file:
            raise UsageError("--cert-file and --key-file need --ca-file (TLS)")
        return None
    return TlsFiles(args.ca_file, args.cert_file, args.key_file)


def _token(args: argparse.Namespace) -> str:
    """The API token from --token-file, else $DRCTL_TOKEN; "" when neither is set."""
    if not args.token_file:
        return os.environ.get(TOKEN_ENV, "").strip()
    try:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        raise UsageError(f"cannot read --token-file {args.token_file}: {e.strerror}") from None
    if not token:
        raise UsageError(f"--token-file {args.token_file} is empty; put the token's secret in it")
    return token


if __name__ == "__main__":
    raise SystemExit(main())
