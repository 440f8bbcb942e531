"""Frozen-backbone features for evaluation (appendix E.1 / E.3): several clips per video, max pooled.

Stages, each a small function: pick clip start times (random for training, uniform for testing) ->
cut and transform the clip inputs (the eval-train augmentations of Tables S3/S4, or none) ->
run the frozen backbone in batches -> max-pool the conv5 map -> flatten. The result is a
:class:`~crisscross.eval.svm.ClipFeatures` (one row per clip, grouped by source video), cached on
disk under a hash of everything that defines it (checkpoint, shards, settings).

A "video" is a source video: ``avshards build`` may cut a long one into several samples; their
clips are grouped by the ``source_id`` in each sample's json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from avshards.format import AVClip
from avshards.reader import open_shards, shard_urls
from crisscross import paper
from crisscross.eval.errors import EvalError
from crisscross.eval.svm import ClipFeatures

CACHE_VERSION = 1
# official-code.md: video conv5 -> max-pool (1,4,4) -> 8192-d; at the paper's 224^2 input (conv5
# 1x7x7) that size needs stride 1. Other protocols give a stride (audio) or use the kernel as stride.
VIDEO_LINEAR_STRIDE = (1, 1, 1)
MODALITIES = ("video", "audio")


@dataclass(frozen=True)
class ClipSpec:
    """What one clip of one modality is, and how its conv5 map is pooled."""

    modality: str                                   # "video" or "audio"
    frames: int = paper.VIDEO_FRAMES
    crop_size: int = paper.CROP_SIZE
    audio_seconds: float = paper.AUDIO_SECONDS
    pool: tuple[int, ...] = (1, 4, 4)
    pool_stride: tuple[int, ...] | None = None      # None: the kernel (torch's default)

    @property
    def seconds(self) -> float:
        """Length of the clip's window in the source."""
        return self.frames / paper.FPS if self.modality == "video" else self.audio_seconds


def protocol_spec(protocol: str, modality: str, frames: int | None = None, crop_size: int | None = None,
                  audio_seconds: float | None = None) -> ClipSpec:
    """The :class:`ClipSpec` of a protocol of :data:`crisscross.paper.EVAL`, with optional overrides."""
    p = paper.EVAL[protocol]
    stride = p.pool_stride
    if stride is None and protocol in ("video_linear", "retrieval"):
        stride = VIDEO_LINEAR_STRIDE
    return ClipSpec(modality, frames or p.frames, crop_size or paper.CROP_SIZE,
                    audio_seconds or p.audio_seconds, p.pool, stride)


# --- clip times -----------------------------------------------------------------------------------
def clip_starts(duration: float, window: float, n: int, augment: bool, rng: np.random.Generator) -> np.ndarray:
    """``n`` start times (seconds): uniform random when augmenting, evenly spaced otherwise."""
    last = max(0.0, duration - window)
    if augment:
        return np.sort(rng.uniform(0.0, last, n))
    return np.linspace(0.0, last, n)


def clip_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, clip key): features do not depend on read order."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def duration(clip: AVClip, modality: str) -> float:
    """Seconds of ``clip`` available to ``modality``."""
    if modality == "video":
        return clip.num_frames / clip.fps
    return clip.num_samples / clip.sample_rate


# --- inputs ---------------------------------------------------------------------------------------
def video_inputs(clip: AVClip, starts: np.ndarray, spec: ClipSpec, augment: bool,
                 rng: np.random.Generator) -> torch.Tensor:
    """Clips of ``spec.frames`` frames from each start -> float [n, 3, T, S, S] (short clips repeat
    their last frame)."""
    from crisscross.data import augment as aug
    from crisscross.data.params import draw_video_params

    if clip.num_frames == 0:
        raise EvalError(f"sample {clip.key!r} has no video frames; evaluate it with --modality audio")
    first = np.round(starts * clip.fps).astype(int)
    clips = [torch.from_numpy(clip.frames(np.minimum(f + np.arange(spec.frames), clip.num_frames - 1).tolist()))
             for f in first]
    if augment:
        settings = dataclasses.replace(paper.VIDEO_AUG_EVAL_TRAIN, crop_size=spec.crop_size)
        h, w = clips[0].shape[1:3]
        params = [draw_video_params(rng, h, w, settings) for _ in clips]
        return aug.augment_video_batch(clips, params, settings)
    settings = dataclasses.replace(paper.VIDEO_AUG, crop_size=spec.crop_size)
    # Resize the short side by the same ratio as the paper's 112 -> 128 (centre crop = 87.5%).
    resize = round(spec.crop_size * paper.EVAL_RESIZE / paper.CROP_SIZE)
    return aug.eval_video_batch(clips, settings, resize)


