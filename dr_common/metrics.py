"""Prometheus metrics endpoint shared by both daemons.

The metric objects themselves live next to the code that updates them (in
`dr_node.metrics` and `dr_control.metrics`) and register in prometheus-client's
process registry, the one piece of global state we allow.
"""

from __future__ import annotations

import prometheus_client


def serve(host: str, port: int) -> int:
    """Serves /metrics in a background thread; returns the bound port (0 = disabled)."""
    if port < 0:
        return 0
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return server.server_port
