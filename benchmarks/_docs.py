"""Put a benchmark's figures into a markdown file, between markers named after it."""

from __future__ import annotations

import statistics
from pathlib import Path


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the block between ``<!-- name:begin -->`` and ``<!-- name:end -->``.

    The block is appended if the markers are not there yet; the rest of the file is kept.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc += "\n" + block + "\n"
    path.write_text(doc)


def publish(text: str, path: Path | None, name: str) -> None:
    """Print a benchmark's report, and put it in ``path``'s block ``name`` when given."""
    print(text)
    if path:
        write_block(path, name, text)


def device_suffix(device_type: str) -> str:
    """Suffix of a device's result files and doc blocks: CPU figures keep the historic
    names (no suffix), another device's go beside them (``_cuda``)."""
    return "" if device_type == "cpu" else f"_{device_type}"


def mean_sd(values: list[float], digits: int = 3) -> str:
    """``mean ± standard deviation`` of a benchmark's runs (± 0 for a single run)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"
