"""Enough Entra ID (Azure AD) for azure-identity's ClientSecretCredential, on the harness
ARM's TLS port.

What MSAL 1.39 (under azure-identity 1.27) calls, read from msal/authority.py and
oauth2cli/oauth2.py: with `authority="127.0.0.1:PORT"` azure-identity makes the authority
`https://127.0.0.1:PORT/<tenant>`; `disable_instance_discovery=True` makes MSAL skip the
instance-discovery call to login.microsoftonline.com and go straight to
  GET  /<tenant>/v2.0/.well-known/openid-configuration   (needs authorization_endpoint and
       token_endpoint; the tenant is read back from token_endpoint's first path segment)
  POST /<tenant>/oauth2/v2.0/token   form: grant_type=client_credentials, client_id,
       client_secret, scope ("<arm endpoint>/.default"), client_info=1
MSAL's HTTP goes through azure-identity's MsalClient, an azure-core pipeline built from the
credential's keyword arguments: `connection_verify=<ca file>` reaches the requests
transport, which is how the peer's self-signed CA is trusted for these calls too.
Errors are Entra's JSON: `error`, `error_description` starting with the AADSTS code,
`error_codes`, trace and correlation ids."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from tests.peers.azure.accounts import PRINCIPALS, TENANT_ID
from tests.peers.azure.state import PeerState
from tests.peers.azure.wire import Reply, json_reply

TOKEN_LIFETIME = 3599  # seconds, what Entra gives a client-credentials token


def openid_configuration(base: str, tenant: str) -> Reply:
    if tenant != TENANT_ID:
        return _error(400, "invalid_tenant", 90002,
                      f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                      "tenant ID and are signing into the correct cloud.")
    root = f"{base}/{tenant}"
    return json_reply(200, {
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                  "client_secret_basic"],
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{root}/v2.0",
        "request_uri_parameter_supported": False,
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
        "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    })


def token(state: PeerState, tenant: str, body: bytes) -> Reply:
    form = dict(parse_qsl(body.decode()))
    if tenant != TENANT_ID:
        return _error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
    if form.get("grant_type") != "client_credentials":
        return _error(400, "unsupported_grant_type", 70003,
                      "The app requested an unsupported grant type "
                      f"'{form.get('grant_type')}'.")
    principal = PRINCIPALS.get(form.get("client_id", ""))
    if principal is None:
        return _error(400, "unauthorized_client", 700016,
                      f"Application with identifier '{form.get('client_id')}' was not found in "
                      f"the directory '{tenant}'.")
    if form.get("client_secret") != principal.client_secret:
        return _error(401, "invalid_client", 7000215,
                      "Invalid client secret provided. Ensure the secret being sent in the "
                      "request is the client secret value, not the client secret ID, for a "
                      f"secret added to app '{principal.client_id}'.")
    scopes = form.get("scope", "").split()
    if not scopes or not all(s.endswith("/.default") for s in scopes):
        return _error(400, "invalid_scope", 1002012,
                      f"The provided value for scope {form.get('scope')} is not valid. Client "
                      "credential flows must have a scope value with /.default suffixed to "
                      "the resource identifier (application ID URI).")
    access = state.issue_token(principal, TOKEN_LIFETIME)
    return json_reply(200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                            "ext_expires_in": TOKEN_LIFETIME, "access_token": access})


def _error(status: int, error: str, code: int, description: str) -> Reply:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    value: dict[str, Any] = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: "
                             f"{correlation} Timestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}"}
    return json_reply(status, value)
