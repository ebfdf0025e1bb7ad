"""Deletes the files a demo's visitors uploaded (and other per-request files Gradio cached) ``ttl_s`` after they were
written, so a long-running server's disk does not fill up.

Gradio's own ``Blocks(delete_cache=...)`` does this in a background task that iterates the live set of uploaded
paths while uploads add to it; under concurrent uploads that raises "Set changed size during iteration", the task
ends silently and nothing is deleted again (measured: 250 files left of 1,000 uploads; bench/README.md). Here a
daemon thread works on a snapshot of each set (``list(set)`` runs under the GIL without interleaving), skips the
files Gradio keeps for the page itself (examples, default values), and removes emptied cache folders.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class UploadJanitor:
    """``start()`` a daemon thread that calls :meth:`sweep` every ``period_s`` seconds.

    Args:
        blocks: the launched ``gr.Blocks`` (its ``temp_file_sets`` and components' ``keep_in_cache``).
        ttl_s: age (seconds since the file's last status change) after which a file is deleted.
    """

    def __init__(self, blocks, ttl_s: float, period_s: float | None = None):
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.blocks, self.ttl_s = blocks, float(ttl_s)
        self.period_s = float(period_s) if period_s else max(1.0, min(60.0, ttl_s / 2))
        self.deleted = 0
        self._stop = threading.Event()

    def start(self) -> UploadJanitor:
        threading.Thread(target=self._run, name="upload-janitor", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the janitor must outlive any one bad file
                logger.exception("upload janitor: sweep failed (will retry)")

    def sweep(self, now: float | None = None) -> int:
        """Delete the files older than ``ttl_s`` -> how many were deleted."""
        now = time.time() if now is None else now
        keep: set[str] = set()
        for component in list(self.blocks.blocks.values()):
            keep.update(getattr(component, "keep_in_cache", ()))
        deleted = 0
        for file_set in list(self.blocks.temp_file_sets):
            for name in list(file_set):
                if name in keep:
                    continue
                path = Path(name)
                try:
                    if now - path.lstat().st_ctime <= self.ttl_s:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.warning("upload janitor: could not delete %s: %s", path, err)
                    continue
                file_set.discard(name)
                deleted += 1
                try:  # Gradio stores each file in a folder named by its hash: drop it once empty
                    os.rmdir(path.parent)
                except OSError:
                    pass
        self.deleted += deleted
        return deleted
