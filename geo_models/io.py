"""Small file helpers with no heavy dependencies, shared by the library, the training package and the scripts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic", "write_text_atomic"]


def _tmp_path(path: Path) -> Path:
    """A hidden temporary file next to ``path`` (same folder, so ``os.replace`` is an atomic rename)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` via a temporary file + rename, so readers never see a half-written file; returns the path."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON via a temporary file + rename, so readers (and resumed runs) never see a half-written file."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
