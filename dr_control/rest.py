"""The REST/JSON face of dr-control (aiohttp) and the web UI it serves at `/`.

Every route is one gRPC method: the request message is filled from the path, the query
(page_size, page_token) and the JSON body, then handed to the same servicer the gRPC
port uses, so validation, names and error mapping cannot drift apart. Responses are the
proto messages as JSON with the proto field names (json_format, as `drctl -o json`).

Auth: `Authorization: Bearer <token>` with the role that api.auth.rule_for gives the
gRPC method (one table for both faces). `ROUTES` is also the one source of the OpenAPI
document at /v1/openapi.json.
"""

from __future__ import annotations

import functools

import json
from dataclasses import dataclass
from importlib import resources

import structlog
from aiohttp import web
from google.protobuf import json_format, message_factory

from dr_common import errors, grpc_errors
from dr_common.proto.dr.v1 import (inventory_pb2, nodes_pb2, operations_pb2, protection_pb2,
                                   recovery_pb2, recovery_points_pb2, restore_pb2)
from dr_control.api import auth
from dr_control.services.tokens import TokenService, role_allows

log = structlog.get_logger()

# Canonical code -> HTTP status, as google.rpc.Code documents the mapping.
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404,
               "ALREADY_EXISTS": 409, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
               "UNAVAILABLE": 503, "INTERNAL": 500}
# A path segment: no "/" and no ":" (":run" and friends are custom methods, AIP-136).
SEGMENT = "[^/:]+"
UI_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript")}

_FILES = {module.DESCRIPTOR.services_by_name[name].full_name: module for module, name in (
    (inventory_pb2, "InventoryService"), (protection_pb2, "ProtectionService"),
    (recovery_points_pb2, "RecoveryPointService"), (restore_pb2, "RestoreService"),
    (operations_pb2, "OperationsService"), (nodes_pb2, "NodeService"),
    (recovery_pb2, "RecoveryService"))}


@dataclass(frozen=True)
class Route:
    method: str             # HTTP method
    path: str               # aiohttp path, {var} for one segment
    service: str            # gRPC service full name
    rpc: str                # gRPC method name
    # Request field -> template of its value from path variables ("plans/{plan}").
    fields: tuple[tuple[str, str], ...] = ()
    body: bool = False      # the JSON body fills the rest of the request message
    summary: str = ""

    @property
    def list(self) -> bool:
        return self.rpc.startswith("List")

    @property
    def role(self) -> str:
        return auth.rule_for(f"/{self.service}/{self.rpc}")

    def descriptor(self):
        module = _FILES[self.service]
        return module.DESCRIPTOR.services_by_name[self.service.rsplit(".", 1)[1]] \
            .methods_by_name[self.rpc]


INV, PROT, RP, RES, OPS, NODES, REC = (f"dr.v1.{s}" for s in (
    "InventoryService", "ProtectionService", "RecoveryPointService", "RestoreService",
    "OperationsService", "NodeService", "RecoveryService"))
