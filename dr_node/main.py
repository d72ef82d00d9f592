"""`dr-node`: a stateless replication node."""

from __future__ import annotations

import asyncio

import grpc

from dr_common import daemon
from dr_node.agent import Agent
from dr_node.config import NodeConfig


async def _serve(cfg: NodeConfig, stop: asyncio.Event, log) -> None:
    log.info("node", node=cfg.id, control=cfg.control, max_tasks=cfg.max_tasks,
             budget_bytes=cfg.engine.budget_bytes)
    async with grpc.aio.insecure_channel(cfg.control) as channel:
        await Agent(cfg, channel).run(stop)


def main(argv: list[str] | None = None) -> int:
    return daemon.run("dr-node", __doc__, NodeConfig, "DR_NODE_", _serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
