"""Pushes and pulls under Hub faults: the local Hub answers 500s, stalls (timeouts), drops connections or cuts bodies
short during push (create repo / preupload / commit) and pull (model info / tree / resolve HEAD + GET, Range resumes)
of a plain model (``LocationEncoder``) and a diffusers pipeline (``GPSToImagePipeline``).

A transient fault (once) -> the operation succeeds with a result identical to a fault-free round trip (weights and
files bit-equal, one commit). A persistent fault -> ``HubTransferError`` naming the repo, quickly, and nothing
half-written: no partial commit on the Hub; no ``.incomplete`` / ``.partial`` leftover, no cached blob whose content
differs from the Hub's, no local folder or cache entry an offline load accepts unless it is complete and identical;
once the Hub recovers the same call succeeds.

:data:`CASES` lists the fault cases and :func:`run_case` runs one and returns a :class:`CaseResult` (faults
injected, outcome, data lost), so a benchmark can report "faults injected / survived / lost data".
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants, file_download
from huggingface_hub.utils import _http

from geo_models import hub as geo_hub
from geo_models.encoders import LocationEncoder
from geo_models.hub import HubTransferError, load_model, pull_folder, push_folder
from geo_models.testing.hub_server import LocalHubServer

TIMEOUT_S = 0.2  # client timeouts in these tests; a "timeout" fault stalls twice as long
TINY = dict(sigmas=(1.0, 16.0), num_features=8, hidden_dim=16, num_layers=2, output_dim=4, seed=7)

# request path patterns (regular expressions searched in the decoded URL path)
CREATE, PREUPLOAD, COMMIT = r"^/api/repos/create$", r"/preupload/", r"/commit/"
INFO, TREE, RESOLVE = r"^/api/models/.+/revision/", r"/tree/", r"/resolve/"
CONFIG, WEIGHTS = r"/resolve/[^/]+/config\.json$", r"/resolve/[^/]+/model\.safetensors$"
UNET = r"/resolve/.+/unet/diffusion_pytorch_model\.safetensors$"


@dataclass(frozen=True)
class FaultCase:
    """One fault injected into one push or pull.

    Attributes:
        id: a short name.
        via: the entry point: ``"push_to_hub"`` / ``"load_model"`` / ``"from_pretrained"`` (the ``LocationEncoder``),
            ``"push_folder"`` / ``"pull_folder"`` / ``"pull_folder:local_dir"`` (the saved ``GPSToImagePipeline``).
        kind, method, path: the fault (see ``geo_models.testing.hub_server.Fault``).
        persistent: every matching request fails (else only the first).
        expect: ``"ok"`` (succeeds, identical result) or ``"error"`` (``HubTransferError``, nothing half-written).
    """

    id: str
    via: str
    kind: str
    method: str
    path: str
    persistent: bool
    expect: str

    @property
    def op(self) -> str:
        return "push" if self.via.startswith("push") else "pull"


CASES = [
    # LocationEncoder.push_to_hub: create_repo, preupload, commit
    FaultCase("enc-push-500-create-once", "push_to_hub", "500", "POST", CREATE, False, "ok"),
    FaultCase("enc-push-500-commit-always", "push_to_hub", "500", "POST", COMMIT, True, "error"),
    FaultCase("enc-push-timeout-preupload-once", "push_to_hub", "timeout", "POST", PREUPLOAD, False, "ok"),
    FaultCase("enc-push-timeout-commit-always", "push_to_hub", "timeout", "POST", COMMIT, True, "error"),
    FaultCase("enc-push-truncate-commit-once", "push_to_hub", "truncate", "POST", COMMIT, False, "ok"),
    FaultCase("enc-push-truncate-preupload-always", "push_to_hub", "truncate", "POST", PREUPLOAD, True, "error"),
    FaultCase("enc-push-drop-commit-once", "push_to_hub", "drop", "POST", COMMIT, False, "ok"),
    # load_model / LocationEncoder.from_pretrained: HEAD + GET config.json, model.safetensors (HF cache)
    FaultCase("enc-pull-500-weights-once", "load_model", "500", "GET", WEIGHTS, False, "ok"),
    FaultCase("enc-pull-500-head-always", "load_model", "500", "HEAD", RESOLVE, True, "error"),
    FaultCase("enc-pull-timeout-head-once", "load_model", "timeout", "HEAD", CONFIG, False, "ok"),
    FaultCase("enc-pull-timeout-weights-always", "load_model", "timeout", "GET", WEIGHTS, True, "error"),
    FaultCase("enc-pull-truncate-weights-once", "load_model", "truncate", "GET", WEIGHTS, False, "ok"),
    FaultCase("enc-pull-truncate-weights-always", "load_model", "truncate", "GET", WEIGHTS, True, "error"),
    FaultCase("enc-pull-500-config-always", "from_pretrained", "500", "GET", CONFIG, True, "error"),
    # push_folder(saved GPSToImagePipeline)
    FaultCase("pipe-push-500-preupload-once", "push_folder", "500", "POST", PREUPLOAD, False, "ok"),
    FaultCase("pipe-push-500-preupload-always", "push_folder", "500", "POST", PREUPLOAD, True, "error"),
    FaultCase("pipe-push-timeout-commit-once", "push_folder", "timeout", "POST", COMMIT, False, "ok"),
    FaultCase("pipe-push-timeout-create-always", "push_folder", "timeout", "POST", CREATE, True, "error"),
    FaultCase("pipe-push-truncate-create-once", "push_folder", "truncate", "POST", CREATE, False, "ok"),
    # every commit lands, its answer is cut: the retry finds nothing changed and succeeds without a second commit
    FaultCase("pipe-push-truncate-commit-always", "push_folder", "truncate", "POST", COMMIT, True, "ok"),
    # pull_folder: model info, tree, HEAD + GET of 14 files (some GETs resumed with Range)
    FaultCase("pipe-pull-500-info-once", "pull_folder:local_dir", "500", "GET", INFO, False, "ok"),
    FaultCase("pipe-pull-500-tree-always", "pull_folder:local_dir", "500", "GET", TREE, True, "error"),
    FaultCase("pipe-pull-timeout-tree-once", "pull_folder:local_dir", "timeout", "GET", TREE, False, "ok"),
    FaultCase("pipe-pull-timeout-info-always", "pull_folder:local_dir", "timeout", "GET", INFO, True, "error"),
    FaultCase("pipe-pull-truncate-unet-once", "pull_folder:local_dir", "truncate", "GET", UNET, False, "ok"),
    FaultCase("pipe-pull-truncate-unet-always", "pull_folder:local_dir", "truncate", "GET", UNET, True, "error"),
    FaultCase("pipe-pull-drop-head-once", "pull_folder", "drop", "HEAD", RESOLVE, False, "ok"),
    FaultCase("pipe-pull-drop-unet-always", "pull_folder", "drop", "GET", UNET, True, "error"),
]


@dataclass
class CaseResult:
    """What :func:`run_case` saw. ``survived``: the expected outcome (an error: a clear one), and no data lost."""

    case: FaultCase
    injected: int = 0  # requests the fault hit
    outcome: str = ""  # "ok" or "error"
    error: str | None = None
    error_is_clear: bool = True  # a HubTransferError naming the repo
    commits: int | None = None  # push: commits that landed
    ranges: int = 0  # requests with a Range header (resumed downloads)
    seconds: float = 0.0
    data_lost: list[str] = field(default_factory=list)  # what was found wrong: corrupt/partial/half-written data

    @property
    def survived(self) -> bool:
        return self.outcome == self.case.expect and self.error_is_clear and not self.data_lost


@dataclass
class References:
    encoder: LocationEncoder  # pushed by push_to_hub / pulled by load_model
    pipeline_dir: Path  # a saved GPSToImagePipeline, pushed by push_folder / pulled by pull_folder


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def folder_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts
    }


def remote_commits(hub: LocalHubServer, repo_id: str) -> list[dict[str, bytes]] | None:
    """The files of each commit on ``main`` (newest first) after the repo's initial empty one; None: no repo. Read
    from the server's storage, not through the client under test."""
    rid = hub.store.find("model", repo_id)
    if rid is None:
        return None
    blobs = hub.store.dir("model", rid) / "blobs"
    _, manifest = hub.store.resolve("model", rid, "main")
    commits = []
    while manifest["parent"] is not None:
        commits.append({path: (blobs / f["oid"]).read_bytes() for path, f in manifest["files"].items()})
        _, manifest = hub.store.resolve("model", rid, manifest["parent"])
    return commits


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def local_damage(hub: LocalHubServer, workdir: Path) -> list[str]:
    """Leftover temporary downloads, and cached blobs whose bytes are not the Hub's (the blob name is its etag: the
    git blob sha1 on this server)."""
    roots = [Path(hub.hf_home), workdir]
    found = [f"leftover {p}" for r in roots for p in r.rglob("*") if p.name.endswith((".incomplete", ".partial"))]
    for blob in Path(hub.hf_home, "hub").glob("models--*/blobs/*"):
        if git_sha1(blob.read_bytes()) != blob.name:
            found.append(f"corrupt cached blob {blob}")
    return found