PLAN = (("name", "plans/{plan}"),)
RPLAN = (("name", "recoveryPlans/{recovery_plan}"),)
EXECUTION = (("name", "recoveryPlans/{recovery_plan}/executions/{execution}"),)
# The path variables, in the order the OpenAPI document lists them.
PATH_VARS = ("plan", "point", "operation", "recovery_plan", "execution")
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/sites", INV, "ListSites", summary="List sites"),
    Route("GET", "/v1/plans", PROT, "ListPlans", summary="List protection plans"),
    Route("GET", "/v1/plans/{plan}", PROT, "GetPlan", PLAN, summary="Get a plan"),
    Route("GET", "/v1/plans/{plan}/status", PROT, "GetPlanStatus", PLAN,
          summary="A plan's status: RPO lag and whether it is met, the running cycle"),
    Route("GET", "/v1/plans/{plan}/cycles", PROT, "ListCycles",
          (("parent", "plans/{plan}"),), summary="List a plan's replication cycles"),
    Route("GET", "/v1/plans/{plan}/recoveryPoints", RP, "ListRecoveryPoints",
          (("parent", "plans/{plan}"),), summary="List a plan's recovery points"),
    Route("GET", "/v1/nodes", NODES, "ListNodes", summary="List nodes with their load"),
    Route("GET", "/v1/operations/{operation}", OPS, "GetOperation",
          (("name", "operations/{operation}"),), summary="Get a long-running operation"),
    Route("POST", "/v1/plans/{plan}:run", PROT, "RunPlan", PLAN,
          summary="Start a replication cycle now"),
    Route("POST", "/v1/plans/{plan}:pause", PROT, "PausePlan", PLAN, summary="Pause a plan"),
    Route("POST", "/v1/plans/{plan}:resume", PROT, "ResumePlan", PLAN,
          summary="Resume a paused plan"),
    Route("POST", "/v1/plans/{plan}/recoveryPoints/{point}:restore", RES, "RestoreDisk",
          (("recovery_point", "plans/{plan}/recoveryPoints/{point}"),), body=True,
          summary="Restore a disk of a recovery point (returns an operation)"),
    Route("GET", "/v1/recoveryPlans", REC, "ListRecoveryPlans", summary="List recovery plans"),
    Route("GET", "/v1/recoveryPlans/{recovery_plan}", REC, "GetRecoveryPlan", RPLAN,
          summary="Get a recovery plan"),
    # The body is the request message: {"recovery_plan_id": ..., "recovery_plan": {...}}.
    Route("POST", "/v1/recoveryPlans", REC, "CreateRecoveryPlan", body=True,
          summary="Create a recovery plan (body: recovery_plan_id and recovery_plan)"),
    Route("DELETE", "/v1/recoveryPlans/{recovery_plan}", REC, "DeleteRecoveryPlan", RPLAN,
          summary="Delete a recovery plan (refused while an execution of it runs)"),
    Route("POST", "/v1/recoveryPlans/{recovery_plan}:start", REC, "StartRecovery", RPLAN,
          body=True, summary="Start an execution (body: recovery_point, mode: test, "
                             "failover or migrate); poll it with GET"),
    Route("GET", "/v1/recoveryPlans/{recovery_plan}:forecast", REC, "ForecastRecoveryPlan",
          RPLAN, summary="A recovery plan's predicted RTO, its parts, the last measured RTO"),
    Route("GET", "/v1/recoveryPlans/{recovery_plan}/executions", REC, "ListExecutions",
          (("parent", "recoveryPlans/{recovery_plan}"),),
          summary="List a recovery plan's executions"),
    Route("GET", "/v1/recoveryPlans/{recovery_plan}/executions/{execution}", REC,
          "GetExecution", EXECUTION,
          summary="Get an execution: its state, events and per-workload results"),
    Route("POST", "/v1/recoveryPlans/{recovery_plan}/executions/{execution}:cancel", REC,
          "CancelExecution", EXECUTION,
          summary="Cancel a running execution (an ended one is returned as it is)"),
    Route("POST", "/v1/recoveryPlans/{recovery_plan}/executions/{execution}:cleanup", REC,
          "CleanupExecution", EXECUTION,
          summary="Delete what an ended execution created (runs in the background)"),
    Route("POST", "/v1/recoveryPlans/{recovery_plan}/executions/{execution}:refresh", REC,
          "RefreshExecution", EXECUTION,
          summary="Run an ended execution's validation checks again"),
)


class RestApi:
    """Route handlers over the gRPC servicers (`servicers` maps service name -> servicer)."""

    def __init__(self, servicers_by_service: dict[str, object], tokens: TokenService | None):
        self.servicers = servicers_by_service
        self.tokens = tokens  # None: auth is off

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors])
        for route in ROUTES:
            app.router.add_route(route.method, _aiohttp_path(route.path), self._handler(route))
        app.router.add_get("/v1/me", self.me)
        app.router.add_get("/v1/openapi.json", self.openapi)
        for path in UI_FILES:
            app.router.add_get(path, self.ui)
        return app

    async def _caller(self, request: web.Request, needed: str):
        """The caller's token (None with auth off); raises when it may not do `needed`."""
        if self.tokens is None:
            return None
        header = request.headers.get("Authorization")
        token = await self.tokens.authenticate(
            auth.bearer_secret([("authorization", header)] if header else []))
        if not role_allows(token.role, needed):
            raise errors.PermissionDenied(
                f"{request.method} {request.path} needs the {needed} role; the API token "
                f"{token.name!r} has the {token.role} role; ask an admin for a token with "
                f"the {needed} role")
        return token

    def _handler(self, route: Route):
        input_class = message_factory.GetMessageClass(route.descriptor().input_type)
        servicer = self.servicers[route.service]
        # The undecorated method: its DRError reaches us, not a gRPC abort.
        call = getattr(type(servicer), route.rpc).__wrapped__

        async def handle(request: web.Request) -> web.Response:
            await self._caller(request, route.role)
            msg = input_class()
            if route.body and request.can_read_body:
                try:
                    body = await request.json()
                except json.JSONDecodeError as exc:
                    raise errors.InvalidArgument(f"the request body is not JSON: {exc}",
                                                 field="body") from None
                _parse(body, msg)
            if route.list:
                _parse({k: request.query[k] for k in ("page_size", "page_token")
                        if k in request.query}, msg)
            for field, template in route.fields:
                setattr(msg, field, template.format(**request.match_info))
            reply = await call(servicer, msg, None)
            # Zero values too (rpo_met: false), so clients need not know proto3 defaults.
            return web.json_response(json_format.MessageToDict(
                reply, preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True))
        return handle

    async def me(self, request: web.Request) -> web.Response:
        token = await self._caller(request, "viewer")
        if token is None:
            return web.json_response({"role": "admin", "auth": False})
        return web.json_response({"role": token.role, "name": token.name, "auth": True})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def ui(self, request: web.Request) -> web.Response:
        name, content_type = UI_FILES[request.path]
        return web.Response(text=_ui_file(name), content_type=content_type,
                            headers={"Cache-Control": "no-store"})


