"""The parsed split list of a split-file benchmark (a leaf module, no torch): read by
``ltbench.data.splitfile`` and carried by ``ltbench.data.images``, neither of which the other needs for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SplitList:
    """A parsed split file: image paths (relative), labels, and the line each entry came from."""

    file: Path
    paths: list[str]
    labels: list[int]
    line_numbers: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def where(self, i: int) -> str:
        return f"{self.file}:{self.line_numbers[i]}"