def audio_inputs(clip: AVClip, starts: np.ndarray, spec: ClipSpec, augment: bool,
                 rng: np.random.Generator) -> torch.Tensor:
    """Log-mels of ``spec.audio_seconds`` from each start -> [n, 1, 80, steps] (zero-padded when the
    clip is shorter; silence when it has no audio)."""
    from crisscross.data import augment as aug
    from crisscross.data.params import draw_audio_params

    length = int(round(spec.audio_seconds * clip.sample_rate))
    waves = torch.zeros(len(starts), length)
    for i, t in enumerate(starts):
        a = clip.audio(int(round(t * clip.sample_rate)), length)
        waves[i, :len(a)] = torch.from_numpy(a.copy())
    if augment:
        settings = paper.AUDIO_AUG_EVAL_TRAIN
        steps = length // settings.hop_length + 1
        params = [draw_audio_params(rng, settings.n_mels, steps, settings) for _ in starts]
        return aug.augment_audio_batch(waves, params, settings, clip.sample_rate)
    return aug.eval_audio(waves, paper.AUDIO_AUG, clip.sample_rate)


INPUTS = {"video": video_inputs, "audio": audio_inputs}


# --- backbone -------------------------------------------------------------------------------------
def pooled(backbone: nn.Module, x: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """conv5 map of ``x`` -> max pool (``spec.pool``, ``spec.pool_stride``) -> [B, dim]."""
    fmap = backbone.features(x)
    pool = F.max_pool3d if fmap.dim() == 5 else F.max_pool2d
    kernel = tuple(min(k, s) for k, s in zip(spec.pool, fmap.shape[2:]))   # never larger than the map
    return pool(fmap, kernel, spec.pool_stride or kernel).flatten(1)


def load_backbones(checkpoint: str | None, device: str | torch.device = "cpu", seed: int = 0,
                   like: str | None = None) -> dict[str, nn.Module]:
    """The frozen video and audio backbones of ``checkpoint``; "random" or None gives the
    random-initialisation baseline (seeded, so it is the same network every time) of the
    architecture of ``like`` (a checkpoint), or of the paper's model."""
    from crisscross.export import load_model_or_random

    try:
        model = load_model_or_random(checkpoint, seed, like)
    except (FileNotFoundError, ValueError) as e:
        raise EvalError(str(e)) from None
    out = {"video": model.video_backbone, "audio": model.audio_backbone}
    for m in out.values():
        m.eval().requires_grad_(False).to(device)
    return out


# --- extraction -----------------------------------------------------------------------------------
def split_clips(url: str, split: str | None) -> Iterator[AVClip]:
    """The clips of ``url`` whose json ``split`` is ``split`` (all when None)."""
    for clip in open_shards(url):
        if split is None or clip.split == split:
            yield clip


def video_id(clip: AVClip) -> str:
    """The source video a sample was cut from (samples of one video share it)."""
    return str(clip.meta.get("source_id") or clip.meta.get("source") or clip.key)


class ClipInputs(IterableDataset):
    """The model inputs of every sample of a split: ``(video id, label, {modality: [n, ...]})``.

    Shards are divided among DataLoader workers (decoding and augmenting are the slow part); the
    clips of a sample depend only on (seed, sample key), never on which worker read it.
    """

    def __init__(self, url: str, split: str | None, specs: Sequence[ClipSpec], clips_per_video: int,
                 augment: bool, seed: int = 0) -> None:
        self.urls, self.split, self.specs = shard_urls(url), split, list(specs)
        self.clips_per_video, self.augment, self.seed = clips_per_video, augment, seed

    def inputs(self, clip: AVClip) -> dict[str, torch.Tensor]:
        """The ``clips_per_video`` inputs of one sample for each modality, from shared start times."""
        rng = clip_rng(self.seed, clip.key)
        # A clip without audio still gets (silent) audio inputs; its frames set the duration.
        dur = min((duration(clip, s.modality) for s in self.specs if s.modality == "video" or clip.has_audio),
                  default=0.0)
        starts = clip_starts(dur, max(s.seconds for s in self.specs), self.clips_per_video, self.augment, rng)
        return {s.modality: INPUTS[s.modality](clip, starts, s, self.augment, rng) for s in self.specs}

    def __iter__(self) -> Iterator[tuple[str, str, dict[str, torch.Tensor]]]:
        info = get_worker_info()
        urls = self.urls if info is None else self.urls[info.id::info.num_workers]
        for u in urls:
            for clip in open_shards(u):
                if self.split is None or clip.split == self.split:
                    yield video_id(clip), str(clip.label), self.inputs(clip)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)     # workers run side by side; intra-op threads would oversubscribe


