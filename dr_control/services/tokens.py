"""API tokens: bearer secrets with a role (admin, operator, viewer) for the operator API.

A token's secret is 32 random bytes (urlsafe base64, prefixed so secret scanners can
spot a leaked one); the database keeps only its SHA-256, so a copy of the database
does not let anyone in. The secret is returned once, by `create`, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select

from dr_common.errors import InvalidArgument, NotFound, Unauthenticated
from dr_control.db.models import ApiToken, utcnow

ROLES = ("viewer", "operator", "admin")  # each role may do what the ones before it may
SECRET_PREFIX = "hdr_"
NAME_PREFIX = "apiTokens/"
# last_used_time is a hint for people cleaning up tokens, not an audit log: writing it
# on every call would make every read a database write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
BOOTSTRAP_HINT = ("an admin makes tokens with `drctl token create` or, on the control "
                  "plane's host, `dr-control token create --name NAME --role admin`")


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidArgument(f"role {role!r} is not one of {', '.join(ROLES)}", field="role")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_name(token_id: str) -> str:
    return NAME_PREFIX + token_id


class TokenService:
    def __init__(self, db):
        self.db = db

    async def create(self, display_name: str, role: str) -> tuple[ApiToken, str]:
        """A new token and its secret (the only time the secret exists outside the caller)."""
        if not display_name.strip():
            raise InvalidArgument("a token needs a name saying who or what uses it",
                                  field="display_name")
        check_role(role)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(id=secrets.token_hex(6), name=display_name, role=role,
                         secret_sha256=digest(secret), revoked=False)
        async with self.db.begin() as session:
            session.add(token)
        return token, secret

    async def list(self) -> list[ApiToken]:
        async with self.db() as session:
            return list((await session.scalars(
                select(ApiToken).order_by(ApiToken.create_time, ApiToken.id))).all())

    async def revoke(self, name: str) -> None:
        token_id = name.removeprefix(NAME_PREFIX)
        async with self.db.begin() as session:
            token = await session.get(ApiToken, token_id)
            if token is None:
                raise NotFound(f"API token {token_name(token_id)} does not exist; "
                               "`drctl token list` shows the tokens")
            token.revoked = True

    async def any_active(self) -> bool:
        async with self.db() as session:
            return (await session.scalar(
                select(ApiToken.id).where(ApiToken.revoked.is_(False)).limit(1))) is not None

    async def authenticate(self, secret: str) -> ApiToken:
        """The token whose secret this is; Unauthenticated (never echoing it) otherwise."""
        wanted = digest(secret)
        async with self.db.begin() as session:
            token = await session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == wanted))
            # The lookup is by hash, so its timing says nothing about the secret; the
            # constant-time comparison keeps it so should the lookup ever change.
            if token is None or not hmac.compare_digest(token.secret_sha256, wanted):
                raise Unauthenticated(f"the API token is not known to dr-control; {BOOTSTRAP_HINT}")
            if token.revoked:
                raise Unauthenticated(f"the API token {token_name(token.id)} ({token.name}) "
                                      f"was revoked; {BOOTSTRAP_HINT}")
            now = utcnow()
            if token.last_used_time is None or now - token.last_used_time > LAST_USED_RESOLUTION:
                token.last_used_time = now
        return token
