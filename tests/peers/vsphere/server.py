"""The peer's process: vcsim as a child, the TLS front on a loopback port.
`python -m tests.peers.vsphere --port N --workdir DIR --vcsim BINARY` runs `main`; it is
ready when `GET /_peer/stats` answers over TLS with DIR/vcenter.pem as the CA."""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from pathlib import Path

from tests.peers.vsphere.front import FrontServer, Peer
from tests.peers.vsphere.tls import make_certificate
from tests.peers.vsphere.vcsim import Vcsim


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--vcsim", type=Path, required=True)
    args = parser.parse_args(argv)
    # The certificate is written last-but-one: the client waits for the file, then a request.
    tmp = args.workdir / "tls"
    cert, key = make_certificate(tmp)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    vcsim = Vcsim(args.vcsim, args.workdir / "vcsim.log")
    vcsim.start()
    peer = Peer(vcsim)
    peer.inventory.sync()
    server = FrontServer((args.host, args.port), peer, context)

    def stop(*_: object) -> None:
        vcsim.stop()
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print(f"vsphere peer listening on https://{args.host}:{args.port}/sdk", flush=True)
    try:
        server.serve_forever()
    finally:
        vcsim.stop()
