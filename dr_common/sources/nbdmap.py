"""From NBD block status to the engine's extents: the allocation map
(`base:allocation`) intersected with a dirty bitmap (`qemu:dirty-bitmap:NAME`), as
qemu-nbd and QEMU's own NBD server export them."""

from __future__ import annotations

from dr_common.sources.base import Extent

ALLOCATION = "base:allocation"
# base:allocation flags (NBD protocol): the extent reads as zeros.
_STATE_ZERO = 2
# qemu:dirty-bitmap flags: the extent was written since the bitmap was added.
_DIRTY = 1


def dirty_context(bitmap: str) -> str:
    return f"qemu:dirty-bitmap:{bitmap}"


def extents(nbd, dirty: str | None) -> list[Extent]:
    """Zero, clean and data extents covering the export, in order; with no dirty
    context (a full sync), no extent is clean. `nbd` is an NbdPool."""
    zero = [(s, n, bool(f & _STATE_ZERO)) for s, n, f in nbd.block_status(ALLOCATION)]
    if dirty is None:
        return [Extent(s, n, z) for s, n, z in zero]
    return _merge(zero, [(s, n, bool(f & _DIRTY)) for s, n, f in nbd.block_status(dirty)])


def all_dirty(nbd, dirty: str) -> bool:
    """Whether every granule of the export is dirty in context `dirty`."""
    return all(flags & _DIRTY for _, _, flags in nbd.block_status(dirty))


def _merge(zero: list[tuple[int, int, bool]], dirty: list[tuple[int, int, bool]]
           ) -> list[Extent]:
    """Intersects the allocation map with the dirty map. Zero extents say whether they
    changed too: a hole that was data at the previous point (a discard) is zero and
    dirty, and must not be mistaken for an unchanged one."""
    out: list[Extent] = []
    i = j = 0
    pos = 0
    while i < len(zero) and j < len(dirty):
        zs, zn, is_zero = zero[i]
        ds, dn, is_dirty = dirty[j]
        end = min(zs + zn, ds + dn)
        if end > pos:
            out.append(Extent(pos, end - pos, zero=is_zero, clean=not is_dirty))
            pos = end
        if zs + zn == end:
            i += 1
        if ds + dn == end:
            j += 1
    return out
