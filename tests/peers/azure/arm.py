"""The harness Azure Resource Manager: HTTPS routing, bearer-token checks, subscription and
resource-group checks, throttling, long-running operations and ARM's error envelope, over
resource kinds (compute.py, network.py) that each say how their resources are made.

Paths are ARM's, case-insensitive like ARM's:
  /subscriptions/{s}/resourceGroups/{g}/providers/{ns}/{type}[/{name}[/{child}[/{name}]]][/{action}]
  /subscriptions/{s}/providers/{ns}/{type}                     (list in the subscription)
  /subscriptions/{s}/providers/{ns}/locations/{l}/operations/{id}   (LRO status / result)
Long-running operations answer 202 (or 201) with both `Azure-AsyncOperation` (status:
InProgress / Succeeded / Failed) and `Location` (202 until done, then the result). No
`Retry-After` is sent on them, as Compute's are not, so azure-core waits its
`polling_interval` (default 30 s) between polls: clients pass a small one in tests."""

from __future__ import annotations

import json
import re
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.peers.azure import entra
from tests.peers.azure.accounts import LOCATION, RESOURCE_GROUPS, SUBSCRIPTION_ID, Principal
from tests.peers.azure.state import READ_LIMIT, WRITE_LIMIT, Operation, PeerState
from tests.peers.azure.wire import Handler, Reply, json_reply


class ArmError(Exception):
    """An answer in ARM's envelope: {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def reply(self) -> Reply:
        return json_reply(self.status, {"error": {"code": self.code, "message": self.message}})


def invalid(message: str, target: str = "") -> ArmError:
    return ArmError(400, "InvalidParameter", message + (f" Target: '{target}'." if target else ""))


@dataclass
class Ref:
    """What an ARM path names."""
    subscription: str
    group: str | None
    namespace: str
    types: list[str]      # e.g. ["virtualNetworks", "subnets"] (canonical casing)
    names: list[str]      # one per type, or one fewer for a collection
    action: str = ""

    @property
    def type_name(self) -> str:
        return "/".join([self.namespace, *self.types])

    @property
    def id(self) -> str:
        out = f"/subscriptions/{self.subscription}/resourceGroups/{self.group}/providers/{self.namespace}"
        for t, n in zip(self.types, self.names):
            out += f"/{t}/{n}"
        return out

    @property
    def parent_id(self) -> str:
        return self.id.rsplit("/", 2)[0]

    @property
    def is_collection(self) -> bool:
        return len(self.names) < len(self.types)

    @property
    def operation(self) -> str:
        return self.types[-1]


@dataclass
class Context:
    """One ARM request, as a resource kind sees it."""
    state: PeerState
    ref: Ref
    method: str
    query: dict[str, str]
    body: dict[str, Any]
    principal: Principal

    @property
    def api_version(self) -> str:
        return self.query.get("api-version", "")

    def lro(self, status: int, body: Any, *, delay: float = 0.0, result: Any = None,
            finish: Callable[[], None] | None = None) -> Reply:
        """An answer that starts a long-running operation over ref's resource."""
        op = self.state.start_operation(self.ref.id, delay=delay, result=result, finish=finish)
        base = (f"{self.state.arm_endpoint}/subscriptions/{self.ref.subscription}/providers/"
                f"{self.ref.namespace}/locations/{LOCATION}/operations/{op.id}")
        headers = [("Azure-AsyncOperation", f"{base}?api-version={self.api_version}"),
                   ("Location", f"{base}?monitor=true&api-version={self.api_version}")]
        if body is None:
            return status, headers, b""
        return json_reply(status, body, headers)