def _pull(case: FaultCase, repo_id: str, local_dir: Path):
    if case.via == "load_model":
        return load_model(repo_id)
    if case.via == "from_pretrained":
        return LocationEncoder.from_pretrained(repo_id)
    return pull_folder(repo_id, local_dir=local_dir if case.via.endswith("local_dir") else None)


def _pull_problems(case: FaultCase, refs: References, result, local_dir: Path) -> list[str]:
    """What differs between a pull's result and the pushed model."""
    if case.via in ("load_model", "from_pretrained"):
        if type(result) is not LocationEncoder or not same_state(result.state_dict(), refs.encoder.state_dict()):
            return ["pulled encoder differs from the pushed one"]
        if result._hub_mixin_config != json.loads(json.dumps(refs.encoder._hub_mixin_config)):  # tuples -> lists
            return [f"pulled encoder config differs: {result._hub_mixin_config}"]
        return []
    if case.via.endswith("local_dir") and Path(result) != local_dir:
        return [f"pull_folder returned {result}, not {local_dir}"]
    return [] if folder_files(Path(result)) == folder_files(refs.pipeline_dir) else ["pulled folder differs"]


def _offline_check(case: FaultCase, refs: References, repo_id: str, local_dir: Path, monkeypatch) -> list[str]:
    """With the network off, whatever a load accepts from local state must be complete and identical."""
    if case.via.endswith("local_dir"):  # the folder is the local state: absent, or complete
        return _pull_problems(case, refs, local_dir, local_dir) if local_dir.exists() else []
    problems = []
    with monkeypatch.context() as m:
        m.setattr(constants, "HF_HUB_OFFLINE", True)
        try:
            accepted = _pull(case, repo_id, local_dir)
        except Exception:  # noqa: BLE001  (rejected: nothing complete is cached)
            accepted = None
        if accepted is not None:
            problems += [f"offline: {p}" for p in _pull_problems(case, refs, accepted, local_dir)]
        elif case.via == "pull_folder":  # diffusers' own loader must not accept the incomplete snapshot either
            from geo_models.generation import GPSToImagePipeline

            try:
                GPSToImagePipeline.from_pretrained(repo_id, local_files_only=True)
                problems.append("offline: diffusers accepted an incomplete snapshot")
            except Exception:  # noqa: BLE001
                pass
    return problems


