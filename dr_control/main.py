"""`dr-control`: the control-plane daemon (and `dr-control token ...`, see local_commands)."""

from __future__ import annotations

import asyncio
import sys

from dr_common import daemon
from dr_control import local_commands
from dr_control.config import ControlConfig
from dr_control.server import start


async def _serve(cfg: ControlConfig, stop: asyncio.Event, log, _config_path) -> None:
    control = await start(cfg)
    log.info("ready", port=control.port)
    await stop.wait()
    log.info("stopping")
    await control.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if local_commands.is_local_command(args):
        return local_commands.main(args)
    return daemon.run("dr-control", __doc__, ControlConfig, "DR_CONTROL_", _serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
