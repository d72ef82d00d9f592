"""Plain aligned text for people: column tables and key/value blocks.

Deliberately tiny (no dependency): left-aligned text, right-aligned numbers, two
spaces between columns, no borders, so output stays greppable and `cut`-able.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_GAP = "  "


def _cell(value: object) -> str:
    # A newline inside a cell (a description, an error message) would break the row.
    text = "-" if value is None else str(value)
    return text.replace("\r", " ").replace("\n", " ")


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[str] = (),
) -> str:
    """Columns padded to their widest cell; `right` names the columns to right-align."""
    header_cells = [str(h) for h in headers]
    body = [[_cell(c) for c in row] for row in rows]
    for row in body:
        if len(row) != len(header_cells):
            raise ValueError(f"row has {len(row)} cells, table has {len(header_cells)} columns")
    right_set = set(right)
    unknown = right_set - set(header_cells)
    if unknown:
        raise ValueError(f"unknown columns to right-align: {sorted(unknown)}")
    widths = [max(len(r[i]) for r in [header_cells, *body]) for i in range(len(header_cells))]
    lines = []
    for row in [header_cells, *body]:
        cells = [
            c.rjust(w) if h in right_set else c.ljust(w)
            for c, w, h in zip(row, widths, header_cells)
        ]
        lines.append(_GAP.join(cells).rstrip())
    return "\n".join(lines)


def format_fields(pairs: Iterable[tuple[str, object]]) -> str:
    """"key:  value" lines with the values aligned: one resource's details."""
    items = [(f"{k}:", _cell(v)) for k, v in pairs]
    if not items:
        return ""
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.ljust(width)}{_GAP}{v}".rstrip() for k, v in items)
