"""`dr-control`: the control-plane daemon."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from dr_common import config as config_loader
from dr_common import logging as dr_logging
from dr_common import metrics as dr_metrics
from dr_common.errors import DRError
from dr_control.config import ControlConfig
from dr_control.server import start


async def _serve(cfg: ControlConfig) -> None:
    log = dr_logging.setup(cfg.log_level, service="dr-control")
    metrics_port = dr_metrics.serve(cfg.metrics_host, cfg.metrics_port)
    control = await start(cfg)
    log.info("ready", port=control.port, metrics_port=metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await control.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dr-control", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (DR_CONTROL_* overrides it)")
    args = parser.parse_args(argv)
    try:
        cfg = config_loader.load(ControlConfig, args.config, env_prefix="DR_CONTROL_")
        uvloop.run(_serve(cfg))
    except DRError as e:
        print(f"dr-control: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"dr-control: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
