"""`crisscross train`: the command's options become one :class:`crisscross.config.TrainConfig`
(a preset plus overrides), handed to :func:`crisscross.train.train`."""

from __future__ import annotations

import click

from crisscross.config import AMP_CHOICES, PRESETS, PROBE_MODALITIES, describe_presets, preset_config
from crisscross.data.choices import BACKENDS, MODES, TEMPORAL_CONSISTENCY
from crisscross.models import PREDICTORS, SIZES
from crisscross.monitor import TrainingDiverged
from crisscross.paper import AUDIO_AUG_CODES, PRETRAIN_AUDIO_AUGS, PRETRAIN_VIDEO_AUGS, VIDEO_AUG_CODES
from crisscross.train import train

TRAIN_HELP = f"""Pretrain CrissCross on the clips of SHARDS (avshards shards: a local folder, a brace
pattern, or an http(s):// / s3:// URL).

\b
Examples:
  crisscross train shards/ --preset tiny-cpu --out runs/tiny            # minutes on a laptop CPU
  crisscross train shards/ --preset kinetics-sound --out runs/ks --workers 10
  torchrun --nproc_per_node 8 --no-python crisscross train s3://bucket/ks/ \\
      --preset kinetics-sound --out runs/ks                             # 8 GPUs, DDP, SyncBN
  crisscross train shards/ --out runs/ks --resume auto                  # continue exactly
  crisscross train shards/ --terms sync,intra --out runs/ablation       # a Table 1 row
  crisscross train shards/ --preset kinetics-sound --predictor shared   # a Table 3 row
  crisscross train shards/ --video-aug MSC,HF,CJ,GS --audio-aug VJ,M \\
      --temporal-consistency frame --out runs/aug                        # Table 5 / Sec. 4.5 ablations

\b
Presets (paper Table S10, and ours for CPUs); options override them:
{describe_presets()}

--batch-size is the global batch of one optimiser step (all GPUs, all accumulated micro-batches).
The run folder gets checkpoint.pt (every --checkpoint-every steps and at the end), log.csv,
tb/ (TensorBoard) and loss.png. Clips without audio are skipped and counted in the summary."""


def _split_terms(ctx, param, value):  # noqa: ANN001 - click callback
    return tuple(t.strip() for t in value.replace("+", ",").split(",") if t.strip()) if value else None


def _split_augs(ctx, param, value):  # noqa: ANN001 - click callback
    """"MSC,HF,CJ" (or "MSC-HF-CJ" as Table 5 writes it) -> codes; "none" -> no augmentation."""
    if value is None:
        return None
    return () if value.strip().lower() == "none" else _split_terms(ctx, param, value.replace("-", ","))


@click.command("train", help=TRAIN_HELP)
@click.argument("shards")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="tiny-cpu", show_default=True,
              help="Starting values (see the table above); every option below overrides one.")
@click.option("--out", default="runs/crisscross", show_default=True,
              help="Run folder: checkpoint.pt, log.csv, tb/, loss.png.")
@click.option("--steps", type=int, help="Total optimiser steps (overrides --epochs).")
@click.option("--epochs", type=int, help="Epochs of --epoch-size clips each.")
@click.option("--epoch-size", type=int, help="Clips per epoch; 0 = every clip of SHARDS once.")
@click.option("--batch-size", type=int, help="Global batch per optimiser step.")
@click.option("--lr", type=float, help="Backbone + projector LR after warm-up (cosine from there; "
                                      "--terms v1v2 / a1a2 alone: Appendix G.1's by default).")
@click.option("--lr-end", type=float, help="Backbone LR at the end of the cosine.")
@click.option("--lr-predictor", type=float, help="Constant predictor LR (default: 10x --lr, Sec. 4.4).")
@click.option("--weight-decay", type=float, help="Adam weight decay.")
@click.option("--warmup-epochs", type=float, help="Linear warm-up length in epochs (per-iteration).")
@click.option("--larc/--no-larc", default=None, help="Wrap Adam in LARC (clip mode), for large batches.")
@click.option("--accumulate", type=int, help="Micro-batches per optimiser step (gradient accumulation).")
@click.option("--terms", callback=_split_terms,
              help="Loss terms, comma-separated groups (intra, sync, async) and/or pairs "
                   "(v1v2, a1a2, v1a1, v2a2, v1a2, a1v2). Default: intra,sync,async.")
