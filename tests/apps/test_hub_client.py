"""The hub over HTTP with gradio_client: stable API names, JSON out, bad input as messages, server alive."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client(hub_url):
    from gradio_client import Client

    return Client(hub_url, verbose=False)


def test_api_names(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/geolocate", "/text_query"} <= set(endpoints)


def test_geolocate_endpoint(client, photo_path):
    from gradio_client import handle_file

    out = client.predict(handle_file(str(photo_path)), "GeoCLIP", 3, api_name="/geolocate")
    assert out["geolocator"] == "GeoCLIP" and len(out["candidates"]) == 3
    assert out["true_location"] == pytest.approx({"latitude": 48.8566, "longitude": 2.3522}, abs=1e-3)
    assert all({"latitude", "longitude", "score", "place", "distance_km"} <= set(c) for c in out["candidates"])
    flow = client.predict(handle_file(str(photo_path)), "Sphere flow", 2, 8, 4, 20, 0, api_name="/geolocate")
    assert len(flow["candidates"]) == 2 and len(flow["samples"]) == 8


def test_text_query_endpoint(client):
    out = client.predict("snowy mountains", 10, 3, api_name="/text_query")
    assert out["text"] == "snowy mountains" and len(out["candidates"]) == 3


def test_bad_input_is_a_message_and_the_server_keeps_serving(client, bad_files, photo_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(str(bad_files["not_image"])), "GeoCLIP", api_name="/geolocate")
    with pytest.raises(AppError, match="too large"):
        client.predict(handle_file(str(bad_files["huge"])), "GeoCLIP", api_name="/geolocate")
    with pytest.raises(AppError, match="type a description"):
        client.predict("   ", api_name="/text_query")
    assert client.predict(handle_file(str(photo_path)), "LocDiff", 2, 4, 4, api_name="/geolocate")["candidates"]
