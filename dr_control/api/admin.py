"""gRPC servicer of AdminService: API tokens (the interceptor lets only admins in)."""

from __future__ import annotations

from google.protobuf import empty_pb2

from dr_common.proto.dr.v1 import admin_pb2, admin_pb2_grpc
from dr_control.api import convert
from dr_control.api.errors import rpc
from dr_control.db.models import ApiToken
from dr_control.services.tokens import TokenService, token_name


def api_token(token: ApiToken) -> admin_pb2.ApiToken:
    return admin_pb2.ApiToken(name=token_name(token.id), display_name=token.name,
                              role=token.role, create_time=convert.ts(token.create_time),
                              last_used_time=convert.ts(token.last_used_time),
                              revoked=token.revoked)


class Admin(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, tokens: TokenService):
        self.tokens = tokens

    @rpc
    async def CreateApiToken(self, request, context):
        token, secret = await self.tokens.create(request.display_name, request.role)
        return admin_pb2.CreateApiTokenResponse(api_token=api_token(token), secret=secret)

    @rpc
    async def ListApiTokens(self, request, context):
        page, nxt = convert.paginate(await self.tokens.list(), request.page_size,
                                     request.page_token)
        return admin_pb2.ListApiTokensResponse(api_tokens=[api_token(t) for t in page],
                                               next_page_token=nxt)

    @rpc
    async def RevokeApiToken(self, request, context):
        await self.tokens.revoke(request.name)
        return empty_pb2.Empty()