@click.option("--model", type=click.Choice(list(SIZES)),
              help="Network size: paper (R(2+1)D-18 + ResNet-18, 49.7M parameters; every paper preset) or "
                   "tiny (ours, 1.2M, the tiny-cpu preset's).")
@click.option("--projector-layers", type=click.IntRange(1), help="Layers per projector: 3 (paper) or 2 (Table 3).")
@click.option("--predictor", type=click.Choice(PREDICTORS),
              help="One predictor per modality (separate, paper) or one for both fed l2-normalised "
                   "projections (shared, Table 3).")
@click.option("--mode", type=click.Choice(MODES), help="Relaxation of the two views in time (default mild).")
@click.option("--video-aug", callback=_split_augs,
              help=f"Video augmentations, a Table 5 subset of {','.join(VIDEO_AUG_CODES)} (multi-scale crop, "
                   "horizontal flip, colour jitter, gray scale, gaussian blur, cutout) or none; without MSC a "
                   f"view is the eval-style resize + centre crop. Default: {','.join(PRETRAIN_VIDEO_AUGS)}.")
@click.option("--audio-aug", callback=_split_augs,
              help=f"Audio augmentations, a Table 5 subset of {','.join(AUDIO_AUG_CODES)} (volume jitter, "
                   f"time + frequency masks, random crop, time warp) or none. Default: {','.join(PRETRAIN_AUDIO_AUGS)}.")
@click.option("--temporal-consistency", type=click.Choice(TEMPORAL_CONSISTENCY),
              help="Spatial augmentations drawn once per view (default) or per frame (Sec. 4.5's "
                   "temporally random row).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Augmentation backend (default torch).")
@click.option("--device", help="cpu, cuda, cuda:N or auto (default: the preset's).")
@click.option("--amp", type=click.Choice(AMP_CHOICES), help="Mixed precision on GPU (auto: bf16 if supported).")
@click.option("--sync-bn/--no-sync-bn", default=None,
              help="SyncBatchNorm across ranks under torchrun (default on, as the official code).")
@click.option("--workers", type=int, help="DataLoader worker processes per rank.")
@click.option("--seed", type=int, help="Seed of weights, view sampling and augmentation.")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints (plus one at the end).")
@click.option("--log-every", type=int, help="Steps between log.csv / TensorBoard rows.")
@click.option("--probe", multiple=True,
              help="Labelled shards (train/test json splits, e.g. from avshards build --dataset) for a "
                   "linear-SVM probe of the current backbones at epoch ends, logged as probe/NAME; repeatable.")
@click.option("--probe-every", type=int, help="Epochs between probes (default 1; one more at the end).")
@click.option("--probe-modality", type=click.Choice(PROBE_MODALITIES),
              help="Backbone the probe evaluates (default auto: video if the shards have frames, else audio).")
@click.option("--probe-train-clips", type=int, help="Clips per training video in the probe (default 2).")
@click.option("--probe-test-clips", type=int, help="Clips per test video in the probe (default 1).")
@click.option("--resume", help="Continue from a checkpoint file, a run folder, or 'auto' (the latest in --out).")
@click.option("--stop-after", type=int, help="Stop with a checkpoint once this many steps are done "
                                              "(e.g. a job time limit); resume later with --resume auto.")
@click.option("--deterministic", is_flag=True, help="Use deterministic algorithms only (slower; bit-exact reruns).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(shards: str, preset: str, resume: str | None, stop_after: int | None,
                  deterministic: bool, quiet: bool, epoch_size: int | None, **overrides) -> None:
    """`crisscross train` (help text in TRAIN_HELP)."""
    try:
        config = preset_config(preset, shards=shards, epoch_size=epoch_size or None, **overrides)
        if epoch_size == 0:
            config.epoch_size = None
        result = train(config, resume=resume, stop_after=stop_after, progress=not quiet,
                       deterministic=deterministic)
    # User-fixable (bad path or option, unreachable shards, DALI missing, divergence): the message says how.
    except (TrainingDiverged, ValueError, OSError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    if result.checkpoint is not None:  # rank 0 only
        click.echo(result.summary())
