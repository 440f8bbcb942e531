"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one ``torch.save`` file holding plain tensors and containers only, so it loads
with ``weights_only=True`` (no pickled code runs when a checkpoint from elsewhere is opened):

``model`` (state dict, no DDP prefix), ``optimizer``, ``scaler`` (or None), ``step`` (optimiser
steps done), ``epoch``, ``loader`` (``TrainLoader.state_dict()``), ``rng`` (torch, numpy, python,
cuda), ``config`` (``TrainConfig.to_dict()``), ``version``. The network is rebuilt from the config's
model choices (:func:`model_choices`), so every ablation's checkpoint loads into its own architecture.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crisscross.paper import MODEL

CHECKPOINT_NAME = "checkpoint.pt"
VERSION = 1
# The config keys that decide the network, with the values of checkpoints older than the options.
MODEL_CHOICES = {"model": "paper", "projector_layers": MODEL.proj_layers, "predictor": "separate"}


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename,
    so a job killed mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save({**state, "version": VERSION}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or the checkpoint inside it when it is a run folder."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error when it is not one."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a checkpoint file or a run folder "
                                f"holding {CHECKPOINT_NAME}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"{path} is not a readable crisscross checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); was it written by `crisscross train`?") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a crisscross checkpoint (no 'model' entry)")
    return state


def model_choices(config: dict[str, Any]) -> dict[str, Any]:
    """The network a checkpoint's (or export's) ``config`` records: ``model``, ``projector_layers``,
    ``predictor`` (:func:`crisscross.models.build_crisscross`'s arguments); the paper's model where
    a key is missing (checkpoints written before the options existed)."""
    return {k: config.get(k, default) for k, default in MODEL_CHOICES.items()}


def describe_choices(choices: dict[str, Any]) -> str:
    """``--model tiny --projector-layers 3 --predictor separate``: the options that give this network."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in choices.items())


def resolve_resume(resume: str | None, out: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: None, a path, or "auto" (the run folder's latest, if any)."""
    if not resume:
        return None
    if resume == "auto":
        latest = Path(out) / CHECKPOINT_NAME
        return latest if latest.is_file() else None
    path = checkpoint_file(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint there; pass a checkpoint file, a run "
                                f"folder, or 'auto'")
    return path


# --- RNG states ---------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss_py}}


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
