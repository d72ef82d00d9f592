"""Assembles the dr-control process: database, services, gRPC server, scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dr_common.proto.dr.v1 import (inventory_pb2, inventory_pb2_grpc, nodes_pb2,
                                   nodes_pb2_grpc, operations_pb2, operations_pb2_grpc,
                                   protection_pb2, protection_pb2_grpc, recovery_points_pb2,
                                   recovery_points_pb2_grpc, restore_pb2, restore_pb2_grpc)
from dr_common.errors import InvalidArgument
from dr_control.api import servicers
from dr_control.config import ControlConfig
from dr_control.db.engine import make_engine, migrate, sessionmaker
from dr_control.scheduler import Scheduler
from dr_control.services.context import ServiceContext
from dr_control.services.inventory import InventoryService
from dr_control.services.leasing import Leases
from dr_control.services.points import PointService
from dr_control.services.protection import ProtectionService
from dr_common.proto.dr.v1 import recovery_pb2, recovery_pb2_grpc
from dr_control.services.recovery import RecoveryService
from dr_common import tls
from dr_common.proto.dr.v1 import admin_pb2, admin_pb2_grpc
from dr_control.api.admin import Admin
from dr_control.api.auth import AuthInterceptor
from dr_control.services.tokens import BOOTSTRAP_HINT, TokenService

log = structlog.get_logger()

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in ((inventory_pb2, "InventoryService"),
                         (protection_pb2, "ProtectionService"),
                         (recovery_points_pb2, "RecoveryPointService"),
                         (restore_pb2, "RestoreService"),
                         (operations_pb2, "OperationsService"),
                         (nodes_pb2, "NodeService"),
                         (recovery_pb2, "RecoveryService"),
                         (admin_pb2, "AdminService")))


@dataclass
class Control:
    config: ControlConfig
    server: grpc.aio.Server
    port: int
    scheduler_task: asyncio.Task
    engine: object
    recovery: RecoveryService | None = None
    rest: object | None = None  # aiohttp AppRunner of the REST API and web UI

    async def stop(self, grace: float = 5.0) -> None:
        if self.rest is not None:
            await self.rest.cleanup()
        if self.recovery is not None:
            # Running executions stay "running" in the database; the replica that next
            # becomes the leader resumes them.
            await self.recovery.stop()
        self.scheduler_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.scheduler_task
        await self.server.stop(grace)
        await self.engine.dispose()


async def start(config: ControlConfig) -> Control:
    Path(config.state_dir).mkdir(parents=True, exist_ok=True)
    await migrate(config.db_url)
    engine = make_engine(config.db_url)
    ctx = ServiceContext(db=sessionmaker(engine), config=config)
    leases = Leases(ctx)
    points = PointService(ctx)

    tokens = TokenService(ctx.db)
    server = grpc.aio.server(interceptors=[await _auth_interceptor(config, tokens)])
    admin_pb2_grpc.add_AdminServiceServicer_to_server(Admin(tokens), server)
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        servicers.Inventory(InventoryService(ctx)), server)
    protection_pb2_grpc.add_ProtectionServiceServicer_to_server(
        servicers.Protection(ProtectionService(ctx)), server)
    recovery_points_pb2_grpc.add_RecoveryPointServiceServicer_to_server(
        servicers.RecoveryPoints(points), server)
    restore_pb2_grpc.add_RestoreServiceServicer_to_server(servicers.Restore(points), server)
    operations_pb2_grpc.add_OperationsServiceServicer_to_server(
        servicers.Operations(points), server)
    nodes_pb2_grpc.add_NodeServiceServicer_to_server(servicers.Nodes(ctx, leases), server)
    recovery = RecoveryService(ctx)
    recovery_pb2_grpc.add_RecoveryServiceServicer_to_server(servicers.Recovery(recovery), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (*SERVICE_NAMES, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    port = _add_port(server, config)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    await server.start()
    scheduler_task = asyncio.create_task(
        Scheduler(ctx, leases, on_leadership=recovery.resume).run(), name="scheduler")
    log.info("dr-control started", listen=config.listen, port=port, database=_safe_url(
        config.db_url), tls=bool(config.tls_cert_file),
        client_certificates=bool(config.tls_client_ca_file), auth=config.auth.enabled)
    control = Control(config=config, server=server, port=port, scheduler_task=scheduler_task,
                      engine=engine, recovery=recovery)
    if config.rest_listen:
        control.rest = await _start_rest(config, ctx, leases, points, tokens, recovery)
    return control


async def _start_rest(config: ControlConfig, ctx: ServiceContext, leases: Leases,
                      points: PointService, tokens: TokenService, recovery: RecoveryService):
    """The REST/JSON API and web UI over servicers of the same services (dr_control.rest)."""
    from dr_control import rest
    by_service = {
        rest.INV: servicers.Inventory(InventoryService(ctx)),
        rest.PROT: servicers.Protection(ProtectionService(ctx)),
        rest.RP: servicers.RecoveryPoints(points), rest.RES: servicers.Restore(points),
        rest.OPS: servicers.Operations(points), rest.NODES: servicers.Nodes(ctx, leases),
        # The gRPC port's RecoveryService itself: it owns the running executions' tasks.
        rest.REC: servicers.Recovery(recovery)}
    runner = await rest.start(config.rest_listen, by_service,
                              tokens if config.auth.enabled else None)
    log.info("REST API and web UI started", rest_listen=config.rest_listen,
             port=rest.bound_port(runner))
    return runner


def _safe_url(url: str) -> str:
    """The database URL without its password (it may hold one)."""
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


def _add_port(server: grpc.aio.Server, config: ControlConfig) -> int:
    """Plaintext unless a certificate is configured (then TLS, mutual with a client CA)."""
    if not config.tls_cert_file and not config.tls_key_file:
        if config.tls_client_ca_file:
            raise InvalidArgument("tls_client_ca_file needs tls_cert_file and tls_key_file "
                                  "(dr-control's own certificate)", field="tls_cert_file")
        return server.add_insecure_port(config.listen)
    if not (config.tls_cert_file and config.tls_key_file):
        raise InvalidArgument("tls_cert_file and tls_key_file go together; set both",
                              field="tls_cert_file")
    return server.add_secure_port(config.listen, tls.server_credentials(
        config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file))


async def _auth_interceptor(config: ControlConfig, tokens: TokenService) -> AuthInterceptor:
    if config.auth.enabled and not await tokens.any_active():
        log.warning(f"auth is enabled but no API token exists: every API call is refused; "
                    f"{BOOTSTRAP_HINT}")
    if config.auth.enabled and not config.tls_client_ca_file:
        log.warning("auth is enabled without client certificates (tls_client_ca_file): "
                    "NodeService, the nodes' API, is not authenticated")
    return AuthInterceptor(tokens if config.auth.enabled else None,
                           tls=bool(config.tls_client_ca_file))
