"""Secrets at rest: site credentials encrypted with a key file (AES-256-GCM).

The control plane keeps cloud credentials a site needs (an AWS secret key) in its
database; they are stored only as `seal()`ed text, and opened when a task that needs
them is handed to a node. The key lives in a file of its own (0600, created on first
use), so a copy of the database alone discloses nothing. Each value gets a fresh
96-bit nonce; the associated data binds a sealed value to what it belongs to (a site's
name), so it cannot be moved to another record.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from dr_common.errors import DRError

KEY_BYTES = 32
NONCE_BYTES = 12
PREFIX = "v1:"


class SecretBox:
    def __init__(self, key: bytes):
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secret key is {KEY_BYTES} bytes")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, create: bool = True) -> SecretBox:
        p = Path(path)
        if not p.exists() and create:
            p.parent.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two replicas starting at once must not write two different keys.
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
        try:
            key = base64.b64decode(p.read_bytes().strip(), validate=True)
        except (OSError, ValueError) as e:
            raise DRError(f"cannot read the secret key file {p}: {e}",
                          reason="secret-key-unreadable") from None
        if len(key) != KEY_BYTES:
            raise DRError(f"the secret key file {p} does not hold a {KEY_BYTES}-byte key "
                          f"(base64)", reason="secret-key-unreadable")
        return cls(key)

    def seal(self, values: dict[str, str], *, bound_to: str) -> str:
        if not values:
            return ""
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead.encrypt(nonce, json.dumps(values).encode(), bound_to.encode())
        return PREFIX + base64.b64encode(nonce + ct).decode()

    def open(self, sealed: str, *, bound_to: str) -> dict[str, str]:
        if not sealed:
            return {}
        from cryptography.exceptions import InvalidTag
        try:
            if not sealed.startswith(PREFIX):
                raise ValueError("unknown format")
            raw = base64.b64decode(sealed[len(PREFIX):])
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound_to.encode())
        except (InvalidTag, ValueError):
            raise DRError(f"the stored credentials of {bound_to} cannot be decrypted: was the "
                          f"secret key file replaced? Set the credentials again",
                          reason="secret-undecryptable") from None
        return json.loads(plain)
