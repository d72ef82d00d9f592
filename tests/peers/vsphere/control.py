"""The /_peer/ control endpoints (JSON over the front's HTTPS port; no vSphere API uses
/_peer/). They work during an outage, so a test can end it. Disks are named by VM (name or
moref) and disk (device key or label, e.g. "Hard disk 1")."""

from __future__ import annotations

import json
from typing import Any

from tests.peers.vsphere.inventory import NotFound
from tests.peers.vsphere.wire import Reply, json_reply

MAX_READ = 64 << 20  # bytes one /_peer/ read may ask for: one response in memory

OK: Reply = json_reply(200, {"ok": True})


def control(peer: Any, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
    try:
        return route(peer, method, path, query, body)
    except NotFound as e:
        return json_reply(404, {"error": str(e)})
    except (TypeError, ValueError, KeyError) as e:
        return json_reply(400, {"error": f"{type(e).__name__}: {e}"})


def disk_arg(query: dict[str, str]) -> int | str:
    disk = query["disk"]
    return int(disk) if disk.lstrip("-").isdigit() else disk


def route(peer: Any, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
    state, inv = peer.state, peer.inventory
    args: dict[str, Any] = json.loads(body) if body and path != "/_peer/disk/write" else {}
    if (method, path) == ("POST", "/_peer/reset"):
        peer.reset()
    elif (method, path) == ("GET", "/_peer/stats"):
        return json_reply(200, stats(peer))
    elif (method, path) == ("POST", "/_peer/stats/reset"):
        state.reset_stats()
    elif (method, path) == ("POST", "/_peer/faults"):
        state.add_rule(**args)
    elif (method, path) == ("DELETE", "/_peer/faults"):
        state.clear_rules(int(query.get("seed", 0)))
    elif (method, path) == ("POST", "/_peer/outage"):
        with state.lock:
            state.outage = bool(args["on"])
    elif (method, path) == ("POST", "/_peer/query_limits"):
        with state.lock:
            state.query_span = int(args.get("span", state.query_span))
            state.query_extents = int(args.get("extents", state.query_extents))
    elif (method, path) == ("POST", "/_peer/datastore"):
        with state.lock:
            state.datastores[args["name"]] = {"capacity": int(args["capacity"]),
                                              "free": int(args["free"])}
        peer.apply_datastore(args["name"])
    elif (method, path) == ("POST", "/_peer/tools"):
        vm = inv.vm(args["vm"])
        peer.vcsim.api("/_vcsim/tools", {"Ref": vm["ref"], "Running": bool(args["running"])})
    elif (method, path) == ("GET", "/_peer/vms"):
        inv.sync()
        return json_reply(200, inv.vms())
    elif path.startswith("/_peer/disk/"):
        return disk_request(peer, method, path.rsplit("/", 1)[-1], query, body)
    else:
        return json_reply(404, {"error": f"no peer endpoint {method} {path}"})
    return OK


def disk_request(peer: Any, method: str, action: str, query: dict[str, str],
                 body: bytes) -> Reply:
    inv = peer.inventory
    with inv.lock:
        disk = inv.disk(query["vm"], disk_arg(query))
        offset, length = int(query.get("offset", 0)), int(query.get("length", 0))
        if (method, action) == ("POST", "write"):
            disk.write(offset, body)
        elif (method, action) == ("POST", "discard"):
            disk.discard(offset, length)
        elif (method, action) == ("GET", "read"):
            if length > MAX_READ:
                raise ValueError(f"reads are limited to {MAX_READ} bytes")
            base = disk.layers[0] if query.get("base") == "1" else None
            return 200, [("Content-Type", "application/octet-stream")], disk.read(
                offset, length, base)
        elif (method, action) == ("GET", "sha256"):
            base = disk.layers[0] if query.get("base") == "1" else None
            return json_reply(200, {"sha256": disk.sha256(base)})
        elif (method, action) == ("GET", "info"):
            return json_reply(200, {
                "capacity": disk.capacity, "base": disk.base, "file": disk.current_file,
                "change_id": disk.change_id(), "cbt_pending": disk.pending,
                "allocated_blocks": len(disk.allocated()), "layers": disk.files()})
        elif (method, action) == ("POST", "cbt_reset"):
            inv.cbt_reset(query["vm"], disk_arg(query))
        else:
            return json_reply(405, {"error": f"{method} not allowed on {action}"})
    return OK


def stats(peer: Any) -> dict[str, Any]:
    state = peer.state
    with state.lock:
        out: dict[str, Any] = {"calls": dict(state.calls), "served": dict(state.served),
                               "received": dict(state.received),
                               "faults": dict(state.injected)}
    out["snapshots"] = {vm["name"]: len(vm["snapshots"]) for vm in peer.inventory.vms()}
    return out
