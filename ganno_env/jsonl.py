"""Append-only JSON-lines files: the benchmark's results and a training run's validation
scores. A kill can cut the last line short; readers skip it and writers start after it,
so a long run loses at most the line it was writing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line of the file (a line cut off by a kill is skipped); [] if none."""
    if not path.exists():
        return []
    rows = []
    with path.open() as f:
        for line in f:
            if not line.endswith("\n"):
                break  # the last line of an interrupted write
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def drop_partial_line(path: Path) -> None:
    """Cut a last line left unfinished by a kill, so new lines start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def append_lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Append whole lines and make them durable before the caller reports progress."""
    with path.open("a") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())
