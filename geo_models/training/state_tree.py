"""Pickle-free files for nested training state (optimizer, scheduler, RNG, EMA, queues).

A *state tree* is what ``state_dict()`` methods return: dicts (any hashable scalar keys: optimizer states are keyed
by ints), lists, tuples, tensors, numpy arrays and scalars, strings, ``None``. :func:`save_tree` writes it as two
files: ``<stem>.safetensors`` with every tensor / array (named by its path in the tree, so a flat model state dict
is an ordinary safetensors state dict) and ``<stem>.json`` with the structure, where each tensor is a reference.
:func:`load_tree` reads them back with ``json`` and ``safetensors`` only: nothing is unpickled, so a planted file
cannot run code (``torch.load`` of accelerate's ``*.pkl``/``*.bin`` can, unless ``weights_only=True``).

Round trips are exact: tensors keep dtype and bits, floats go through ``repr`` (shortest round-trip form, NaN and
infinities included), tuples stay tuples (``random.setstate`` needs them), numpy arrays and scalars keep their dtype.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["load_tree", "save_tree", "tree_files"]

_TAG = "__state_tree__"  # marks encoded non-JSON values: {"__state_tree__": kind, ...}


def tree_files(stem: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.safetensors)``."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def save_tree(tree: Any, stem: str | os.PathLike) -> list[Path]:
    """Write ``tree`` as ``<stem>.json`` (+ ``<stem>.safetensors`` when it holds tensors); returns the files written.

    Raises:
        TypeError: a value that is not part of a state tree (naming where it sits), instead of pickling it.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    encoded = _encode(tree, "", tensors, seen)
    json_path, tensor_path = tree_files(stem)
    written = []
    if tensors:
        save_file(tensors, str(tensor_path), metadata={"format": "pt"})
        written.append(tensor_path)
    json_path.write_text(json.dumps(encoded, allow_nan=True))
    written.append(json_path)
    return written


def load_tree(stem: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Read a tree written by :func:`save_tree` (tensors on ``device``).

    Raises:
        ValueError: the files are missing, truncated, or do not belong together (naming the file).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    json_path, tensor_path = tree_files(stem)
    try:
        encoded = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{json_path}: not a readable state file ({err})") from err
    tensors: dict[str, torch.Tensor] = {}
    if tensor_path.exists():
        try:
            tensors = load_file(str(tensor_path), device=str(device))
        except (OSError, SafetensorError) as err:
            raise ValueError(f"{tensor_path}: not a readable safetensors file ({err})") from err
    return _decode(encoded, tensors, json_path)


# ------------------------------------------------------------------------------------------------ encoding
def _encode(value: Any, path: str, tensors: dict, seen: set) -> Any:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if key is not None and key in seen:  # safetensors refuses tensors that share memory (tied weights)
            t = t.clone()
        elif key is not None:
            seen.add(key)
        name = _unique(path or "tensor", tensors)
        tensors[name] = t
        return {_TAG: "tensor", "key": name}
    if isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value)).clone()
        name = _unique(path or "array", tensors)
        tensors[name] = t
        return {_TAG: "ndarray", "key": name, "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return {_TAG: "npscalar", "dtype": value.dtype.str, "value": value.item()}
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, torch.dtype):
        return {_TAG: "dtype", "value": str(value).removeprefix("torch.")}
    if isinstance(value, tuple | list):
        items = [_encode(v, f"{path}/{i}" if path else str(i), tensors, seen) for i, v in enumerate(value)]
        return {_TAG: "tuple", "items": items} if isinstance(value, tuple) else items
    if isinstance(value, dict):
        if all(isinstance(k, str) and k != _TAG for k in value):
            return {k: _encode(v, f"{path}/{k}" if path else k, tensors, seen) for k, v in value.items()}
        items = []
        for k, v in value.items():
            if not isinstance(k, bool | int | str | float | tuple) and k is not None:
                raise TypeError(f"state at {path or '<root>'!r}: dict key {k!r} of type {type(k).__name__}")
            items.append([_encode(k, "", {}, set()), _encode(v, f"{path}/{k}" if path else str(k), tensors, seen)])
        return {_TAG: "dict", "items": items}
    raise TypeError(
        f"state at {path or '<root>'!r} is a {type(value).__name__}: only tensors, arrays, numbers, strings, "
        "lists, tuples and dicts are saved (no pickles)"
    )


def _unique(name: str, taken: dict) -> str:
    if name not in taken:
        return name
    i = 1
    while f"{name}#{i}" in taken:
        i += 1
    return f"{name}#{i}"


def _decode(value: Any, tensors: dict, source: Path) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, source) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TAG)
    if kind is None:
        return {k: _decode(v, tensors, source) for k, v in value.items()}
    if kind in ("tensor", "ndarray"):
        if value["key"] not in tensors:
            raise ValueError(f"{source}: tensor {value['key']!r} is missing from its .safetensors file")
        t = tensors[value["key"]]
        return t.numpy().astype(np.dtype(value["dtype"]), copy=False) if kind == "ndarray" else t
    if kind == "npscalar":
        return np.dtype(value["dtype"]).type(value["value"])
    if kind == "dtype":
        dtype = getattr(torch, str(value["value"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{source}: {value['value']!r} is not a torch dtype")
        return dtype
    if kind == "tuple":
        return tuple(_decode(v, tensors, source) for v in value["items"])
    if kind == "dict":
        return {_hashable(_decode(k, tensors, source)): _decode(v, tensors, source) for k, v in value["items"]}
    raise ValueError(f"{source}: unknown entry kind {kind!r}")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key
