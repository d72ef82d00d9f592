"""Azure Blob test helpers: settings for the product's clients on Azurite (directly, or
through the Azure peer's Storage front, which adds faults and Azure's own error codes:
tests/peers/azure/storage.py), and new containers."""

from __future__ import annotations

import uuid
from typing import Any

from dr_common.azure import AzureSettings
from tests.peers.azure.azurite import ACCOUNT_KEY


def azurite_settings(endpoint: str, **overrides: Any) -> AzureSettings:
    """The site's AzureSettings for the development account at `endpoint`
    (`http://127.0.0.1:PORT/devstoreaccount1`), its key unless overridden."""
    values: dict[str, Any] = {"subscription_id": "00000000-0000-0000-0000-000000000000",
                              "resource_groups": ("dr-test",), "storage_account_url": endpoint,
                              "storage_account_key": ACCOUNT_KEY}
    values.update(overrides)
    return AzureSettings(**values)


def new_container(connection_string: str) -> str:
    """The name of a new, empty container of the development account."""
    from azure.storage.blob import BlobServiceClient
    name = f"dr-test-{uuid.uuid4().hex[:12]}"
    with BlobServiceClient.from_connection_string(connection_string) as svc:
        svc.create_container(name)
    return name
