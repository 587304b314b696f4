"""Checkpoints: tensors in safetensors, everything else in JSON. No pickle anywhere.

``save_state(path, state)`` takes any nested structure of dicts, lists, tuples, tensors, NumPy arrays
and JSON scalars -- a model's ``state_dict()``, an optimiser's ``state_dict()`` (whose keys are ints),
RNG states, step counters, a config dataclass turned into a dict -- and writes two files:

* ``<path>.safetensors`` -- every tensor, under a flat key such as ``model/encoder.0.weight``;
* ``<path>.json``        -- the structure, with each tensor replaced by a reference to its key.

``load_state(path)`` rebuilds exactly the same structure (int keys stay ints, tuples stay tuples,
NumPy arrays come back as NumPy arrays). Loading never executes code from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        if key in tensors:
            raise ValueError(f"duplicate tensor key {key!r} while saving checkpoint")
        tensors[key] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(f"cannot checkpoint an object-dtype NumPy array at {prefix!r}")
        key = prefix or "array"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj)).clone()
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"checkpoint dict keys must be str or int, got {type(k).__name__} at {prefix!r}")
            items.append([k, _encode(v, f"{prefix}/{k}" if prefix else str(k), tensors)])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and not np.isfinite(obj):
            return {"__float__": repr(obj)}
        return obj
    raise TypeError(f"cannot checkpoint value of type {type(obj).__name__} at {prefix!r}")


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__ndarray__" in node:
            return tensors[node["__ndarray__"]].numpy()
        if "__dict__" in node:
            return {k: _decode(v, tensors) for k, v in node["__dict__"]}
        if "__tuple__" in node:
            return tuple(_decode(v, tensors) for v in node["__tuple__"])
        if "__float__" in node:
            return float(node["__float__"])
        raise ValueError(f"unrecognised checkpoint node with keys {sorted(node)}")
    return node


def save_state(path: str | os.PathLike, state: dict, metadata: dict | None = None) -> Path:
    """Write ``state`` to ``<path>.safetensors`` + ``<path>.json`` atomically. Returns the JSON path."""
    st_path, js_path = _paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, "", tensors)
    # safetensors refuses tensors that share storage; clone the few that do (tied weights).
    seen: set[tuple[int, int]] = set()
    for k, t in tensors.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if ident in seen:
            tensors[k] = t.clone()
        seen.add(ident)
    doc = {"format": "wmkit-checkpoint", "version": FORMAT_VERSION, "metadata": metadata or {}, "state": tree}
    tmp_st, tmp_js = st_path.with_name(st_path.name + ".tmp"), js_path.with_name(js_path.name + ".tmp")
    save_file(tensors, str(tmp_st))
    tmp_js.write_text(json.dumps(doc, indent=1))
    os.replace(tmp_st, st_path)
    os.replace(tmp_js, js_path)
    return js_path


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_state`. Returns the state (metadata under ``load_meta``)."""
    st_path, js_path = _paths(path)
    for p in (st_path, js_path):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint file {p} does not exist")
    try:
        doc = json.loads(js_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint metadata {js_path} is not valid JSON: {e}") from e
    if doc.get("format") != "wmkit-checkpoint":
        raise ValueError(f"{js_path} is not a wmkit checkpoint (format={doc.get('format')!r})")
    tensors = load_file(str(st_path), device=str(map_location))
    return _decode(doc["state"], tensors)


def load_meta(path: str | os.PathLike) -> dict:
    """The ``metadata`` dict stored beside a checkpoint (config, step, figures)."""
    _, js_path = _paths(path)
    return json.loads(js_path.read_text())["metadata"]


def checkpoint_exists(path: str | os.PathLike) -> bool:
    st_path, js_path = _paths(path)
    return st_path.exists() and js_path.exists()
