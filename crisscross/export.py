"""Trained models for downstream use: export the two backbones alone, as safetensors, and load a
model for evaluation from a checkpoint or an export.

``export_backbones(checkpoint, out)`` writes::

    out/video_backbone.safetensors   VideoBackbone state dict
    out/audio_backbone.safetensors   AudioBackbone state dict
    out/backbones.json               architecture (model size and Table 3 choices), input shapes,
                                     parameter counts, source run

and :func:`load_backbones` reads them back into fresh modules of that size. No projector or
predictor is kept: downstream tasks (linear evaluation, fine-tuning, retrieval) use the backbones
only. :func:`load_model` / :func:`load_model_or_random` give the whole model from a checkpoint, a
run folder or an export folder (what ``crisscross eval`` and ``crisscross viz`` load), built from the
model choices recorded there (:func:`crisscross.checkpoint.model_choices`). This module reads
checkpoints (:mod:`crisscross.checkpoint`); the checkpoint module knows nothing of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import torch
from safetensors.torch import load_file, save_file

from crisscross import paper
from crisscross.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_choices
from crisscross.models import SIZES, build_backbones, build_crisscross

INFO_NAME = "backbones.json"
FILES = {"video": "video_backbone.safetensors", "audio": "audio_backbone.safetensors"}


def _subdict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.contiguous() for k, v in state.items() if k.startswith(prefix)}


def export_backbones(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the checkpoint's video and audio backbones to ``out``; return the folder."""
    state = load_checkpoint(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = state.get("config", {})
    choices = model_choices(config)
    size = SIZES[choices["model"]]
    paper_model = choices["model"] == "paper"
    info: dict[str, Any] = {
        "format": "crisscross.backbones", "version": 1, "source": str(checkpoint), "step": state.get("step"),
        "preset": config.get("preset"), "terms": config.get("terms"), "mode": config.get("mode"),
        **choices, "model_description": size.description, "feature_dim": size.widths[-1],
        "video": {"class": "crisscross.models.VideoBackbone",
                  "architecture": "R(2+1)D-18 (AVID variant)" if paper_model else "R(2+1)D, tiny model (ours)",
                  "input": f"[B, 3, T, H, W] float, ImageNet-normalised, {paper.FPS} fps "
                           f"(pretrained on {paper.VIDEO_FRAMES} x {paper.CROP_SIZE}^2)"},
        "audio": {"class": "crisscross.models.AudioBackbone",
                  "architecture": "ResNet-18, 1-channel" if paper_model else "ResNet, 1-channel, tiny model (ours)",
                  "input": f"[B, 1, {paper.AUDIO_AUG.n_mels}, T] normalised log-mel, hop "
                           f"{paper.AUDIO_AUG.hop_length} at {paper.SAMPLE_RATE} Hz"},
    }
    for name, file in FILES.items():
        weights = _subdict(state["model"], f"{name}_backbone.")
        if not weights:
            raise ValueError(f"{checkpoint} holds no {name}_backbone weights; is it a CrissCross checkpoint?")
        save_file(weights, str(out / file), metadata={"step": str(state.get("step"))})
        info[name]["file"] = file
        info[name]["num_params"] = sum(v.numel() for k, v in weights.items()
                                       if "running_" not in k and "num_batches" not in k)
    (out / INFO_NAME).write_text(json.dumps(info, indent=2))
    return out


def read_info(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``backbones.json`` of an exported folder, with a clear error when there is none."""
    path = Path(folder) / INFO_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an exported backbone folder (no {INFO_NAME}); "
                                "make one with `crisscross export CHECKPOINT --out DIR`")
    return json.loads(path.read_text())


def load_backbones(folder: str | os.PathLike, pool: str = "avg"):
    """(VideoBackbone, AudioBackbone) of the exported size with the exported weights, in eval mode.
    ``pool``: "avg" (as pretrained), "max" (the paper's evaluation) or "none" (conv5 maps)."""
    video, audio = build_backbones(model_choices(read_info(folder))["model"], pool)
    video.load_state_dict(load_file(str(Path(folder) / FILES["video"])))
    audio.load_state_dict(load_file(str(Path(folder) / FILES["audio"])))
    return video.eval(), audio.eval()


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """A :class:`crisscross.models.CrissCross` with the weights of a checkpoint file, a run folder,
    or a folder written by ``crisscross export`` (then only the backbones carry trained weights;
    the projectors and predictors keep their initialisation). Returned in eval mode."""
    if is_export(path):
        model = build_crisscross(**model_choices(read_info(path)))
        video, audio = load_backbones(path)
        model.video_backbone.load_state_dict(video.state_dict())
        model.audio_backbone.load_state_dict(audio.state_dict())
        return model.eval()
    state = load_checkpoint(path, map_location)
    model = build_crisscross(**model_choices(state.get("config", {})))
    model.load_state_dict(state["model"])
    return model.to(map_location).eval()


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by ``crisscross export`` rather than a checkpoint or run folder."""
    path = Path(path)
    return path.is_dir() and not (path / CHECKPOINT_NAME).exists()


def saved_choices(path: str | os.PathLike) -> dict[str, Any]:
    """The model choices (:func:`crisscross.checkpoint.model_choices`) of a checkpoint, run or export folder."""
    return model_choices(read_info(path) if is_export(path) else load_checkpoint(path).get("config", {}))


def load_model_or_random(checkpoint: str | os.PathLike | None, seed: int = 0,
                         like: str | os.PathLike | None = None):
    """:func:`load_model`, or for None / "random" a seeded random initialisation (the same network
    every time: the baseline that evaluation and visualisation set beside a checkpoint) of the
    architecture of ``like`` (a checkpoint, run or export folder), or of the paper's model."""
    if checkpoint is not None and str(checkpoint) != "random":
        return load_model(checkpoint)
    choices = saved_choices(like) if like is not None else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_crisscross(**choices).eval()


@click.command("export")
@click.argument("checkpoint")
@click.option("--out", required=True, help="Folder to write video_backbone.safetensors, "
                                           "audio_backbone.safetensors and backbones.json into.")
def export_command(checkpoint: str, out: str) -> None:
    """Write the two pretrained backbones of CHECKPOINT (a checkpoint.pt or a run folder) alone,
    as safetensors, for downstream use.

    \b
    Example:
      crisscross export runs/tiny/checkpoint.pt --out runs/tiny/backbones
    \b
    Load them in Python:
      from crisscross.export import load_backbones
      video, audio = load_backbones("runs/tiny/backbones", pool="max")
    """
    try:
        folder = export_backbones(checkpoint, out)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    info = read_info(folder)
    click.echo(f"exported step {info['step']}: video backbone ({info['video']['num_params']:,} parameters) "
               f"and audio backbone ({info['audio']['num_params']:,}) to {folder}")