def run_case(case: FaultCase, hub: LocalHubServer, workdir: Path, refs: References, monkeypatch) -> CaseResult:
    """Inject ``case``'s fault into a fresh ``hub`` (the client pointed at it, short timeouts), run the push or pull,
    then check the result and what it left behind (with the faults cleared)."""
    result = CaseResult(case)
    repo_id = f"tester/{case.id}"
    local_dir = workdir / "pulled"
    if case.op == "pull":  # a fault-free push first
        if case.via in ("load_model", "from_pretrained"):
            refs.encoder.push_to_hub(repo_id)
        else:
            push_folder(refs.pipeline_dir, repo_id)
        expected_push = None
    elif case.via == "push_to_hub":
        saved = workdir / "expected"
        refs.encoder.save_pretrained(saved, model_card_kwargs={"repo_id": repo_id})
        expected_push = folder_files(saved)
    else:
        expected_push = folder_files(refs.pipeline_dir)

    fault = hub.inject(case.kind, case.path, method=case.method, count=None if case.persistent else 1,
                       delay_s=2 * TIMEOUT_S)  # fmt: skip
    start, first_request = time.monotonic(), len(hub.requests)
    try:
        if case.via == "push_to_hub":
            refs.encoder.push_to_hub(repo_id)
        elif case.via == "push_folder":
            push_folder(refs.pipeline_dir, repo_id)
        else:
            out = _pull(case, repo_id, local_dir)
        result.outcome = "ok"
    except Exception as err:  # noqa: BLE001
        result.outcome, result.error = "error", f"{type(err).__name__}: {err}"
        result.error_is_clear = isinstance(err, HubTransferError) and repo_id in str(err)
    result.seconds = time.monotonic() - start
    result.injected = fault.hits
    result.ranges = sum(r[2] is not None for r in hub.requests[first_request:])
    hub.clear_faults()

    if case.op == "push":
        commits = remote_commits(hub, repo_id) or []
        result.commits = len(commits)
        result.data_lost += [f"commit {i} is partial or differs" for i, c in enumerate(commits) if c != expected_push]
        if result.outcome == "ok" and not commits:
            result.data_lost.append("push reported success but nothing landed")
        if result.outcome == "error":  # recovery: the same push succeeds once the Hub is healthy
            if case.via == "push_folder":
                push_folder(refs.pipeline_dir, repo_id)
            else:
                refs.encoder.push_to_hub(repo_id)
            if (remote_commits(hub, repo_id) or [None])[0] != expected_push:
                result.data_lost.append("push after recovery differs")
        return result

    if result.outcome == "ok":
        result.data_lost += _pull_problems(case, refs, out, local_dir)
    result.data_lost += local_damage(hub, workdir)
    result.data_lost += _offline_check(case, refs, repo_id, local_dir, monkeypatch)
    if result.outcome == "error":  # recovery: the same pull succeeds, identical, once the Hub is healthy
        again = _pull(case, repo_id, local_dir)
        result.data_lost += [f"after recovery: {p}" for p in _pull_problems(case, refs, again, local_dir)]
    return result


