"""A local stand-in for the Hugging Face Hub HTTP API, for offline tests (stdlib only).

Implements what ``huggingface_hub`` 2.x needs for ``create_repo`` (incl. ``exist_ok``), ``create_commit`` /
``upload_file`` / ``upload_folder`` / ``delete_file`` / ``delete_folder``, ``model_info`` / ``repo_info`` /
``repo_exists`` / ``file_exists`` (siblings, sha, tags, ``cardData`` from README.md's YAML), ``list_repo_tree``
/ ``list_repo_files``, ``hf_hub_download`` / ``snapshot_download`` (``HEAD``/``GET .../resolve/...``, with Range),
``validate-yaml`` and ``whoami``, for model, dataset and space repos. ``preupload`` answers ``uploadMode: regular`` for
every file and no Xet header is ever sent, so no LFS/Xet transfer happens. Revisions: ``main`` (the only branch) or a
40-hex commit sha; each commit is an immutable snapshot. A repo created without a namespace lands in ``user/`` (the Hub
uses the caller's namespace) and bare ids fall back to it. Not implemented: LFS/Xet, PRs, branches/tags, repo deletion,
commit history, pagination, auth (any token works). Storage under ``storage_dir``: ``{type}s/{ns}/{name}/repo.json``
(refs), ``commits/{sha}.json`` (path -> blob oid/size) and ``blobs/{git blob sha1}`` (file contents). A commit is
applied whole or not at all, and a request whose body arrives short (the client gave up) is dropped unprocessed.

Fault injection (opt-in, for the reliability suite): ``server.inject("500" | "timeout" | "drop" | "truncate",
path=regex, method=..., count=...)`` makes matching requests fail, see :class:`Fault`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is a test-only dependency
    pytest = None

DUMMY_TOKEN = "hf_localhubdummytoken"
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_ACTIONS = {"revision", "tree", "preupload", "commit"}


FAULT_KINDS = ("500", "timeout", "drop", "truncate")


@dataclass
class Fault:
    """A fault rule of :meth:`LocalHubServer.inject`: the next ``count`` requests (None: all) that match ``method`` and
    ``path`` get ``kind`` instead of their answer.

    Kinds: ``"500"`` an HTTP 500 (JSON error), request not processed; ``"timeout"`` nothing sent for ``delay_s``
    seconds (set it above the client's timeout), then the connection is closed, request not processed; ``"drop"`` the
    connection is closed without an answer, request not processed; ``"truncate"`` the request *is* processed (a commit
    lands), the answer's headers announce the full ``Content-Length`` but only ``keep`` (a fraction) of the body is
    sent before the connection is closed (a ``HEAD`` answer has no body: it arrives whole).

    Args:
        path: a regular expression searched in the request's decoded URL path (no query), e.g. ``r"/preupload/"``,
            ``r"/resolve/.*\\.safetensors$"``; ``""`` matches every request.
        method: ``"GET"``, ``"HEAD"``, ``"POST"``, ...; None matches every method.
    """

    kind: str
    path: str = ""
    method: str | None = None
    count: int | None = 1
    delay_s: float = 2.0
    keep: float = 0.5
    hits: int = 0  # requests this rule has failed so far

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0 or None (every matching request), got {self.count}")
        if not 0 <= self.keep < 1:
            raise ValueError(f"keep must be in [0, 1) (the fraction of the body sent), got {self.keep}")
        re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method) and re.search(self.path, path) is not None


class _Truncated(Exception):
    """Raised by :class:`_TruncatingWriter` once its allowance is spent: the handler then closes the connection."""


class _TruncatingWriter:
    """Passes ``allowance`` bytes through to ``inner``, then raises :class:`_Truncated`."""

    def __init__(self, inner, allowance: int):
        self.inner, self.allowance = inner, allowance

    def write(self, data) -> int:
        data = bytes(data)
        self.inner.write(data[: self.allowance])
        if len(data) > self.allowance:
            self.allowance = 0
            raise _Truncated
        self.allowance -= len(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class HubError(Exception):
    """An HTTP error answered as JSON, with the ``X-Error-Code`` header huggingface_hub maps to its exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = {**({"X-Error-Code": code} if code else {}), **(headers or {})}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _card_data(readme: bytes) -> dict:
    """The YAML front matter of a README.md as a dict ({} if absent or invalid)."""
    match = _YAML_BLOCK.match(readme.decode("utf-8", errors="replace"))
    try:
        import yaml  # PyYAML, a dependency of huggingface_hub

        data = yaml.safe_load(match.group(2)) if match else None
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def _tree_entries(files: dict) -> dict[str, dict]:
    """Tree entries (files and implied directories) keyed by path, in the Hub's JSON shape."""
    out: dict[str, dict] = {}
    for path, f in sorted(files.items()):
        parts = path.split("/")
        for i in range(1, len(parts)):
            out.setdefault("/".join(parts[:i]), {"type": "directory", "size": 0, "path": "/".join(parts[:i])})
        out[path] = {"type": "file", "oid": f["oid"], "size": f["size"], "path": path}
    for path, entry in out.items():
        if entry["type"] == "directory":
            listing = "".join(f"{p}:{f['oid']}\n" for p, f in sorted(files.items()) if p.startswith(path + "/"))
            entry["oid"] = hashlib.sha1(listing.encode()).hexdigest()
    return out


class _Store:
    """Repos on disk: refs in ``repo.json``, commits as JSON manifests, content-addressed blobs; one lock."""

    def __init__(self, root: Path, user: str):
        self.root, self.user, self.lock = root, user, threading.RLock()

    def dir(self, rtype: str, rid: str) -> Path:
        return self.root / f"{rtype}s" / rid

    def meta(self, rtype: str, rid: str) -> dict:
        return json.loads((self.dir(rtype, rid) / "repo.json").read_text())

    def find(self, rtype: str, repo_id: str) -> str | None:
        """The stored id for ``repo_id`` (a bare name means ``{user}/name``), or None."""
        rid = repo_id if "/" in repo_id else f"{self.user}/{repo_id}"
        return rid if _REPO_ID.fullmatch(rid) and (self.dir(rtype, rid) / "repo.json").is_file() else None

    def create(self, rtype: str, rid: str) -> bool:
        """Create a repo with one empty commit on ``main``; False if it already exists."""
        with self.lock:
            d = self.dir(rtype, rid)
            if (d / "repo.json").is_file():
                return False
            (d / "blobs").mkdir(parents=True, exist_ok=True)
            (d / "commits").mkdir(exist_ok=True)
            sha = self._write_commit(d, None, {}, "initial commit", "")
            _write(d / "repo.json", json.dumps({"createdAt": _now(), "refs": {"main": sha}}).encode())
            return True

    def resolve(self, rtype: str, rid: str, rev: str) -> tuple[str, dict]:
        """(commit sha, manifest) of a branch name or commit sha; 404 RevisionNotFound otherwise."""
        with self.lock:
            sha = self.meta(rtype, rid)["refs"].get(rev, rev)
            path = self.dir(rtype, rid) / "commits" / f"{sha}.json"
            if not _SHA.fullmatch(sha) or not path.is_file():
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return sha, json.loads(path.read_text())

    def commit(self, rtype: str, rid: str, rev: str, header: dict, ops: list[dict]) -> str:
        """Apply NDJSON commit operations on top of branch ``rev``, move the branch, return the new sha."""
        with self.lock:
            d, meta = self.dir(rtype, rid), self.meta(rtype, rid)
            if rev not in meta["refs"]:
                raise HubError(404, f"Invalid rev id: {rev} (commits go to an existing branch)", "RevisionNotFound")
            head = meta["refs"][rev]
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(self.resolve(rtype, rid, head)[1]["files"])
            for op in ops:
                key, value = op["key"], op["value"]
                path = value.get("path", "").strip("/")
                if not path or ".." in path.split("/"):
                    raise HubError(400, f"Invalid path in repo: {value.get('path')!r}")
                if key == "file":
                    raw = value["content"]
                    data = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                    oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id, as on the Hub
                    if not (d / "blobs" / oid).is_file():
                        _write(d / "blobs" / oid, data)
                    files[path] = {"oid": oid, "size": len(data)}
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: f for p, f in files.items() if not p.startswith(path + "/")}
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}: only regular files are accepted")
            meta["refs"][rev] = self._write_commit(
                d, head, files, header.get("summary", ""), header.get("description")
            )
            _write(d / "repo.json", json.dumps(meta).encode())
            return meta["refs"][rev]

    def _write_commit(self, d: Path, parent: str | None, files: dict, summary: str, description: str | None) -> str:
        manifest = {"parent": parent, "summary": summary, "description": description or "", "date": _now()}
        sha = hashlib.sha1(json.dumps([manifest, files]).encode() + os.urandom(16)).hexdigest()
        _write(d / "commits" / f"{sha}.json", json.dumps({"oid": sha, **manifest, "files": files}).encode())
        return sha


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length

    def log_message(self, format, *args):  # silence the default stderr access log
        pass

    def do_GET(self):
        self.hub: LocalHubServer = self.server.hub
        self.keep: float | None = None  # set by a "truncate" fault
        try:
            self._handle()
        except _Truncated:
            self.wfile = self.wfile.inner
            self.close_connection = True
        except ConnectionError:  # the client is gone (it timed out): nothing to answer
            self.close_connection = True

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _handle(self) -> None:
        try:
            url = urlsplit(self.path)
            self.query = parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length)
            if len(self.body) < length:  # the client gave up mid-request: process nothing, answer nothing
                self.close_connection = True
                return
            self.hub.requests.append((self.command, unquote(url.path), self.headers.get("Range")))
            fault = self.hub._take_fault(self.command, unquote(url.path))
            if fault is not None and self._inject(fault):
                return
            segs = [unquote(s) for s in url.path.strip("/").split("/")]  # split first: a quoted %2F stays inside
            self._api(segs[1:]) if segs[0] == "api" else self._resolve(segs)
        except (_Truncated, ConnectionError):
            raise
        except HubError as e:
            self._json(e.status, {"error": e.message}, e.headers)
        except Exception as e:  # surfaced to the client as a 500 with the reason
            self._json(500, {"error": f"local hub: {type(e).__name__}: {e}"})

    def _inject(self, fault: Fault) -> bool:
        """Apply ``fault``; True if the request is answered (or dropped) and must not be processed."""
        if fault.kind == "truncate":
            self.keep = fault.keep
            return False
        if fault.kind == "500":
            self._json(500, {"error": f"local hub: injected fault (500) on {self.command} {self.path}"})
            return True
        if fault.kind == "timeout":
            self.hub._stopping.wait(fault.delay_s)
        self.close_connection = True
        return True

    def _send(self, status: int, headers: dict, length: int) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(length)}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.keep is not None and self.command != "HEAD":
            self.wfile = _TruncatingWriter(self.wfile, int(length * self.keep))

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        body, headers = json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
        if self.command == "HEAD" and status >= 400:  # no body: give huggingface_hub the message in a header
            headers["X-Error-Message"] = obj["error"].encode("latin-1", "replace").decode("latin-1")
        self._send(status, headers, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _repo(self, rtype: str, segs: list[str], accepts) -> tuple[str, list[str]]:
        """Split ``segs`` into (stored repo id, rest), trying ``ns/name`` then a bare name; 404 RepoNotFound."""
        options = [n for n in (2, 1) if len(segs) >= n and accepts(segs[n:])]
        for n in options:
            if rid := self.hub.store.find(rtype, "/".join(segs[:n])):
                return rid, segs[n:]
        name = "/".join(segs[: options[0]] if options else segs)
        raise HubError(404, f"Repository not found: {rtype} {name}", "RepoNotFound")

    def _api(self, segs: list[str]) -> None:
        method, store = self.command, self.hub.store
        if method == "POST" and segs == ["repos", "create"]:
            return self._create_repo()
        if method == "POST" and segs == ["validate-yaml"]:
            return self._json(200, {"errors": [], "warnings": []})
        if method == "GET" and segs == ["whoami-v2"]:
            return self._json(200, {"type": "user", "name": self.hub.user, "orgs": [], "auth": {}})
        if len(segs) < 2 or segs[0] not in _TYPES:
            raise HubError(404, f"Not found (local Hub): {method} {self.path}")
        rtype = _TYPES[segs[0]]
        rid, tail = self._repo(rtype, segs[1:], lambda t: not t or (t[0] in _API_ACTIONS and len(t) >= 2))
        action, rev = (tail[0], tail[1]) if tail else ("revision", "main")
        sha, commit = store.resolve(rtype, rid, rev)
        files = commit["files"]
        if method == "GET" and action == "revision" and len(tail) in (0, 2):
            return self._json(200, self._info(rtype, rid, sha, commit))
        if method == "GET" and action == "tree":
            return self._json(200, self._tree(files, "/".join(tail[2:]).strip("/")))
        if method == "POST" and action == "preupload":
            paths = [f["path"] for f in json.loads(self.body)["files"]]
            mode = {"uploadMode": "regular", "shouldIgnore": False}  # regular: content travels inside the commit
            out = [{"path": p, **mode, "oid": files.get(p, {}).get("oid")} for p in paths]
            return self._json(200, {"files": out, "commitOid": sha})
        if method == "POST" and action == "commit":
            if self.query.get("create_pr", ["0"])[0] not in ("0", "false"):
                raise HubError(400, "create_pr is not supported by the local Hub")
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            header = next((x["value"] for x in lines if x["key"] == "header"), {})
            new = store.commit(rtype, rid, rev, header, [x for x in lines if x["key"] != "header"])
            url = f"{self.hub.endpoint}/{_URL_PREFIX[rtype]}{rid}/commit/{new}"
            return self._json(200, {"success": True, "commitOid": new, "commitUrl": url, "pullRequestUrl": None})
        raise HubError(404, f"Not found (local Hub): {method} {self.path}")

    def _create_repo(self) -> None:
        payload = json.loads(self.body or b"{}")
        rtype = payload.get("type") or "model"
        rid = f"{payload.get('organization') or self.hub.user}/{payload.get('name')}"
        if rtype not in _TYPES.values() or not _REPO_ID.fullmatch(rid):
            raise HubError(400, f"Invalid repo: {rtype} {rid}")
        url = f"{self.hub.endpoint}/{_URL_PREFIX[rtype]}{rid}"
        if not self.hub.store.create(rtype, rid):
            return self._json(409, {"error": f"You already created this {rtype} repo", "url": url})
        self._json(200, {"url": url, "name": rid, "id": rid})

    def _info(self, rtype: str, rid: str, sha: str, commit: dict) -> dict:
        files, store = commit["files"], self.hub.store
        readme = files.get("README.md")
        card = _card_data((store.dir(rtype, rid) / "blobs" / readme["oid"]).read_bytes()) if readme else {}
        tags = card.get("tags") or []
        tags = [tags] if isinstance(tags, str) else [str(t) for t in tags]
        tags += [t for t in (card.get("library_name"), card.get("license") and f"license:{card['license']}") if t]
        info = dict(
            _id=sha[:24], id=rid, author=rid.split("/")[0], sha=sha, private=False, disabled=False, gated=False
        )
        info.update(downloads=0, likes=0, tags=list(dict.fromkeys(tags)), lastModified=commit["date"])
        info.update(createdAt=store.meta(rtype, rid)["createdAt"], usedStorage=sum(f["size"] for f in files.values()))
        info["siblings"] = [{"rfilename": p, "size": f["size"], "blobId": f["oid"]} for p, f in sorted(files.items())]
        if card:
            info["cardData"] = card
        if rtype == "model":
            info.update(modelId=rid, library_name=card.get("library_name"), pipeline_tag=card.get("pipeline_tag"))
        return info

    def _tree(self, files: dict, prefix: str) -> list[dict]:
        entries = _tree_entries(files)
        if prefix and entries.get(prefix, {}).get("type") != "directory":
            raise HubError(404, f"Entry not found: {prefix}", "EntryNotFound")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        start = len(prefix) + 1 if prefix else 0
        under = [(p, e) for p, e in entries.items() if not prefix or p.startswith(prefix + "/")]
        return [e for p, e in under if recursive or "/" not in p[start:]]

    def _resolve(self, segs: list[str]) -> None:
        if self.command not in ("GET", "HEAD"):
            raise HubError(405, f"Method not allowed: {self.command}")
        rtype = _TYPES[segs[0]] if segs[0] in ("datasets", "spaces") else "model"
        rid, tail = self._repo(rtype, segs[rtype != "model" :], lambda t: len(t) >= 3 and t[0] == "resolve")
        sha, commit = self.hub.store.resolve(rtype, rid, tail[1])
        f = commit["files"].get("/".join(tail[2:]))
        if f is None:
            raise HubError(404, f"Entry not found: {'/'.join(tail[2:])}", "EntryNotFound", {"X-Repo-Commit": sha})
        size, start, end, status = f["size"], 0, f["size"] - 1, 200
        headers = {"X-Repo-Commit": sha, "ETag": f'"{f["oid"]}"', "Content-Type": "application/octet-stream"}
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if rng and self.command == "GET":
            start, end = int(rng[1]), min(int(rng[2]) if rng[2] else size - 1, size - 1)
            if start >= size:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{size}"
        self._send(status, {**headers, "Accept-Ranges": "bytes"}, end - start + 1)
        if self.command == "GET":
            with open(self.hub.store.dir(rtype, rid) / "blobs" / f["oid"], "rb") as fh:
                fh.seek(start)
                remaining = end - start + 1
                while remaining > 0 and (chunk := fh.read(min(1 << 20, remaining))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up (timed out) is no error here
            super().handle_error(request, client_address)


class LocalHubServer:
    """Threaded HTTP server emulating the Hub API subset of the module docstring, storing repos in ``storage_dir``.

    The port is bound at construction (``port=0`` picks a free one), so ``endpoint`` is known before ``start()``.
    """

    def __init__(self, storage_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, user: str = "user"):
        self.user = user
        self.hf_home: str | None = None  # if set, env() also points the client's HF_HOME / caches there
        self.store = _Store(Path(storage_dir), user)
        self.store.root.mkdir(parents=True, exist_ok=True)
        self.faults: list[Fault] = []  # see inject()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, decoded path, Range header) of each request
        self._faults_lock, self._stopping = threading.Lock(), threading.Event()
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.hub = self
        self.host, self.port = host, self._httpd.server_address[1]
        self.endpoint = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> LocalHubServer:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
            self._thread.start()
        return self

    def inject(
        self,
        kind: str,
        path: str = "",
        *,
        method: str | None = None,
        count: int | None = 1,
        delay_s: float = 2.0,
        keep: float = 0.5,
    ) -> Fault:
        """Fail the next ``count`` requests (None: every one) matching ``method`` and the ``path`` regex with ``kind``
        (see :class:`Fault`); returns the rule, whose ``hits`` counts the requests it failed. Rules are tried in
        order; the first matching rule with faults left applies."""
        fault = Fault(kind, path, method, count, delay_s, keep)
        with self._faults_lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._faults_lock:
            self.faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._faults_lock:
            for fault in self.faults:
                if (fault.count is None or fault.hits < fault.count) and fault.matches(method, path):
                    fault.hits += 1
                    return fault
        return None

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers stalled by a "timeout" fault
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment variables pointing a fresh (sub)process's huggingface_hub at this server.

        A dict cannot unset variables: the child must not have ``HUGGINGFACE_CO_STAGING`` or ``HF_OIDC_RESOURCE``.
        """
        no_proxy = ",".join(x for x in (os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), self.host) if x)
        env = {"HF_ENDPOINT": self.endpoint, "HF_TOKEN": DUMMY_TOKEN, "HF_HUB_DISABLE_XET": "1"}
        env.update(HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_DATASETS_OFFLINE="0")
        env.update(HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY=no_proxy, no_proxy=no_proxy)
        if self.hf_home is not None:
            home = str(self.hf_home)
            env.update(HF_HOME=home, HF_HUB_CACHE=os.path.join(home, "hub"), HF_TOKEN_PATH=os.path.join(home, "token"))
            env.update(HUGGINGFACE_HUB_CACHE=env["HF_HUB_CACHE"], HF_XET_CACHE=os.path.join(home, "xet"))
            env.update(HF_ASSETS_CACHE=os.path.join(home, "assets"))
        return env


def _fixture(fn):
    return pytest.fixture(fn) if pytest is not None else fn


@_fixture
def local_hub(tmp_path, monkeypatch):
    """Serve a fresh ``LocalHubServer`` and point this process's huggingface_hub (and child processes, through the
    environment) at it, with a dummy token and an isolated HF_HOME / cache under ``tmp_path``."""
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import close_session

    server = LocalHubServer(tmp_path / "local_hub_storage")
    server.hf_home = str(tmp_path / "hf_home")
    env = server.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HUGGINGFACE_CO_STAGING", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub.constants is computed from the environment once, at import time: patch the computed values.
    patches = {
        "ENDPOINT": server.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {server.host},
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,  # also keeps upload_folder on the plain create_commit path
        "HF_STORED_TOKENS_PATH": os.path.join(env["HF_HOME"], "stored_tokens"),
        "HUGGINGFACE_ASSETS_CACHE": env["HF_ASSETS_CACHE"],
    }
    for name in "HF_HOME HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_ASSETS_CACHE HF_XET_CACHE HF_TOKEN_PATH".split():
        patches[name] = env[name]
    old = {name: getattr(constants, name) for name in patches}
    # Copies taken with `from huggingface_hub.constants import X` (huggingface_hub.utils, diffusers, ...).
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if module is constants or not isinstance(namespace, dict):
            continue
        for name in ("HF_HUB_OFFLINE", "ENDPOINT", "HF_HUB_CACHE", "HF_ASSETS_CACHE"):
            if name in namespace and type(namespace[name]) is type(old[name]) and namespace[name] == old[name]:
                monkeypatch.setattr(module, name, patches[name])
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    # The module-level `HfApi()` behind `huggingface_hub.create_repo`, `upload_folder`, ... froze its endpoint.
    monkeypatch.setattr(hf_api.api, "endpoint", server.endpoint)
    with server:
        yield server
    close_session()  # drop pooled keep-alive connections so the server's handler threads end
