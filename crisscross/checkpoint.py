"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one ``torch.save`` file holding plain tensors and containers only, so it loads
with ``weights_only=True`` (no pickled code runs when a checkpoint from elsewhere is opened):

``model`` (state dict, no DDP prefix), ``optimizer``, ``scaler`` (or None), ``step`` (optimiser
steps done), ``epoch``, ``loader`` (``TrainLoader.state_dict()``), ``rng`` (torch, numpy, python,
cuda), ``config`` (``TrainConfig.to_dict()``), ``version``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"
VERSION = 1


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


# --- Models for downstream use ------------------------------------------------------------------
def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """A :class:`crisscross.models.CrissCross` with the weights of a checkpoint file, a run folder,
    or a folder written by ``crisscross export`` (then only the backbones carry trained weights;
    the projectors and predictors keep their initialisation). Returned in eval mode."""
    from crisscross.models import build_crisscross
    from crisscross.paper import MODEL

    path = Path(path)
    if path.is_dir() and not (path / CHECKPOINT_NAME).exists():
        from crisscross.export import load_backbones, read_info

        info = read_info(path)
        model = build_crisscross(projector_layers=info.get("projector_layers", MODEL.proj_layers))
        video, audio = load_backbones(path)
        model.video_backbone.load_state_dict(video.state_dict())
        model.audio_backbone.load_state_dict(audio.state_dict())
        return model.eval()
    state = load_checkpoint(path, map_location)
    layers = state.get("config", {}).get("projector_layers", MODEL.proj_layers)
    model = build_crisscross(projector_layers=layers)
    model.load_state_dict(state["model"])
    return model.to(map_location).eval()


def load_model_or_random(checkpoint: str | os.PathLike | None, seed: int = 0):
    """:func:`load_model`, or for None / "random" a seeded random initialisation (the same network
    every time: the baseline that evaluation and visualisation set beside a checkpoint)."""
    if checkpoint is not None and str(checkpoint) != "random":
        return load_model(checkpoint)
    from crisscross.models import build_crisscross

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_crisscross().eval()