# -------------------------------------------------------------------------------------------------------- fixtures
class _FastTime:
    """``time`` for huggingface_hub's modules, its backoff sleeps cut 1000x (the retries themselves all happen)."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / 1000)

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def hub(local_hub, monkeypatch):
    """The local Hub, with client timeouts of TIMEOUT_S and backoff waits (ours, huggingface_hub's) cut short."""
    monkeypatch.setenv("GEO_MODELS_HUB_TIMEOUT", str(TIMEOUT_S))
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", TIMEOUT_S)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", TIMEOUT_S)
    monkeypatch.setattr(file_download, "_ETAG_RETRY_TIMEOUT", TIMEOUT_S)
    # body chunks of 1 KiB (not 10 MiB): what arrived before a cut is kept, and the download resumes with a Range
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    monkeypatch.setattr(_http, "time", _FastTime())
    monkeypatch.setattr(file_download, "time", _FastTime())
    monkeypatch.setattr(geo_hub, "HUB_BACKOFF_S", 0.001)
    return local_hub


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from geo_models.testing import tiny_gps_to_image_pipeline

    pipe = tiny_gps_to_image_pipeline()
    folder = tmp_path_factory.mktemp("gps_pipeline")
    pipe.save_pretrained(folder)
    return pipe, folder


@pytest.fixture(scope="module")
def refs(pipeline):
    torch.manual_seed(0)
    encoder = LocationEncoder(**TINY)
    with torch.no_grad():  # non-default weights: a re-initialised model cannot pass for the pushed one
        for p in encoder.parameters():
            p.add_(torch.randn_like(p))
    return References(encoder, pipeline[1])


# ----------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case, hub, tmp_path, refs, monkeypatch):
    result = run_case(case, hub, tmp_path, refs, monkeypatch)
    assert result.injected >= 1, "the fault never hit: its pattern matches no request of this operation"
    assert result.data_lost == []
    assert result.outcome == case.expect, result.error
    assert result.error_is_clear, result.error
    if case.op == "push" and case.expect == "ok":
        assert result.commits == 1  # a retried commit is not duplicated
    if case.kind == "truncate" and case.op == "pull":
        assert result.ranges >= 1  # the cut download resumed where it stopped
    assert result.seconds < 10


def test_pipeline_pulled_through_faults_loads_bit_equal(hub, tmp_path, pipeline):
    from geo_models.generation import GPSToImagePipeline

    pipe, folder = pipeline
    push_folder(folder, "tester/gps")
    hub.inject("500", INFO, method="GET")
    hub.inject("truncate", UNET, method="GET")
    hub.inject("drop", r"/resolve/.+/vae/", method="HEAD")
    pulled = GPSToImagePipeline.from_pretrained(pull_folder("tester/gps", local_dir=tmp_path / "gps"))
    assert all(f.hits == 1 for f in hub.faults)
    for name in ("unet", "vae", "text_encoder", "gps_embedder"):
        assert same_state(getattr(pulled, name).state_dict(), getattr(pipe, name).state_dict()), name


def test_pull_folder_keeps_the_previous_local_copy_when_an_update_fails(hub, tmp_path, refs):
    push_folder(refs.pipeline_dir, "tester/gps")
    local = pull_folder("tester/gps", local_dir=tmp_path / "gps")
    before = folder_files(local)
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "model_index.json").write_text("{}")
    push_folder(tmp_path / "changed", "tester/gps")
    hub.inject("truncate", UNET, method="GET", count=None)
    with pytest.raises(HubTransferError, match="tester/gps"):
        pull_folder("tester/gps", local_dir=local)
    assert folder_files(local) == before  # the old complete copy, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial folder left
    hub.clear_faults()
    assert folder_files(pull_folder("tester/gps", local_dir=local))["model_index.json"] == b"{}"
