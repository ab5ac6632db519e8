"""IRN's pixel-pair geometry (misc/indexing.py `PathIndex`): which pairs of cells on the stride-4
grid are compared, and which cells lie on the straight path between them.

Every source cell is paired with the cells at the *search directions*: all offsets (dy, dx) with
dy > 0 or (dy == 0, dx > 0) and dy² + dx² < radius², i.e. half of the disc, so each unordered
pair appears once. A pair's path is the set of grid cells in the pair's bounding box whose
distance to the line through both ends is below one cell; the affinity of the pair is
1 - max(boundary score along its path). Sources are the cells whose every destination lies on
the grid: rows [0, H - r'), columns [r', W - r') with r' = radius - 1.

Directions are ordered as IRN orders its channels: grouped by path length (shortest first), in
generation order within a group, so the D pair channels line up with IRN's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def search_directions(radius: int) -> list[tuple[int, int]]:
    """The (dy, dx) offsets of one half-disc of `radius`, in IRN's generation order."""
    if radius < 2:
        raise ValueError(f"path radius must be >= 2, got {radius}")
    r = radius
    dirs = [(0, x) for x in range(1, r)]
    dirs += [(y, x) for y in range(1, r) for x in range(-r + 1, r) if x * x + y * y < r * r]
    return dirs


def path_cells(direction: tuple[int, int]) -> np.ndarray:
    """L x 2 cells (y, x) from the source (0, 0) to `direction` within one cell of the line;
    the destination comes first (it is the only cell of maximal |y| + |x| in the box)."""
    dy, dx = direction
    length_sq = dy * dy + dx * dx
    cells = [(y, x)
             for y in range(min(0, dy), max(0, dy) + 1)
             for x in range(min(0, dx), max(0, dx) + 1)
             if (dy * x - dx * y) ** 2 / length_sq < 1]
    cells.sort(key=lambda c: -abs(c[0]) - abs(c[1]))  # stable: ties keep the scan order
    return np.asarray(cells, np.int64)


@dataclass
class PathIndex:
    """Pairs and paths of `radius` on a grid of `size` (rows, cols) cells.

    Attributes (N = number of source cells, D = number of directions):
      directions    D x 2 (dy, dx), grouped by path length
      path_groups   per path length L: n_g x L x 2 cell offsets (destination first)
      path_indices  per path length L: n_g x L x N flat grid indices of the path cells
      src_indices   N flat indices of the source cells
      dst_indices   D x N flat indices of each source's destinations
    """

    radius: int
    size: tuple[int, int]
    directions: np.ndarray = field(init=False)
    path_groups: list[np.ndarray] = field(init=False)
    path_indices: list[np.ndarray] = field(init=False)
    src_indices: np.ndarray = field(init=False)
    dst_indices: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        margin = self.margin
        h, w = self.size
        if h - margin < 1 or w - 2 * margin < 1:
            raise ValueError(f"grid {self.size} is too small for path radius {self.radius} (needs more than "
                             f"{margin} rows and {2 * margin} columns)")
        by_length: dict[int, list[np.ndarray]] = {}
        for d in search_directions(self.radius):
            cells = path_cells(d)
            by_length.setdefault(len(cells), []).append(cells)
        self.path_groups = [np.stack(by_length[n]) for n in sorted(by_length)]
        self.directions = np.concatenate([g[:, 0] for g in self.path_groups])
        grid = np.arange(h * w, dtype=np.int64).reshape(h, w)
        rows, cols = h - margin, w - 2 * margin
        self.src_indices = grid[:rows, margin:margin + cols].reshape(-1)
        # A cell offset (dy, dx) from every source at once is one shifted window of the grid.
        self.path_indices = [
            np.stack([np.stack([grid[dy:dy + rows, margin + dx:margin + dx + cols].reshape(-1) for dy, dx in path])
                      for path in group])
            for group in self.path_groups
        ]
        self.dst_indices = np.concatenate([p[:, 0] for p in self.path_indices])

    @property
    def margin(self) -> int:
        """Cells a source keeps from the bottom and side borders (IRN's radius_floor)."""
        return int(math.ceil(self.radius) - 1)

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    @property
    def source_shape(self) -> tuple[int, int]:
        """(rows, cols) of the source window; sources are stored row-major in it."""
        return self.size[0] - self.margin, self.size[1] - 2 * self.margin
