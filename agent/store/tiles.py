"""Which tiles of a stored frame row are damaged, without the model card at hand.

The classifier decided each tile at its model card's threshold and stored the count
(``damaged_tiles``) with the per-tile probabilities (``tile_grid``). The decision is monotonic
in p(damaged) for either output convention of a card (p_damaged >= threshold, or
1 - p_damaged < threshold), so the damaged tiles are exactly the ``damaged_tiles`` most
probable ones: the rows' consumers (MQTT, BigQuery) read the card's decision back from the row
itself, the decision of the model that classified the frame even after a model upgrade. Only
tiles whose probabilities tie in the stored 5 decimals at the threshold could be told apart
wrongly; ties are broken in grid order.
"""

from __future__ import annotations

import math
from typing import Any


def damaged_cells(row: dict[str, Any]) -> list[tuple[int, int, float]]:
    """(row, col, p_damaged) of each damaged tile of a frame row, in grid order."""
    grid, count = row.get("tile_grid"), row.get("damaged_tiles")
    if not isinstance(grid, list) or not count:
        return []
    cells = [
        (r, c, float(p))
        for r, ps in enumerate(grid)
        for c, p in enumerate(ps)
        if isinstance(p, (int, float)) and math.isfinite(p)
    ]
    top = sorted(cells, key=lambda cell: -cell[2])[: int(count)]  # sorted() is stable
    return sorted(top)
