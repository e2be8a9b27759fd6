"""DEL artifacts: ONE safetensors file holding the consensus integer weights,
the float weights kept for analysis, and the JSON config in its metadata.

Layout (``integer.integer_del_to_bytes``): tensors ``int.w1 int.b1 int.w2
int.b2`` (what ``f_int`` evaluates) and ``float.w1 float.b1 float.w2
float.b2``; metadata ``daimon_del`` = JSON with m, C, n, hidden, encoding,
version, quantisation, the ``DELConfig`` and the training curves. Loading
parses safetensors and JSON only — nothing is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError
from .integer import IntegerDEL, IntegerDELError, integer_del_from_bytes, integer_del_to_bytes, quantize

ARTIFACT_FILE = "del.safetensors"
FLOAT_PREFIX = "float."


@dataclass
class Artifact:
    integer: IntegerDEL
    float_weights: dict[str, np.ndarray]  # w1 (hidden, d_in), b1, w2 (n, hidden), b2
    config: dict[str, Any]  # DELConfig as a dict
    history: dict[str, Any] = field(default_factory=dict)  # train/test loss curves, wall time


def build_artifact(float_weights: dict[str, np.ndarray], config: dict[str, Any], history: dict[str, Any]) -> Artifact:
    """Quantise float weights into the consensus ``IntegerDEL`` and bundle both."""
    integer = quantize(
        float_weights["w1"],
        float_weights["b1"],
        float_weights["w2"],
        float_weights["b2"],
        m=int(config["m"]),
        num_classes=int(config["num_classes"]),
        encoding=str(config["encoding"]),
        weight_bits=int(config.get("weight_bits", 12)),
        config={"del_config": config, "history": history},
    )
    return Artifact(integer=integer, float_weights=float_weights, config=config, history=history)


def artifact_path(path: str | Path) -> Path:
    p = Path(path)
    return p / ARTIFACT_FILE if p.is_dir() or p.suffix != ".safetensors" else p


def to_bytes(art: Artifact) -> bytes:
    extra = {FLOAT_PREFIX + k: np.asarray(v, dtype=np.float32) for k, v in art.float_weights.items()}
    return integer_del_to_bytes(art.integer, extra=extra)


def from_bytes(data: bytes) -> Artifact:
    """Parse an artifact; raise ``ArtifactError`` on anything malformed."""
    try:
        integer = integer_del_from_bytes(data)
        from safetensors.numpy import load

        tensors = load(data)
    except IntegerDELError as exc:
        raise ArtifactError(str(exc)) from exc
    floats = {k[len(FLOAT_PREFIX) :]: v for k, v in tensors.items() if k.startswith(FLOAT_PREFIX)}
    cfg = dict(integer.config.get("del_config") or {})
    if not cfg:
        cfg = {"m": integer.m, "num_classes": integer.num_classes, "hidden": integer.hidden, "n": integer.n,
               "encoding": integer.encoding}
    return Artifact(integer=integer, float_weights=floats, config=cfg, history=dict(integer.config.get("history") or {}))


def save_artifact(art: Artifact, out: str | Path) -> Path:
    """Write ``out/del.safetensors`` (``out`` is created) and return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ARTIFACT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(to_bytes(art))
    tmp.replace(path)
    return path


def load_artifact(path: str | Path) -> Artifact:
    p = artifact_path(path)
    if not p.is_file():
        raise ArtifactError(f"no DEL artifact at {p}")
    return from_bytes(p.read_bytes())
