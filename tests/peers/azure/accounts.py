"""Who and where the peer's Azure is: the Entra ID tenant and its two service principals,
the subscription and its pre-seeded resource groups. Standard library only: the tests'
client imports these too. None of these is a secret; they exist only in the peer."""

from __future__ import annotations

from dataclasses import dataclass

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000001"
RESOURCE_GROUPS = ("dr-source", "dr-recovery")
LOCATION = "westeurope"


@dataclass(frozen=True)
class Principal:
    client_id: str
    client_secret: str
    object_id: str
    can_write: bool  # Contributor on the subscription; otherwise Reader


OPERATOR = Principal("1b0e7c4e-3c1d-4f59-9f07-6a9d2f1e0a01", "peer-operator-secret~0",
                     "5d6e7f80-0000-4000-8000-00000000a001", can_write=True)
READER = Principal("1b0e7c4e-3c1d-4f59-9f07-6a9d2f1e0a02", "peer-reader-secret~0",
                   "5d6e7f80-0000-4000-8000-00000000a002", can_write=False)
PRINCIPALS = {p.client_id: p for p in (OPERATOR, READER)}
