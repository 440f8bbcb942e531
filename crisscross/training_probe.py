"""The linear-SVM probe during pretraining (Fig. 4 left): top-1 of the linear SVM protocol of
:mod:`crisscross.eval` on the CURRENT backbones, logged as ``probe/NAME`` columns of ``log.csv``.
(Not the linear-layer probe of evaluation, :mod:`crisscross.eval.probe`.)

Small settings suit a probe run every few epochs (a couple of clips per video, no feature cache
since the weights change). The probe leaves training untouched: the model goes back to its mode and
every global RNG to its state, so a run with probes follows the same trajectory as one without.
"""

from __future__ import annotations

import click
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from avshards.reader import open_shards, shard_urls
from crisscross.checkpoint import rng_state, set_rng_state
from crisscross.eval.errors import EvalError

PROBE_PREFIX = "probe/"        # the column prefix crisscross.viz.curves reads


def probe_due(step: int, steps_per_epoch: int, every: int, total: int) -> bool:
    """Whether step ``step`` ends an every-th epoch (counted in optimiser steps) or the training."""
    return step == total or step % (steps_per_epoch * every) == 0


def probe_name(url: str) -> str:
    """The column name of a probe set: ``probe/`` + its folder name (as ``crisscross eval`` names it)."""
    from crisscross.eval.protocols import dataset_name   # here: keeps scikit-learn off the import path

    return PROBE_PREFIX + dataset_name([url])


def resolve_modality(url: str, modality: str) -> str:
    """``modality``, or for ``auto`` the one the shards have: video when their first sample has
    frames, audio otherwise (ESC-50-like audio-only sets). Raises ValueError for empty shards."""
    if not shard_urls(url):
        raise ValueError(f"--probe {url} holds no shards; build a labelled set with "
                         "avshards build --dataset NAME (docs/datasets.md)")
    if modality != "auto":
        return modality
    clips = open_shards(url)
    first = next(clips, None)
    clips.close()                               # one sample is enough: stop the stream
    if first is None:
        raise ValueError(f"--probe {url} holds no samples; build a labelled set with avshards build --dataset NAME")
    return "video" if first.num_frames > 0 else "audio"


def probe_accuracy(model: nn.Module, url: str, modality: str, train_clips: int, test_clips: int,
                   device: str, seed: int = 0) -> float:
    """Top-1 video accuracy (a fraction) of a linear SVM on the frozen ``modality`` backbone of
    ``model`` (a CrissCross, not DDP-wrapped), trained on the shards' ``train`` split and tested on
    ``test`` (eval's protocol with ``train_clips`` / ``test_clips`` clips per video).

    ``model`` gets its training mode back and the global RNGs (torch, CUDA, numpy, python) their
    state, whatever happens inside."""
    # here, not at the top: the protocols need scikit-learn, which a run without probes never loads
    from crisscross.eval.features import protocol_spec
    from crisscross.eval.protocols import Extraction, linear_eval

    backbones = {"video": model.video_backbone, "audio": model.audio_backbone}
    spec = protocol_spec(f"{modality}_linear", modality)
    how = Extraction(None, train_clips=train_clips, test_clips=test_clips, device=str(device), seed=seed,
                     progress=False)
    was_training, state = model.training, rng_state()
    model.eval()   # batch norm on its running statistics, as a frozen backbone is evaluated
    try:
        report, _, _ = linear_eval(backbones, [url], spec, how)
    finally:
        model.train(was_training)
        set_rng_state(state)
    return float(report["accuracy"])


def run_probes(model: nn.Module, probes: dict[str, str], *, train_clips: int, test_clips: int, device: str,
               seed: int, rank: int, world: int, epoch: int, step: int) -> dict[str, float]:
    """Rank 0 runs the probe of every ``probes`` url (-> modality) on ``model``'s current backbones
    and prints each accuracy; the other ranks wait at a barrier. {"probe/NAME": top-1}. A probe set
    the protocol cannot use is reported and skipped: it must not end the training."""
    out = {}
    for url, modality in probes.items() if rank == 0 else ():
        name = probe_name(url)
        try:
            out[name] = probe_accuracy(model, url, modality, train_clips, test_clips, device, seed)
        except EvalError as e:
            click.echo(f"{name} skipped at step {step}: {e}", err=True)
            continue
        tqdm.write(f"{name} ({modality}): top-1 {out[name]:.1%} after epoch {epoch + 1} (step {step})")
    if world > 1:
        dist.barrier()
    return out
