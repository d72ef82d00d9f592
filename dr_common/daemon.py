"""What both daemons do around their work: parse --config, load the typed configuration,
set up JSON logging and /metrics, run on uvloop, and turn SIGTERM/SIGINT into a stop
event the daemon honours (finishing or handing back its work) before it exits."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import uvloop

from dr_common import config as config_loader
from dr_common import logging as dr_logging
from dr_common import metrics as dr_metrics
from dr_common.errors import DRError

# serve(config, stop event, logger, path of the configuration file or None)
Serve = Callable[[Any, asyncio.Event, structlog.stdlib.BoundLogger, str | None],
                 Awaitable[None]]


def run(prog: str, description: str, config_cls: type, env_prefix: str, serve: Serve,
        argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=f"TOML configuration file ({env_prefix}* overrides it)")
    args = parser.parse_args(argv)
    try:
        cfg = config_loader.load(config_cls, args.config, env_prefix=env_prefix)
        uvloop.run(_main(prog, cfg, serve, args.config))
    except DRError as e:
        print(f"{prog}: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0


async def _main(prog: str, cfg, serve: Serve, config_path: str | None) -> None:
    log = dr_logging.setup(cfg.log_level, service=prog)
    metrics_port = dr_metrics.serve(cfg.metrics_host, cfg.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("starting", metrics_port=metrics_port)
    await serve(cfg, stop, log, config_path)
    log.info("stopped")
