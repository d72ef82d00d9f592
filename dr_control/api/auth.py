"""Who may call what on dr-control's gRPC port.

Three kinds of caller:
- anyone: gRPC health and reflection (load balancers and grpcurl need them);
- nodes: NodeService's node methods. With TLS on, the transport already demanded a
  client certificate from our CA; here a node may only act as the node its certificate
  names (CN = node id, or a prefix of ids: ID-...). With TLS off (the embedded demo) nodes are not authenticated.
- operators: every other method, with `authorization: Bearer <token>` metadata when
  `auth.enabled`; the token's role must reach the method's role (`required_role`).

The token check runs in the interceptor (before the servicer), so a refused call never
reaches the service layer. Messages never contain the presented secret.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import structlog

from dr_common.errors import DRError, PermissionDenied, Unauthenticated
from dr_control.services.tokens import BOOTSTRAP_HINT, ROLES, TokenService, role_allows

log = structlog.get_logger()

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")
NODE_SERVICE = "dr.v1.NodeService"
ADMIN_SERVICE = "dr.v1.AdminService"  # tokens: even listing them is for admins
NODE_METHODS = frozenset({"RegisterNode", "Heartbeat", "AcquireTask", "ReportProgress",
                          "CompleteTask"})
# Day-to-day operations that change no configuration; everything that is not a read
# or one of these (create/update/delete of sites, plans, recovery plans, tokens) is admin.
OPERATOR_METHODS = frozenset({"RunPlan", "PausePlan", "ResumePlan", "RefreshSite",
                              "RestoreDisk", "VerifyRecoveryPoint", "StartRecovery",
                              "CleanupExecution", "CancelExecution", "RefreshExecution",
                              "CancelOperation",
                              "DrainNode", "UndrainNode"})
READ_PREFIXES = ("Get", "List", "Forecast")
OPEN, NODE = "open", "node"
BEARER = "bearer "


def rule_for(method: str) -> str:
    """OPEN, NODE, or the role a full method name ("/dr.v1.X/Y") needs."""
    service, _, name = method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return OPEN
    if service == NODE_SERVICE and name in NODE_METHODS:
        return NODE
    if service == ADMIN_SERVICE:
        return "admin"
    if name.startswith(READ_PREFIXES):
        return "viewer"
    if name in OPERATOR_METHODS:
        return "operator"
    return "admin"


def bearer_secret(metadata) -> str:
    """The token from `authorization: Bearer <token>`; Unauthenticated when absent."""
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise Unauthenticated("this call needs an API token: pass drctl --token-file FILE or "
                              "set DRCTL_TOKEN (gRPC metadata 'authorization: Bearer "
                              f"<token>'); {BOOTSTRAP_HINT}")
    value = values[0] if isinstance(values[0], str) else values[0].decode(errors="replace")
    if not value.lower().startswith(BEARER) or not value[len(BEARER):].strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
    return value[len(BEARER):].strip()


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenService | None, *, tls: bool):
        # tokens None: auth is off and operator methods are open (the embedded demo).
        self.tokens = tokens
        self.tls = tls

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        rule = rule_for(details.method)
        handler = await continuation(details)
        if handler is None or rule == OPEN:
            return handler
        if rule == NODE:
            return _guard(handler, _node_identity) if self.tls else handler
        if self.tokens is None:
            return handler
        try:
            await self._authorize(details, rule)
        except DRError as exc:
            return _refuse(handler, exc)
        return handler

    async def _authorize(self, details: grpc.HandlerCallDetails, needed: str) -> None:
        token = await self.tokens.authenticate(bearer_secret(details.invocation_metadata))
        if not role_allows(token.role, needed):
            method = details.method.lstrip("/").removeprefix("dr.v1.")
            raise PermissionDenied(
                f"{method} needs the {needed} role (or {_higher(needed)}); the API token "
                f"{token.name!r} has the {token.role} role; ask an admin for a token with "
                f"the {needed} role")


def _higher(role: str) -> str:
    return " or ".join(ROLES[ROLES.index(role) + 1:]) or "none higher"


def _node_identity(request, context: grpc.aio.ServicerContext) -> None:
    """A node's certificate names the node; it may not register or poll as another."""
    cns = context.auth_context().get("x509_common_name") or []
    cn = cns[0].decode() if cns else ""
    claimed = getattr(request, "node_id", "") or getattr(request, "node", "")
    claimed = claimed.removeprefix("nodes/")
    if not cn:
        raise Unauthenticated("NodeService needs a node's client certificate; "
                              "make one with `drctl certs node ID --dir DIR`")
    # A certificate for ID also serves nodes named ID-...: the pods of one Deployment
    # share a certificate and differ by suffix.
    if claimed and claimed != cn and not claimed.startswith(cn + "-"):
        raise PermissionDenied(f"this client certificate is for node {cn!r}, not {claimed!r}; "
                               f"set the node's node_id to {cn!r} or issue it a certificate "
                               "with `drctl certs node ID --dir DIR`")


def _status(exc: DRError) -> grpc.StatusCode:
    if isinstance(exc, PermissionDenied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    return grpc.StatusCode.INTERNAL


def _refuse(handler: grpc.RpcMethodHandler, exc: DRError) -> grpc.RpcMethodHandler:
    async def abort(request, context):
        await context.abort(_status(exc), exc.message)
    return _replace(handler, lambda _behavior: abort)


def _guard(handler: grpc.RpcMethodHandler,
           check: Callable[[object, grpc.aio.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """Runs `check(request, context)` before the method (it sees the request)."""
    def wrap(behavior: Callable[..., Awaitable]):
        async def guarded(request, context):
            try:
                check(request, context)
            except DRError as exc:
                log.warning("node call refused", reason=exc.reason, peer=context.peer(),
                            error=exc.message)
                await context.abort(_status(exc), exc.message)
            return await behavior(request, context)
        return guarded
    return _replace(handler, wrap)


def _replace(handler: grpc.RpcMethodHandler, wrap) -> grpc.RpcMethodHandler:
    """The same handler with its behavior wrapped. Every dr.v1 method is unary-unary;
    a streaming one would need its own wrapper, so fail loudly rather than pass it."""
    if handler.unary_unary is None:
        raise TypeError("only unary-unary methods can be guarded; extend _replace")
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
