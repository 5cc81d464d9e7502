"""Plain-text and Markdown tables for the analysis CLIs (no dependency beyond the stdlib)."""
from __future__ import annotations

from typing import Mapping, Sequence


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str], markdown: bool = False) -> str:
    """Render ``rows`` (dicts) with the given ``columns``, aligned; Markdown pipes if asked."""
    cells = [[_cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values):
        padded = [v.ljust(w) for v, w in zip(values, widths)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    out = [line(columns)]
    if markdown:
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)
