import json

import pytest

from geo_models.io import write_json_atomic
from geo_models.training import distributed_without_accelerator, enable_xformers_if_available


class Recorder:
    called = False

    def enable_xformers_memory_efficient_attention(self):
        self.called = True


def test_xformers_is_never_touched_on_cpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    model = Recorder()
    assert enable_xformers_if_available(model) is False and not model.called


@pytest.mark.parametrize("world_size, expected", [("1", False), ("2", True)])
def test_distributed_cpu_detection(monkeypatch, world_size, expected):
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr("torch.accelerator.is_available", lambda: False)
    assert distributed_without_accelerator() is expected


def test_write_json_atomic(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1} and [p.name for p in tmp_path.iterdir()] == ["a.json"]
