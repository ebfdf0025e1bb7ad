"""Per-client limits of the demo server: an ASGI middleware in front of Gradio's routes.

Gradio's own limits are global (one queue of ``max_queue`` jobs, ``max_file_size`` per file), so one client could
fill the queue or the disk for everyone. This middleware counts, per client address, over a sliding window:

- *jobs*: POSTs that start work (``.../queue/join``, ``.../call/<api>``, ``.../run/<api>``), at most
  ``requests_per_minute`` per minute;
- *uploads*: POSTs to ``.../upload``, at most ``uploads_per_minute`` per minute and ``upload_mb_per_hour`` MB per
  hour (counted from ``Content-Length``, and from the bytes actually received when it is absent or lies);

and answers ``429 Too Many Requests`` (with ``Retry-After``) beyond them. Pages, static files, heartbeats and the
result streams are never limited. The client is the TCP peer, or the first ``X-Forwarded-For`` address when the
server runs behind a proxy that sets it (``trust_forwarded_for``, on by default on Hugging Face Spaces): without a
proxy that header is the client's own word and is ignored.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass

JOB_SUFFIXES = ("/queue/join",)
JOB_MARKERS = ("/call/", "/run/")
UPLOAD_SUFFIX = "/upload"


@dataclass
class LimitSettings:
    requests_per_minute: int = 30
    uploads_per_minute: int = 30
    upload_mb_per_hour: float = 500.0
    trust_forwarded_for: bool = False


class _Window:
    """Events ``(time, amount)`` of one client and kind over the last ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds, self.events, self.total = seconds, deque(), 0.0

    def expire(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - self.seconds:
            self.total -= self.events.popleft()[1]

    def retry_after(self, now: float) -> int:
        return max(1, int(self.events[0][0] + self.seconds - now) + 1) if self.events else 1


class ClientLimits:
    """ASGI middleware (see the module docstring). ``clock`` is injectable for tests."""

    def __init__(self, app, settings: LimitSettings | None = None, clock=time.monotonic):
        self.app, self.settings, self.clock = app, settings or LimitSettings(), clock
        self.lock = threading.Lock()
        self.windows: dict[tuple[str, str], _Window] = {}
        self.rejected = 0

    # ------------------------------------------------------------------------------------------- bookkeeping
    def _window(self, client: str, kind: str, seconds: float) -> _Window:
        window = self.windows.get((client, kind))
        if window is None:
            window = self.windows[(client, kind)] = _Window(seconds)
        return window

    def _admit(self, client: str, kind: str, seconds: float, limit: float, amount: float = 1.0) -> int | None:
        """Record ``amount`` for ``client`` unless it would exceed ``limit`` -> None, else seconds to wait."""
        now = self.clock()
        with self.lock:
            window = self._window(client, kind, seconds)
            window.expire(now)
            if window.total + amount > limit and window.events:
                return window.retry_after(now)
            window.events.append((now, amount))
            window.total += amount
            self._forget_idle(now)
        return None

    def _forget_idle(self, now: float) -> None:
        if len(self.windows) < 4096:  # the table stays small: idle clients are dropped
            return
        for key in [k for k, w in self.windows.items() if not w.events or w.events[-1][0] < now - w.seconds]:
            del self.windows[key]

    def client_of(self, scope) -> str:
        if self.settings.trust_forwarded_for:
            for name, value in scope.get("headers", []):
                if name == b"x-forwarded-for":
                    first = value.decode("latin-1").split(",")[0].strip()
                    if first:
                        return first
        client = scope.get("client")
        return client[0] if client else "unknown"

    # ------------------------------------------------------------------------------------------- ASGI
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        client = self.client_of(scope)
        s = self.settings
        if path.endswith(JOB_SUFFIXES) or any(m in path for m in JOB_MARKERS):
            wait = self._admit(client, "jobs", 60.0, s.requests_per_minute)
            if wait is not None:
                return await self._reject(send, f"more than {s.requests_per_minute} requests per minute", wait)
        elif path.endswith(UPLOAD_SUFFIX):
            wait = self._admit(client, "uploads", 60.0, s.uploads_per_minute)
            if wait is not None:
                return await self._reject(send, f"more than {s.uploads_per_minute} uploads per minute", wait)
            declared = _content_length(scope)
            budget = s.upload_mb_per_hour * 1e6
            wait = self._admit(client, "upload_bytes", 3600.0, budget, float(declared or 0))
            if wait is not None:
                return await self._reject(send, f"more than {s.upload_mb_per_hour:g} MB of uploads per hour", wait)
            return await self.app(scope, self._counting(receive, client, declared or 0, budget), send)
        return await self.app(scope, receive, send)

    def _counting(self, receive, client: str, declared: int, budget: float):
        """``receive`` that also counts body bytes beyond ``declared`` (chunked or lying clients): once the hourly
        budget is spent, the upload is cut off (the app sees a disconnect)."""
        state = {"received": 0, "counted": declared}

        async def counted():
            message = await receive()
            if message.get("type") == "http.request":
                state["received"] += len(message.get("body", b""))
                extra = state["received"] - state["counted"]
                if extra > 0:
                    state["counted"] = state["received"]
                    if self._admit(client, "upload_bytes", 3600.0, budget, float(extra)) is not None:
                        return {"type": "http.disconnect"}
            return message

        return counted

    async def _reject(self, send, why: str, retry_after: int) -> None:
        with self.lock:
            self.rejected += 1
        body = json.dumps({"error": f"Too many requests: {why} from your address; retry in {retry_after} s"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return None
    return None