@functools.cache
def _ui_file(name: str) -> str:
    """The UI's files, read once: they ship with the package and never change."""
    return resources.files("dr_control.ui").joinpath(name).read_text()


def _aiohttp_path(path: str) -> str:
    for var in PATH_VARS:
        path = path.replace("{%s}" % var, "{%s:%s}" % (var, SEGMENT))
    return path


def _parse(data, msg) -> None:
    try:
        json_format.ParseDict(data, msg)
    except json_format.ParseError as exc:
        raise errors.InvalidArgument(f"the request does not match {msg.DESCRIPTOR.name}: "
                                     f"{exc}", field="body") from None


def error_body(exc: errors.DRError) -> tuple[int, dict]:
    code = grpc_errors.status_code(exc).name
    error = {"code": code, "message": exc.message, "reason": exc.reason}
    if getattr(exc, "field", ""):
        error["field"] = exc.field
    return HTTP_STATUS.get(code, 500), {"error": error}


@web.middleware
async def _json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except errors.DRError as exc:
        status, body = error_body(exc)
        return web.json_response(body, status=status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(exc.status, "INTERNAL")
        return web.json_response({"error": {"code": code, "message":
                                            f"{request.method} {request.path}: {exc.reason}; "
                                            "GET /v1/openapi.json lists the routes"}},
                                 status=exc.status)
    except Exception:
        log.exception("unexpected error in REST handler", path=request.path)
        return web.json_response({"error": {"code": "INTERNAL", "message":
                                            "internal error; see dr-control's log"}},
                                 status=500)


def openapi_document() -> dict:
    """OpenAPI 3.0 for ROUTES (plus /v1/me); bodies are the proto messages as JSON."""
    error_ref = {"$ref": "#/components/responses/Error"}
    paths: dict[str, dict] = {}
    for route in ROUTES:
        params = [{"name": var, "in": "path", "required": True, "schema": {"type": "string"}}
                  for var in PATH_VARS if "{%s}" % var in route.path]
        if route.list:
            params += [{"name": "page_size", "in": "query", "schema": {"type": "integer"}},
                       {"name": "page_token", "in": "query", "schema": {"type": "string"}}]
        d = route.descriptor()
        op = {"operationId": route.rpc, "summary": route.summary,
              "description": f"gRPC {route.service}.{route.rpc}; needs the {route.role} role "
                             "when auth is enabled.",
              "parameters": params,
              "responses": {"200": {"description": d.output_type.full_name, "content": {
                  "application/json": {"schema": {"type": "object"}}}},
                  "400": error_ref, "401": error_ref, "403": error_ref, "404": error_ref}}
        if route.body:
            op["requestBody"] = {"required": False, "content": {"application/json": {
                "schema": {"type": "object", "description": d.input_type.full_name}}}}
        paths.setdefault(route.path, {})[route.method.lower()] = op
    paths["/v1/me"] = {"get": {"operationId": "GetCaller", "summary": "The caller's role",
                               "responses": {"200": {"description": "role, name, auth",
                                                     "content": {"application/json": {
                                                         "schema": {"type": "object"}}}},
                                             "401": error_ref}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Hybrid DR control plane", "version": "v1"},
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "reason": {"type": "string"}, "field": {"type": "string"}}}}}},
            "responses": {"Error": {"description": "google.rpc canonical error", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }


async def start(listen: str, servicers_by_service: dict[str, object],
                tokens: TokenService | None) -> web.AppRunner:
    """Serves the API and UI on `listen` (HOST:PORT); the runner's cleanup() stops it."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise errors.InvalidArgument(f"rest_listen {listen!r} is not HOST:PORT (\"\" "
                                     "disables the REST API)", field="rest_listen")
    runner = web.AppRunner(RestApi(servicers_by_service, tokens).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1] if runner.addresses else 0
