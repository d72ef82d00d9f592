"""`dr-node`: a stateless replication node."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc
import uvloop

from dr_common import config as config_loader
from dr_common import logging as dr_logging
from dr_common import metrics as dr_metrics
from dr_common.errors import DRError
from dr_node.agent import Agent
from dr_node.config import NodeConfig


async def _serve(cfg: NodeConfig) -> None:
    log = dr_logging.setup(cfg.log_level, service="dr-node")
    metrics_port = dr_metrics.serve(cfg.metrics_host, cfg.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("dr-node starting", node=cfg.id, control=cfg.control, metrics_port=metrics_port,
             max_tasks=cfg.max_tasks, budget_bytes=cfg.engine.budget_bytes)
    async with grpc.aio.insecure_channel(cfg.control) as channel:
        await Agent(cfg, channel).run(stop)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dr-node", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (DR_NODE_* overrides it)")
    args = parser.parse_args(argv)
    try:
        cfg = config_loader.load(NodeConfig, args.config, env_prefix="DR_NODE_")
        uvloop.run(_serve(cfg))
    except DRError as e:
        print(f"dr-node: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