class Kind:
    """One resource type. Subclasses override `create` (and maybe `view`, `delete`,
    `actions`); stored resources are ARM's JSON as GET shows it."""

    type_name = ""
    create_status = (201, 200)  # (new, existing) status of a PUT's first answer
    async_put = True            # the PUT answers Azure-AsyncOperation / Location

    def create(self, ctx: Context, existing: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError

    def view(self, ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
        return resource

    def delete(self, ctx: Context, resource: dict[str, Any]) -> None:
        pass

    def actions(self) -> dict[str, Callable[[Context, dict[str, Any]], Reply]]:
        """"POST beginGetAccess" (or "GET instanceView") -> handler(ctx, resource)."""
        return {}

    def put_reply(self, ctx: Context, resource: dict[str, Any], status: int) -> Reply:
        if not self.async_put:
            return json_reply(status, self.view(ctx, resource))
        return ctx.lro(status, self.view(ctx, resource))


def base_resource(ctx: Context, **extra: Any) -> dict[str, Any]:
    """The envelope every ARM resource has; location and tags from the request."""
    body = ctx.body
    location = body.get("location")
    if location is None and len(ctx.ref.types) == 1:
        raise ArmError(400, "LocationRequired", "The location property is required for "
                       "this definition.")
    out: dict[str, Any] = {"name": ctx.ref.names[-1], "id": ctx.ref.id, "type": ctx.ref.type_name}
    if len(ctx.ref.types) == 1:
        out["location"] = str(location).replace(" ", "").lower()
        out["tags"] = dict(body.get("tags") or {})
    out.update(extra)
    return out


def not_found(ref: Ref) -> ArmError:
    return ArmError(404, "ResourceNotFound",
                    f"The Resource '{ref.type_name}/{'/'.join(ref.names)}' under resource group "
                    f"'{ref.group}' was not found. For more details please go to "
                    "https://aka.ms/ARMResourceNotFoundFix")


PATH = re.compile(r"/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<group>[^/]+))?"
                  r"(?:/providers/(?P<ns>[^/]+)(?P<rest>(?:/[^/]+)*))?/?", re.IGNORECASE)


class ArmHandler(Handler):
    server: Any  # wire.Server whose peer is ArmPeer

    def route(self) -> None:
        peer: ArmPeer = self.server.peer
        url = urlsplit(self.path)
        body = self.body()
        parts = url.path.strip("/").split("/")
        if url.path.startswith("/_peer/"):
            from tests.peers.azure.control import control
            return self.send(control(peer, self.command, url.path,
                                     dict(parse_qsl(url.query, keep_blank_values=True)), body))
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self.send(entra.openid_configuration(peer.state.arm_endpoint, parts[0]))
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"] and self.command == "POST":
            return self.send(entra.token(peer.state, parts[0], body))
        self.send(peer.arm(self.command, url.path, dict(parse_qsl(url.query)), self.headers, body))


class ArmPeer:
    def __init__(self, state: PeerState, storage: Any, kinds: list[Kind]):
        self.state, self.storage = state, storage
        self.kinds = {k.type_name.lower(): k for k in kinds}

    def arm(self, method: str, path: str, query: dict[str, str], headers: Any,
            body: bytes) -> Reply:
        request_id = str(uuid.uuid4())
        write = method not in ("GET", "HEAD")
        with self.state.lock:
            if write:
                self.state.writes_used += 1
                remaining = ("x-ms-ratelimit-remaining-subscription-writes",
                             str(max(0, WRITE_LIMIT - self.state.writes_used)))
            else:
                self.state.reads_used += 1
                remaining = ("x-ms-ratelimit-remaining-subscription-reads",
                             str(max(0, READ_LIMIT - self.state.reads_used)))
        status, out, data = self._arm(method, path, query, headers, body)
        return status, [*out, remaining, ("x-ms-request-id", request_id),
                        ("x-ms-correlation-request-id", headers.get(
                            "x-ms-correlation-request-id", request_id))], data

    def _arm(self, method: str, path: str, query: dict[str, str], headers: Any,
             body: bytes) -> Reply:
        write = method not in ("GET", "HEAD")
        principal = self._principal(headers)
        if isinstance(principal, tuple):
            return principal
        m = PATH.fullmatch(path)
        operation = self._operation_name(method, m)
        retry_after = self.state.faults.arm_throttle(method, operation)
        self.state.count_arm(operation, throttled=retry_after is not None)
        if retry_after is not None:
            kind = "write" if method != "GET" else "read"
            return json_reply(429, {"error": {
                "code": "SubscriptionRequestsThrottled",
                "message": f"Number of '{kind}' requests for subscription '{SUBSCRIPTION_ID}' "
                           f"actioned by tenant exceeded. Please try again after "
                           f"'{retry_after}' seconds after additional tickets become "
                           "available. Refer to https://aka.ms/arm-throttling for additional "
                           "information."}}, [("Retry-After", str(retry_after))])
        try:
            if m is None:
                raise ArmError(404, "InvalidRequestUri", f"The request URI '{path}' is not valid.")
            if "api-version" not in query:
                raise ArmError(400, "MissingApiVersionParameter", "The api-version query "
                               "parameter (?api-version=) is required for all requests.")
            if m["sub"].lower() != SUBSCRIPTION_ID:
                raise ArmError(404, "SubscriptionNotFound",
                               f"The subscription '{m['sub']}' could not be found.")
            self.state.settle()
            if write and not principal.can_write:
                raise self._forbidden(principal, method, m)
            payload = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise invalid("The request content is not a JSON object.")
            return self._dispatch(method, m, query, payload, principal)
        except ArmError as e:
            return e.reply()
        except json.JSONDecodeError as e:
            return ArmError(400, "InvalidRequestContent",
                            f"The request content was invalid and could not be deserialized: {e}"
                            ).reply()
        except Exception as e:  # noqa: BLE001 - a peer bug: say so in ARM's words, and in the log
            traceback.print_exc()
            return ArmError(500, "InternalServerError", f"peer: {type(e).__name__}: {e}").reply()

    def _principal(self, headers: Any) -> Principal | Reply:
        auth = headers.get("Authorization", "")
        principal = self.state.principal(auth[7:]) if auth.startswith("Bearer ") else None
        if principal is not None:
            return principal
        code = "AuthenticationFailed" if not auth else "InvalidAuthenticationToken"
        challenge = (f'Bearer authorization_uri="{self.state.arm_endpoint}/'
                     f'{entra.TENANT_ID}", error="invalid_token", '
                     'error_description="The authentication failed because of missing '
                     "'Authorization' header.\"")
        return json_reply(401, {"error": {"code": code, "message":
                          "Authentication failed. The 'Authorization' header is missing or its "
                          "token is not valid."}}, [("WWW-Authenticate", challenge)])

    def _operation_name(self, method: str, m: re.Match | None) -> str:
        if m is None or not m["ns"]:
            return f"resourceGroups.{method.lower()}" if m and m["group"] else method.lower()
        segments = [s for s in (m["rest"] or "").split("/") if s]
        if segments[:1] and segments[0].lower() == "locations":
            return "operations.get"
        types, names, action = self._split(m["ns"], segments)
        verb = action or ("list" if len(names) < len(types) else
                          {"GET": "get", "PUT": "put", "PATCH": "patch", "DELETE": "delete"}
                          .get(method, method.lower()))
        return f"{types[-1] if types else m['ns']}.{verb}"

    def _split(self, namespace: str, segments: list[str]) -> tuple[list[str], list[str], str]:
        """Types, names and action of the segments after /providers/{ns}, with type names
        in their canonical casing when the type is known."""
        types, names = segments[0::2], segments[1::2]
        action = ""
        full = namespace
        canon: list[str] = []
        for t in types:
            full += "/" + t
            kind = self.kinds.get(full.lower())
            canon.append(kind.type_name.rsplit("/", 1)[-1] if kind else t)
        if len(types) >= 2 and len(types) == len(names) + 1 and full.lower() not in self.kinds:
            action = canon.pop()  # .../disks/{name}/beginGetAccess
            types = types[:-1]
        return canon, names, action

    def _forbidden(self, principal: Principal, method: str, m: re.Match) -> ArmError:
        segments = [s for s in (m["rest"] or "").split("/") if s]
        types, _, action = self._split(m["ns"] or "", segments) if m["ns"] else ([], [], "")
        verb = f"{action}/action" if action else ("delete" if method == "DELETE" else "write")
        what = "/".join([m["ns"] or "Microsoft.Resources", *(types or ["resourceGroups"]), verb])
        scope = m.group(0).rstrip("/")
        return ArmError(403, "AuthorizationFailed",
                        f"The client '{principal.client_id}' with object id "
                        f"'{principal.object_id}' does not have authorization to perform action "
                        f"'{what}' over scope '{scope}' or the scope is invalid. If access was "
                        "recently granted, please refresh your credentials.")

    def _dispatch(self, method: str, m: re.Match, query: dict[str, str],
                  body: dict[str, Any], principal: Principal) -> Reply:
        group = m["group"]
        if group is not None:
            canon = next((g for g in RESOURCE_GROUPS if g.lower() == group.lower()), None)
            if canon is None:
                raise ArmError(404, "ResourceGroupNotFound",
                               f"Resource group '{group}' could not be found.")
            group = canon
        if not m["ns"]:
            if group is None:
                return json_reply(200, {"id": f"/subscriptions/{SUBSCRIPTION_ID}",
                                        "subscriptionId": SUBSCRIPTION_ID,
                                        "displayName": "Hybrid DR peer", "state": "Enabled"})
            return json_reply(200, {"id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}",
                                    "name": group, "type": "Microsoft.Resources/resourceGroups",
                                    "location": LOCATION,
                                    "properties": {"provisioningState": "Succeeded"}})
        segments = [s for s in (m["rest"] or "").split("/") if s]
        if group is None and segments[:1] and segments[0].lower() == "locations":
            return self._operation_status(m["ns"], segments, query)
        types, names, action = self._split(m["ns"], segments)
        kind = self.kinds.get("/".join([m["ns"], *types]).lower())
        if kind is None or not types:
            raise ArmError(400, "InvalidResourceType", f"The resource type '{'/'.join(types)}' "
                           f"could not be found in the namespace '{m['ns']}' for api version "
                           f"'{query['api-version']}'.")
        ns = kind.type_name.split("/", 1)[0]
        ref = Ref(SUBSCRIPTION_ID, group, ns, types, names, action)
        ctx = Context(self.state, ref, method, query, body, principal)
        if ref.is_collection:
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a collection.")
            return json_reply(200, {"value": self._list(ctx, kind)})
        if group is None:
            raise ArmError(404, "InvalidRequestUri", "A resource needs a resource group.")
        with self.state.lock:
            existing = self.state.resources.get(ref.id.lower())
            if len(types) > 1 and self.state.resources.get(ref.parent_id.lower()) is None:
                raise not_found(Ref(ref.subscription, group, ns, types[:-1], names[:-1]))
            if action:
                handler = kind.actions().get(f"{method} {action}")
                if handler is None:
                    raise ArmError(404, "InvalidRequestUri", f"No action '{action}' on {kind.type_name}.")
                if existing is None:
                    raise not_found(ref)
                return handler(ctx, existing)
            if method == "GET":
                if existing is None:
                    raise not_found(ref)
                return json_reply(200, kind.view(ctx, existing))
            if method == "PUT":
                resource = kind.create(ctx, existing)
                self.state.resources[ref.id.lower()] = resource
                return kind.put_reply(ctx, resource, kind.create_status[existing is not None])
            if method == "PATCH":
                if existing is None:
                    raise not_found(ref)
                if "tags" in body:
                    existing["tags"] = dict(body["tags"] or {})
                return kind.put_reply(ctx, existing, 200)
            if method == "DELETE":
                if existing is None:
                    return 204, [], b""
                kind.delete(ctx, existing)
                self.state.resources.pop(ref.id.lower(), None)
                return ctx.lro(202, None)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed here.")

    def _list(self, ctx: Context, kind: Kind) -> list[dict[str, Any]]:
        ref = ctx.ref
        if ref.group is None:
            prefix = f"/subscriptions/{ref.subscription}/".lower()
        elif len(ref.types) > 1:  # a child collection: ref.id is the parent's id
            prefix = f"{ref.id}/{ref.types[-1]}/".lower()
        else:
            prefix = f"/subscriptions/{ref.subscription}/resourcegroups/{ref.group}/".lower()
        with self.state.lock:
            found = [r for key, r in self.state.resources.items()
                     if key.startswith(prefix) and r["type"].lower() == kind.type_name.lower()]
            return [kind.view(ctx, r) for r in sorted(found, key=lambda r: r["id"].lower())]

    def _operation_status(self, namespace: str, segments: list[str],
                          query: dict[str, str]) -> Reply:
        # locations/{l}/operations/{id}
        if len(segments) != 4 or segments[2].lower() != "operations":
            raise ArmError(404, "InvalidRequestUri", "Unknown location resource.")
        with self.state.lock:
            op: Operation | None = self.state.operations.get(segments[3])
        if op is None:
            raise ArmError(404, "OperationNotFound", f"Operation '{segments[3]}' was not found.")
        if query.get("monitor") == "true":
            if not op.done:
                location = (f"{self.state.arm_endpoint}/subscriptions/{SUBSCRIPTION_ID}/"
                            f"providers/{namespace}/{'/'.join(segments)}?monitor=true&"
                            f"api-version={query.get('api-version', '')}")
                return 202, [("Location", location)], b""
            if op.error:
                return json_reply(400, {"error": op.error})
            return json_reply(200, op.result) if op.result is not None else (200, [], b"")
        status = "InProgress" if not op.done else "Failed" if op.error else "Succeeded"
        out: dict[str, Any] = {"name": op.id, "status": status,
                               "startTime": _iso(op.started)}
        if op.done:
            out["endTime"] = _iso(time.time())
            if op.result is not None:
                out["properties"] = {"output": op.result}
            if op.error:
                out["error"] = op.error
        return json_reply(200, out)


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1e6):06d}+00:00"
