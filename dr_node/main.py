"""`dr-node`: a stateless replication node."""

from __future__ import annotations

import asyncio
import signal

import grpc

from dr_common import config as config_loader
from dr_common import daemon, tls
from dr_common.errors import DRError
from dr_node.agent import Agent
from dr_node.config import NodeConfig


async def _serve(cfg: NodeConfig, stop: asyncio.Event, log, config_path: str | None) -> None:
    log.info("node", node=cfg.id, control=cfg.control, max_tasks=cfg.max_tasks,
             budget_bytes=cfg.engine.budget_bytes)
    async with _channel(cfg) as channel:
        agent = Agent(cfg, channel)

        def reload() -> None:
            # Only the bandwidth cap changes at run time; the rest needs a restart.
            try:
                new = config_loader.load(NodeConfig, config_path, env_prefix="DR_NODE_")
            except DRError as e:
                log.error("configuration not reloaded", error=e.message)
                return
            rate = new.engine.bandwidth_bytes_per_second
            agent.engine.node_bandwidth.set_rate(rate)
            log.info("configuration reloaded", bandwidth_bytes_per_second=rate)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        await agent.run(stop)


def _channel(cfg: NodeConfig) -> grpc.aio.Channel:
    """mutual TLS when a CA is configured (production), else plaintext (the demo)."""
    if not cfg.tls_ca_file:
        return grpc.aio.insecure_channel(cfg.control)
    return grpc.aio.secure_channel(cfg.control, tls.channel_credentials(
        cfg.tls_ca_file, cfg.tls_cert_file, cfg.tls_key_file))


def main(argv: list[str] | None = None) -> int:
    return daemon.run("dr-node", __doc__, NodeConfig, "DR_NODE_", _serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