def extract(url: str, split: str | None, backbones: dict[str, nn.Module], specs: Sequence[ClipSpec],
            clips_per_video: int, augment: bool, batch_size: int = 32, seed: int = 0,
            device: str | torch.device = "cpu", progress: bool = True, workers: int = 0
            ) -> dict[str, ClipFeatures]:
    """Features of every clip of ``split`` for each spec's modality, from the same start times.

    Returns ``{modality: ClipFeatures}`` with videos sorted by id; row ``i`` of each modality is the
    same clip window. ``workers`` > 0 decodes and transforms clips in that many processes.
    """
    data = ClipInputs(url, split, specs, clips_per_video, augment, seed)
    stream = data if workers == 0 else DataLoader(data, batch_size=None, num_workers=workers,
                                                  worker_init_fn=_one_thread)
    keys: dict[str, int] = {}
    labels: list[str] = []
    rows: dict[str, list[np.ndarray]] = {s.modality: [] for s in specs}
    pending: dict[str, list[torch.Tensor]] = {s.modality: [] for s in specs}
    video: list[int] = []

    def flush() -> None:
        for s in specs:
            if pending[s.modality]:
                x = torch.cat(pending[s.modality]).to(device)
                with torch.inference_mode():
                    rows[s.modality].append(pooled(backbones[s.modality], x, s).float().cpu().numpy())
                pending[s.modality].clear()

    desc = f"features {'+'.join(s.modality for s in specs)} {split or ''}".strip()
    for vid_key, label, inputs in tqdm(stream, disable=not progress, unit="sample", desc=desc):
        vid = keys.setdefault(vid_key, len(keys))
        if vid == len(labels):
            labels.append(label)
        for s in specs:
            pending[s.modality].append(inputs[s.modality])
        video += [vid] * clips_per_video
        if sum(len(p) for p in pending[specs[0].modality]) >= batch_size:
            flush()
    flush()
    if not keys:
        raise EvalError(f"no samples with split {split!r} in {url}; build the shards with a dataset "
                        "adapter (avshards build --dataset NAME) or pass the right --train-split/--test-split")
    feats = {s.modality: ClipFeatures(np.concatenate(rows[s.modality]), np.asarray(video), list(keys), labels)
             for s in specs}
    # Sorted by video id: the same features in the same order whatever the workers' interleaving.
    order = np.argsort(np.asarray(list(keys)), kind="stable")
    return {m: f.subset(order) for m, f in feats.items()}


# --- cache ----------------------------------------------------------------------------------------
def _file_id(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def cache_key(checkpoint: str | None, url: str, split: str | None, specs: Sequence[ClipSpec],
              clips_per_video: int, augment: bool, seed: int, network: Sequence = ()) -> str:
    """A hash of everything that defines a feature set (files by path, size and modification time;
    ``network`` tells random initialisations of different architectures apart)."""
    ckpt = ["random", seed, list(network)] if checkpoint in (None, "random") else _file_id(
        os.path.join(checkpoint, "checkpoint.pt") if os.path.isdir(checkpoint)
        and os.path.exists(os.path.join(checkpoint, "checkpoint.pt")) else checkpoint)
    urls = shard_urls(url)
    shards = [_file_id(u) if os.path.exists(u) else u for u in urls]
    blob = json.dumps([CACHE_VERSION, ckpt, shards, split, [dataclasses.asdict(s) for s in specs],
                       clips_per_video, augment, seed], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def save_features(path: Path, feats: dict[str, ClipFeatures]) -> None:
    """Write features atomically (a killed run never leaves a half cache file)."""
    first = next(iter(feats.values()))
    arrays = {f"x_{m}": f.features for m, f in feats.items()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, video=first.video, keys=np.asarray(first.keys), labels=np.asarray(first.labels), **arrays)
    os.replace(tmp, path)


def load_features(path: Path) -> dict[str, ClipFeatures]:
    with np.load(path) as z:
        keys, labels, video = list(z["keys"]), list(z["labels"]), z["video"]
        return {name[2:]: ClipFeatures(z[name], video, [str(k) for k in keys], [str(c) for c in labels])
                for name in z.files if name.startswith("x_")}


def cached_extract(cache_dir: str | os.PathLike | None, checkpoint: str | None, url: str,
                   split: str | None, backbones: dict[str, nn.Module], specs: Sequence[ClipSpec],
                   clips_per_video: int, augment: bool, seed: int = 0, **kw) -> dict[str, ClipFeatures]:
    """:func:`extract`, reusing ``cache_dir/features-HASH.npz`` when it exists (no cache when None)."""
    if cache_dir is None:
        return extract(url, split, backbones, specs, clips_per_video, augment, seed=seed, **kw)
    network = [(m, sum(p.numel() for p in b.parameters())) for m, b in sorted(backbones.items())]
    key = cache_key(checkpoint, url, split, specs, clips_per_video, augment, seed, network)
    path = Path(cache_dir) / f"features-{split or 'all'}-{key}.npz"
    if path.exists():
        return load_features(path)
    feats = extract(url, split, backbones, specs, clips_per_video, augment, seed=seed, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_features(path, feats)
    return feats
