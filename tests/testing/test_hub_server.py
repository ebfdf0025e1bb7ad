"""Tests for the local Hugging Face Hub server used by offline tests."""

import filecmp
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

README = "---\nlicense: apache-2.0\nlibrary_name: geo_models\ntags:\n- gps\n- geoclip\n---\n# Tiny model\n"


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "upload"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "README.md").write_text(README)
    (root / "config.json").write_text('{"dim": 8}')
    (root / "sub" / "deeper" / "notes.txt").write_text("nested file\n")
    (root / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    return root


def _same_tree(a, b):
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert files_a == files_b
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def test_upload_info_download_and_revisions(local_hub, folder, tmp_path):
    api = HfApi()
    assert api.endpoint == local_hub.endpoint
    url = api.create_repo("tester/tiny")
    assert url.repo_id == "tester/tiny"
    api.create_repo("tester/tiny", exist_ok=True)
    first = api.upload_folder(folder_path=folder, repo_id="tester/tiny", commit_message="first")
    assert len(first.oid) == 40

    info = api.model_info("tester/tiny")
    assert info.sha == first.oid
    assert sorted(s.rfilename for s in info.siblings) == [
        "README.md",
        "config.json",
        "sub/deeper/notes.txt",
        "weights.bin",
    ]
    assert info.card_data.license == "apache-2.0" and info.card_data.tags == ["gps", "geoclip"]
    assert {"gps", "geoclip", "license:apache-2.0"} <= set(info.tags)
    assert sorted(api.list_repo_files("tester/tiny")) == sorted(s.rfilename for s in info.siblings)
    assert [e.path for e in api.list_repo_tree("tester/tiny", path_in_repo="sub")] == ["sub/deeper"]
    assert api.repo_exists("tester/tiny") and not api.repo_exists("tester/missing")
    assert api.file_exists("tester/tiny", "sub/deeper/notes.txt") and not api.file_exists("tester/tiny", "nope")

    snap = snapshot_download("tester/tiny")
    assert first.oid in snap

    _same_tree(folder, Path(snap))
    local = snapshot_download("tester/tiny", local_dir=tmp_path / "local_copy")
    _same_tree(folder, Path(local))
    path = hf_hub_download("tester/tiny", "sub/deeper/notes.txt")
    assert open(path).read() == "nested file\n"

    # Second commit (upload_file + an unchanged re-upload): old sha keeps the old bytes.
    second = api.upload_file(path_or_fileobj=b'{"dim": 16}', path_in_repo="config.json", repo_id="tester/tiny")
    assert second.oid != first.oid and api.model_info("tester/tiny").sha == second.oid
    assert open(hf_hub_download("tester/tiny", "config.json")).read() == '{"dim": 16}'
    assert open(hf_hub_download("tester/tiny", "config.json", revision=first.oid)).read() == '{"dim": 8}'
    assert api.model_info("tester/tiny", revision=first.oid).sha == first.oid
    api.delete_file("sub/deeper/notes.txt", repo_id="tester/tiny")
    assert "sub/deeper/notes.txt" not in api.list_repo_files("tester/tiny")
    assert "sub/deeper/notes.txt" in api.list_repo_files("tester/tiny", revision=first.oid)


def test_errors_and_bare_repo_ids(local_hub):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("tester/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("missing")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("tester/missing")
    url = api.create_repo("bare")  # no namespace: lands in the server's user namespace, like on the Hub
    assert url.repo_id == "user/bare"
    api.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="bare")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("bare", "missing.txt")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("bare", revision="0" * 40)
    assert open(hf_hub_download("bare", "a.txt")).read() == "x"
    assert api.model_info("bare").id == "user/bare"


def test_subprocess_snapshot_download(local_hub, tmp_path):
    api = HfApi()
    api.create_repo("tester/sub", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="data/a.txt", repo_id="tester/sub", repo_type="dataset")
    code = textwrap.dedent(
        """
        import sys
        from huggingface_hub import snapshot_download
        path = snapshot_download("tester/sub", repo_type="dataset")
        assert path.startswith(sys.argv[1]), path
        print(open(path + "/data/a.txt").read())
        """
    )
    env = {**os.environ, **local_hub.env()}
    out = subprocess.run(
        [sys.executable, "-c", code, local_hub.hf_home], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello"


def test_fault_injection(local_hub):
    import http.client
    import json
    import socket

    api = HfApi()
    api.create_repo("tester/faults")
    api.upload_file(path_or_fileobj=b"0123456789" * 100, path_in_repo="w.bin", repo_id="tester/faults")
    host, port = local_hub.host, local_hub.port

    def get(path, method="GET", timeout=5.0, headers=None):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request(method, path, headers=headers or {})
        return conn.getresponse()

    with pytest.raises(ValueError, match="kind must be one of"):
        local_hub.inject("slow")
    rule = local_hub.inject("500", r"/api/models/tester/faults$", method="GET")  # once (count=1)
    assert get("/api/models/tester/faults").status == 500
    assert get("/api/models/tester/faults").status == 200 and rule.hits == 1

    local_hub.inject("truncate", r"/w\.bin$", method="GET", keep=0.25)
    response = get("/tester/faults/resolve/main/w.bin")
    assert response.status == 200 and response.headers["Content-Length"] == "1000"
    with pytest.raises(http.client.IncompleteRead) as cut:
        response.read()
    assert len(cut.value.partial) == 250
    response = get("/tester/faults/resolve/main/w.bin", headers={"Range": "bytes=250-"})  # the rule is spent
    assert response.status == 206 and response.read() == (b"0123456789" * 100)[250:]

    local_hub.inject("drop", r"/w\.bin$", method="HEAD")
    with pytest.raises(http.client.RemoteDisconnected):
        get("/tester/faults/resolve/main/w.bin", method="HEAD")
    local_hub.inject("timeout", r"/w\.bin$", count=None, delay_s=1.0)
    with pytest.raises(TimeoutError):
        get("/tester/faults/resolve/main/w.bin", timeout=0.2)
    local_hub.clear_faults()
    assert get("/tester/faults/resolve/main/w.bin").status == 200
    assert ("GET", "/tester/faults/resolve/main/w.bin", None) in local_hub.requests

    # A commit whose body arrives short (the client gave up) is not applied, even cut at a line boundary.
    head = api.model_info("tester/faults").sha
    body = json.dumps({"key": "header", "value": {"summary": "cut"}}).encode() + b"\n"
    with socket.create_connection((host, port)) as sock:
        request = f"POST /api/models/tester/faults/commit/main HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 99}"
        sock.sendall(request.encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # closed without an answer
    assert api.model_info("tester/faults").sha == head
