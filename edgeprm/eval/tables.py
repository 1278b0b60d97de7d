"""Plain-text tables the evaluators print (numpy-free, torch-free)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def cell(value, digits: int = 1) -> str:
    """A number with `digits` decimals; '-' for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a table of text cells: the first column left-aligned, the others right-aligned."""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
            for row in [head, *body]]
