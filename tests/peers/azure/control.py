"""The /_peer/ control endpoints (JSON, on the harness ARM's HTTPS port; no Azure API uses
/_peer/). Disks and snapshots are named by resource name (and `group` when two groups
hold the same name). See client.py for what each returns."""

from __future__ import annotations

import json
from typing import Any

from tests.peers.azure import pages
from tests.peers.azure.state import Managed
from tests.peers.azure.wire import Reply, json_reply

MAX_READ = 64 << 20  # bytes one /_peer/ read may ask for: one response in memory
OK: Reply = json_reply(200, {"ok": True})


def control(peer: Any, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
    try:
        return route(peer, method, path, query, body)
    except KeyError as e:
        return json_reply(404, {"error": str(e)})
    except (TypeError, ValueError) as e:
        return json_reply(400, {"error": f"{type(e).__name__}: {e}"})


def route(peer: Any, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
    state = peer.state
    args: dict[str, Any] = (json.loads(body) if body and not path.startswith("/_peer/disk/")
                            else {})
    if (method, path) == ("POST", "/_peer/reset"):
        state.reset()
    elif (method, path) == ("GET", "/_peer/info"):
        return json_reply(200, {"arm_endpoint": state.arm_endpoint,
                                "blob_endpoint": state.storage_endpoint,
                                "azurite_endpoint": state.blobs.endpoint})
    elif (method, path) == ("GET", "/_peer/stats"):
        return json_reply(200, stats(state))
    elif (method, path) == ("POST", "/_peer/stats/reset"):
        state.reset_stats()
    elif (method, path) == ("POST", "/_peer/faults"):
        state.faults.configure(args.get("storage") or {}, args.get("arm") or {},
                               int(args.get("seed", 0)))
    elif (method, path) == ("GET", "/_peer/faults"):
        return json_reply(200, state.faults.settings())
    elif (method, path) == ("POST", "/_peer/settings"):
        with state.lock:
            if "vm_provisioning_delay" in args:
                state.vm_provisioning_delay = float(args["vm_provisioning_delay"])
    elif (method, path) == ("POST", "/_peer/sas/expire"):
        with state.lock:
            for grant in state.grants.values():
                grant.expires = min(grant.expires, 0.0)
    elif (method, path) == ("GET", "/_peer/resources"):
        state.settle()
        with state.lock:
            return json_reply(200, [resource_summary(r) for r in state.resources.values()])
    elif path.startswith("/_peer/disk/"):
        return disk_request(state, method, path.rsplit("/", 1)[-1], query, body)
    else:
        return json_reply(404, {"error": f"no peer endpoint {method} {path}"})
    return OK


def find(state: Any, query: dict[str, str], kind: str | None) -> Managed:
    name, group = query["name"], query.get("group")
    if group:
        with state.lock:
            found = [m for m in state.managed.values() if m.name.lower() == name.lower()
                     and f"/resourcegroups/{group.lower()}/" in m.resource_id.lower()
                     and kind in (None, m.kind)]
        if len(found) != 1:
            raise KeyError(f"no single {kind or 'disk or snapshot'} {name!r} in {group!r}")
        return found[0]
    return state.managed_by_name(name, kind)


def disk_request(state: Any, method: str, action: str, query: dict[str, str],
                 body: bytes) -> Reply:
    offset, length = int(query.get("offset", 0)), int(query.get("length", 0))
    if (method, action) == ("POST", "write"):
        m = find(state, query, "disk")
        _aligned(offset, len(body))
        with m.io_lock:  # a guest write: into the blob, and into the journal like any write
            state.blobs.write(m.container, offset, body)
            if body:
                m.journal.write(offset, offset + len(body), pages.tick())
    elif (method, action) == ("POST", "clear"):
        m = find(state, query, "disk")
        _aligned(offset, length)
        with m.io_lock:
            state.blobs.clear(m.container, offset, length)
            m.journal.clear(offset, offset + length)
    elif (method, action) == ("GET", "read"):
        if length > MAX_READ:
            raise ValueError(f"reads are limited to {MAX_READ} bytes")
        m = find(state, query, None)
        return 200, [("Content-Type", "application/octet-stream")], state.blobs.read(
            m.container, offset, length)
    elif (method, action) == ("GET", "sha256"):
        m = find(state, query, None)
        return json_reply(200, {"sha256": state.blobs.sha256(m.container),
                                "size": state.blobs.size(m.container)})
    elif (method, action) == ("GET", "pages"):
        m = find(state, query, None)
        with m.io_lock:
            return json_reply(200, {"valid": m.journal.valid(), "seq": m.seq})
    else:
        return json_reply(405, {"error": f"{method} not allowed on {action}"})
    return OK


def _aligned(offset: int, length: int) -> None:
    if offset % pages.PAGE or length % pages.PAGE:
        raise ValueError(f"offset and length must be multiples of {pages.PAGE} (page blob pages)")


def resource_summary(resource: dict[str, Any]) -> dict[str, Any]:
    props = resource.get("properties") or {}
    state = props.get("diskState") or props.get("provisioningState")
    if resource["type"] == "Microsoft.Compute/virtualMachines":
        state = f"{props.get('provisioningState')}/{resource.get('_power', '')}"
    return {"type": resource["type"], "id": resource["id"], "name": resource["name"],
            "tags": resource.get("tags") or {}, "state": state}


def stats(state: Any) -> dict[str, Any]:
    with state.stats_lock:
        return {"blobs": {k: dict(v) for k, v in state.blob_stats.items()},
                "arm": dict(state.arm_calls), "throttled": state.throttled,
                "faults": state.faults.counts()}
