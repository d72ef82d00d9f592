"""The peer's process: Azurite as a child, the Storage front (plain HTTP) and the harness
ARM (HTTPS) on loopback ports. `python -m tests.peers.azure --port N --workdir DIR
[--storage-port M]` runs `main`; it is ready when `GET /_peer/info` answers over TLS with
DIR/tls/arm.pem as the CA (the certificate is written only after both servers listen)."""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
import threading
from pathlib import Path

from tests.peers.azure.arm import ArmHandler, ArmPeer
from tests.peers.azure.azurite import ACCOUNT, Azurite
from tests.peers.azure.blobs import BlobStore
from tests.peers.azure.kinds import KINDS
from tests.peers.azure.state import PeerState
from tests.peers.azure.storage import StorageHandler, StoragePeer
from tests.peers.azure.tls import make_certificate
from tests.peers.azure.wire import Server
from tests.peers.tools import free_port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the harness ARM (HTTPS)")
    parser.add_argument("--storage-port", type=int, default=0, help="the Storage front")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    azurite = Azurite(args.workdir, free_port()).start()
    try:
        state = PeerState(BlobStore(azurite.endpoint))
        storage = Server((args.host, args.storage_port), StorageHandler,
                         StoragePeer(state, "127.0.0.1", azurite.port))
        state.storage_endpoint = f"http://{args.host}:{storage.server_address[1]}/{ACCOUNT}"
        state.arm_endpoint = f"https://{args.host}:{args.port}"
        arm = Server((args.host, args.port), ArmHandler, ArmPeer(state, storage.peer, KINDS))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # Written once both servers listen (arm.pem atomically, after its key): a client
        # that finds the file can connect.
        cert, key = make_certificate(args.workdir / "tls")
        context.load_cert_chain(cert, key)
        # The handshake happens in the handler thread (lazily), so one slow client cannot
        # stall the accept loop.
        arm.socket = context.wrap_socket(arm.socket, server_side=True,
                                         do_handshake_on_connect=False)
        threading.Thread(target=storage.serve_forever, name="storage-front", daemon=True).start()

        def stop(*_: object) -> None:
            azurite.stop()
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print(f"azure peer: ARM {state.arm_endpoint}, blob {state.storage_endpoint}", flush=True)
        arm.serve_forever()
    finally:
        azurite.stop()

