"""Per-client limits of the demo server (apps/common/client_limits.py), the request bounds of the geolocate API,
one-line logs for user errors, and the per-request garbage collection that keeps the server's memory flat."""

import asyncio
import gc
import logging

import pytest

from apps.common.client_limits import ClientLimits, LimitSettings


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def call(middleware, path, *, client="1.2.3.4", headers=(), body=b"", method="POST"):
    """One request through ``middleware`` -> (status, headers dict, bytes the app received)."""
    received, sent = [], []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                received.append(None)
                break
            received.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware.app = app
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "client": (client, 5000),
             "headers": [(k.encode(), v.encode()) for k, v in headers]}  # fmt: skip
    asyncio.run(middleware(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, received


def test_jobs_per_minute_per_client():
    clock = Clock()
    limits = ClientLimits(None, LimitSettings(requests_per_minute=3), clock=clock)
    statuses = [call(limits, "/gradio_api/queue/join")[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    status, headers, _ = call(limits, "/gradio_api/call/geolocate")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 61
    assert call(limits, "/gradio_api/queue/join", client="5.6.7.8")[0] == 200  # another client is not affected
    assert call(limits, "/gradio_api/queue/data", method="GET")[0] == 200  # result streams are never limited
    assert call(limits, "/gradio_api/heartbeat/x")[0] == 200
    clock.now += 61
    assert call(limits, "/gradio_api/queue/join")[0] == 200  # the window slid


def test_upload_budget_counts_declared_and_received_bytes():
    clock = Clock()
    limits = ClientLimits(None, LimitSettings(uploads_per_minute=100, upload_mb_per_hour=0.01), clock=clock)
    body = b"x" * 6000
    assert call(limits, "/gradio_api/upload", headers=[("content-length", "6000")], body=body)[0] == 200
    assert call(limits, "/gradio_api/upload", headers=[("content-length", "6000")], body=body)[0] == 429
    clock.now += 3601
    # no Content-Length (chunked): the received bytes are counted; past the budget the app sees a disconnect
    status, _, received = call(limits, "/gradio_api/upload", body=b"y" * 30_000)
    assert received[-1] is None and sum(len(c) for c in received if c) <= 11_000


def test_forwarded_for_only_behind_a_trusted_proxy():
    spoofed = [("x-forwarded-for", "9.9.9.9, 10.0.0.1")]
    plain = ClientLimits(None, LimitSettings(requests_per_minute=1), clock=Clock())
    assert call(plain, "/gradio_api/queue/join", headers=spoofed)[0] == 200
    assert call(plain, "/gradio_api/queue/join", headers=[("x-forwarded-for", "8.8.8.8")])[0] == 429  # same peer
    proxied = ClientLimits(None, LimitSettings(requests_per_minute=1, trust_forwarded_for=True), clock=Clock())
    assert call(proxied, "/gradio_api/queue/join", headers=spoofed)[0] == 200
    assert call(proxied, "/gradio_api/queue/join", headers=[("x-forwarded-for", "8.8.8.8")])[0] == 200


@pytest.mark.parametrize(
    "field, value",
    [
        ("seed", 2**64),
        ("seed", -1),
        ("seed", 1.5),
        ("seed", float("nan")),
        ("seed", "7"),
        ("top_k", 2.5),
        ("top_k", 0),
        ("top_k", True),
        ("top_k", None),
        ("num_samples", 10**400),
        ("num_inference_steps", 1000),
        ("density_resolution_deg", 0.5),
        ("density_resolution_deg", 7.0),  # does not divide 180
        ("density_resolution_deg", float("inf")),
    ],
)
def test_geolocate_options_are_bounded(field, value):
    from apps.geolocate.inference import GeolocateOptions

    with pytest.raises(ValueError, match=field):
        GeolocateOptions(**{field: value}).checked()


def test_expensive_requests_are_capped():
    from apps.geolocate.inference import MAX_SAMPLE_STEPS, GeolocateOptions

    assert GeolocateOptions(num_samples=64, num_inference_steps=64).checked().num_samples == 64
    with pytest.raises(ValueError, match=f"num_samples x num_inference_steps must be <= {MAX_SAMPLE_STEPS}"):
        GeolocateOptions(num_samples=256, num_inference_steps=100).checked()


def test_user_errors_log_one_line_and_collect_garbage(caplog, monkeypatch):
    import gradio as gr

    from apps.common import ui

    collected = []
    monkeypatch.setattr(gc, "collect", lambda *a: collected.append(a) or 0)

    @ui.user_errors
    def handler(x):
        raise ValueError(f"seed must be a whole number, got {x}")

    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as err:
        handler(2**64)
    assert "seed must be a whole number" in err.value.message and not err.value.print_exception
    lines = [r for r in caplog.records if "user error" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None and "\n" not in lines[0].getMessage()
    assert collected, "the request's garbage is collected"


def test_gradio_prints_one_line_for_user_errors(caplog, capsys):
    import gradio as gr

    from apps.common.ui import _OneLineUserErrors

    shim = _OneLineUserErrors()

    def validate_inputs():  # named like Gradio's check of a raw API call's arguments
        raise ValueError("An event handler (locate_api) didn't receive enough input values (needed: 7, got: 3).\n...")

    with caplog.at_level(logging.INFO):
        for raiser in (lambda: (_ for _ in ()).throw(gr.Error("Value 1e20 is greater than maximum")), validate_inputs):
            try:
                raiser()
            except Exception:
                shim.print_exc()
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            shim.print_exc()
    assert [r.getMessage().count("\n") for r in caplog.records if "user error" in r.getMessage()] == [0, 0]
    assert "Traceback" in capsys.readouterr().err  # a real bug keeps its traceback


def test_upload_janitor_deletes_old_uploads_while_uploads_arrive(tmp_path):
    """Files older than the TTL go (with their hash folder), files Gradio keeps for the page stay, and a sweep
    racing with new uploads neither fails nor stops (Gradio's delete_cache task died on exactly that)."""
    import os
    import threading
    import time
    from types import SimpleNamespace

    from apps.common.janitor import UploadJanitor

    def upload(name):
        folder = tmp_path / f"hash_{name}"
        folder.mkdir()
        (folder / "photo.jpg").write_bytes(b"x" * 100)
        return str(folder / "photo.jpg")

    uploads = {upload(i) for i in range(50)}
    example = upload("example")
    uploads.add(example)
    blocks = SimpleNamespace(temp_file_sets=[uploads], blocks={0: SimpleNamespace(keep_in_cache={example})})
    janitor = UploadJanitor(blocks, ttl_s=60)
    assert janitor.sweep() == 0  # nothing is old yet
    stop = threading.Event()

    def keep_uploading():  # bounded: an unbounded writer outgrew the sweeps on a loaded CI machine (900 s timeout)
        i = 100
        while not stop.is_set() and i < 2100:
            uploads.add(upload(i))
            i += 1

    writer = threading.Thread(target=keep_uploading)
    writer.start()
    try:
        deleted = sum(janitor.sweep(now=time.time() + 120) for _ in range(20))
    finally:
        stop.set()
        writer.join()
    assert deleted >= 50 and os.path.exists(example)
    assert not (tmp_path / "hash_0").exists()  # emptied hash folders removed
