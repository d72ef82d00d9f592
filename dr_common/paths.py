"""Paths a node or the control plane may touch: only those inside configured roots.

Sources read images, repository targets write directories and restores write files at
paths that come from API requests; resolving them and checking them against the
operator's roots here, in one place, is what keeps a request from reaching
/etc/shadow through a symlink or `..`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dr_common.errors import InvalidArgument


def check_within_roots(path: str | os.PathLike, roots: list[str] | tuple[str, ...], *,
                       field: str) -> Path:
    """Resolves `path` and refuses it unless it lies inside one of `roots`.

    Resolving first means a symlink or `..` cannot step outside a root.
    """
    resolved = Path(path).resolve()
    for root in roots:
        if resolved.is_relative_to(Path(root).resolve()):
            return resolved
    allowed = ", ".join(str(r) for r in roots) or "(none configured)"
    raise InvalidArgument(
        f"{field} {path} is outside the configured roots ({allowed}); "
        f"use a path inside one of them or add a root to the configuration", field=field)
