"""Frozen-backbone features for evaluation (appendix E.1 / E.3): several clips per video, max pooled.

Stages, each a small function: pick clip start times (random for training, uniform for testing) ->
cut the clips (the JPEG bytes of their frames, their audio samples and, for training, the drawn
parameters of the eval-train augmentations of Tables S3/S4) -> decode and transform a batch of
cuts on the device (nvJPEG and GPU augmentation on CUDA, as the training loader does) -> run the
frozen backbone on full batches -> max-pool the conv5 map -> flatten. The result is a
:class:`~crisscross.eval.svm.ClipFeatures` (one row per clip, grouped by source video), cached on
disk under a hash of everything that defines it (checkpoint, shards, settings).

A "video" is a source video: ``avshards build`` may cut a long one into several samples; their
clips are grouped by the ``source_id`` in each sample's json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

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

log = logging.getLogger(__name__)

CACHE_VERSION = 2          # 2: frames decoded with torchvision (nvJPEG on CUDA), not PIL
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
    return ClipSpec(modality, frames or p.frames, crop_size or p.crop_size,
                    audio_seconds or p.audio_seconds, p.pool, stride)


def upscale_warning(height: int, width: int, spec: ClipSpec, where: str) -> str | None:
    """The warning for frames too small for ``spec``'s crop (None when they are large enough)."""
    need = paper.eval_short_side(spec.crop_size)
    if spec.modality != "video" or min(height, width) >= need:
        return None
    return (f"the frames of {where} have short side {min(height, width)}, smaller than the {need} that "
            f"{spec.crop_size}^2 crops are taken from: they are upscaled (blurrier than the paper's inputs). "
            f"Build the set with `avshards build --short-side {need}` (or pass --crop-size "
            f"{paper.CROP_SIZE} for the pretraining resolution).")


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


# --- cuts: what a worker reads (bytes, samples, drawn parameters); no decoding --------------------
class VideoCut(NamedTuple):
    """Clips of one sample before decoding: the distinct JPEGs they need and which frames each takes."""

    jpegs: tuple[bytes, ...]            # distinct frames, in frame order
    index: np.ndarray                   # [clips, frames] positions in ``jpegs``
    size: tuple[int, int]               # (height, width) of the frames
    params: tuple | None                # VideoAugParams per clip; None: the evaluation transform


class AudioCut(NamedTuple):
    """Audio of clips of one sample: int16 windows, zero-padded past the end (silence without audio)."""

    pcm: np.ndarray                     # int16 [clips, samples]
    sample_rate: int
    params: tuple | None                # AudioAugParams per clip; None: no augmentation


def cut_video(clip: AVClip, starts: np.ndarray, spec: ClipSpec, augment: bool,
              rng: np.random.Generator | None) -> VideoCut:
    """The JPEG bytes of ``spec.frames`` frames from each start (short clips repeat their last frame)
    and, when augmenting, one drawn parameter set per clip."""
    from crisscross.data.selection import frame_size
    from crisscross.data.params import draw_video_params

    if clip.num_frames == 0:
        raise EvalError(f"sample {clip.key!r} has no video frames; evaluate it with --modality audio")
    first = np.round(np.asarray(starts) * clip.fps).astype(int)
    frames = np.minimum(first[:, None] + np.arange(spec.frames), clip.num_frames - 1)
    distinct, index = np.unique(frames, return_inverse=True)
    size = frame_size(clip)
    params = None
    if augment:
        settings = dataclasses.replace(paper.VIDEO_AUG_EVAL_TRAIN, crop_size=spec.crop_size)
        params = tuple(draw_video_params(rng, *size, settings) for _ in starts)
    return VideoCut(tuple(clip.jpeg(distinct.tolist())), index.reshape(frames.shape), size, params)


def cut_audio(clip: AVClip, starts: np.ndarray, spec: ClipSpec, augment: bool,
              rng: np.random.Generator | None) -> AudioCut:
    """``spec.audio_seconds`` of int16 samples from each start and, when augmenting, their parameters."""
    from crisscross.data.selection import audio_window
    from crisscross.data.params import draw_audio_params

    sample_rate = clip.sample_rate
    length = int(round(spec.audio_seconds * sample_rate))
    pcm = np.stack([audio_window(clip, int(round(t * sample_rate)), length) for t in starts])
    params = None
    if augment:
        settings = paper.AUDIO_AUG_EVAL_TRAIN
        steps = length // settings.hop_length + 1
        params = tuple(draw_audio_params(rng, settings.n_mels, steps, settings) for _ in starts)
    return AudioCut(pcm, sample_rate, params)


def _params(cuts: Sequence[Any]) -> list | None:
    """The clips' parameters in order, or None when no cut is augmented (never a mix of both)."""
    if all(c.params is None for c in cuts):
        return None
    if any(c.params is None for c in cuts):
        raise ValueError("a batch mixes augmented and evaluation clips")
    return [p for c in cuts for p in c.params]


def video_batch(cuts: Sequence[VideoCut], spec: ClipSpec, device: str | torch.device = "cpu") -> torch.Tensor:
    """Decode (one nvJPEG batch on CUDA) and transform cuts -> float [clips, 3, T, S, S] on ``device``."""
    from crisscross.data import augment as aug
    from crisscross.data.loader import decode_jpegs

    frames = decode_jpegs([j for c in cuts for j in c.jpegs], device)
    clips, first = [], 0
    for c in cuts:
        own = frames[first:first + len(c.jpegs)]
        first += len(c.jpegs)
        clips += [torch.stack([own[j] for j in row]) for row in c.index]
    params = _params(cuts)
    if params is not None:
        settings = dataclasses.replace(paper.VIDEO_AUG_EVAL_TRAIN, crop_size=spec.crop_size)
        return aug.augment_video_batch(clips, params, settings)
    settings = dataclasses.replace(paper.VIDEO_AUG, crop_size=spec.crop_size)
    return aug.eval_video_batch(clips, settings, paper.eval_short_side(spec.crop_size))


def audio_batch(cuts: Sequence[AudioCut], spec: ClipSpec, device: str | torch.device = "cpu") -> torch.Tensor:
    """Log-mels of cuts -> [clips, 1, 80, steps] on ``device`` (augmented when the cuts carry parameters)."""
    from crisscross.data import augment as aug

    waves = torch.from_numpy(np.concatenate([c.pcm for c in cuts])).to(device, non_blocking=True).float() / 32768.0
    params, rate = _params(cuts), cuts[0].sample_rate
    if params is not None:
        return aug.augment_audio_batch(waves, params, paper.AUDIO_AUG_EVAL_TRAIN, rate)
    return aug.eval_audio(waves, paper.AUDIO_AUG, rate)


CUTS: dict[str, Callable] = {"video": cut_video, "audio": cut_audio}
BATCHES: dict[str, Callable] = {"video": video_batch, "audio": audio_batch}


def video_inputs(clip: AVClip, starts: np.ndarray, spec: ClipSpec, augment: bool,
                 rng: np.random.Generator | None) -> torch.Tensor:
    """One sample's video clips on the CPU -> float [n, 3, T, S, S]."""
    return video_batch([cut_video(clip, starts, spec, augment, rng)], spec)


def audio_inputs(clip: AVClip, starts: np.ndarray, spec: ClipSpec, augment: bool,
                 rng: np.random.Generator | None) -> torch.Tensor:
    """One sample's log-mels on the CPU -> [n, 1, 80, steps]."""
    return audio_batch([cut_audio(clip, starts, spec, augment, rng)], spec)


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


def decodes_in_workers(device: str | torch.device) -> bool:
    """Whether clips are decoded where they are read (CPU) or batched onto the device (CUDA: nvJPEG)."""
    return torch.device(device).type == "cpu"


class SampleClips(NamedTuple):
    """What the reading side hands over for one sample."""

    video: str                           # source video id
    label: str
    size: tuple[int, int] | None         # frame (height, width); None without a video spec
    inputs: dict[str, Any]               # modality -> cut, or the decoded tensor [clips, ...]


class ClipInputs(IterableDataset):
    """The clips of every sample of a split: :class:`SampleClips`, cut (``decode=False``) or decoded
    and transformed on the CPU (``decode=True``, in the DataLoader workers).

    Shards are divided among DataLoader workers; the clips of a sample depend only on (seed, sample
    key), never on which worker read it.
    """

    def __init__(self, url: str, split: str | None, specs: Sequence[ClipSpec], clips_per_video: int,
                 augment: bool, seed: int = 0, decode: bool = True) -> None:
        self.urls, self.split, self.specs = shard_urls(url), split, list(specs)
        self.clips_per_video, self.augment, self.seed, self.decode = clips_per_video, augment, seed, decode

    def cuts(self, clip: AVClip) -> dict[str, Any]:
        """The ``clips_per_video`` cuts of one sample for each modality, from shared start times."""
        rng = clip_rng(self.seed, clip.key)
        # A clip without audio still gets (silent) audio inputs; its frames set the duration.
        dur = min((duration(clip, s.modality) for s in self.specs if s.modality == "video" or clip.has_audio),
                  default=0.0)
        starts = clip_starts(dur, max(s.seconds for s in self.specs), self.clips_per_video, self.augment, rng)
        return {s.modality: CUTS[s.modality](clip, starts, s, self.augment, rng) for s in self.specs}

    def sample(self, clip: AVClip) -> SampleClips:
        cuts = self.cuts(clip)
        size = cuts["video"].size if "video" in cuts else None
        if self.decode:
            cuts = {s.modality: BATCHES[s.modality]([cuts[s.modality]], s) for s in self.specs}
        return SampleClips(video_id(clip), str(clip.label), size, cuts)

    def __iter__(self) -> Iterator[SampleClips]:
        info = get_worker_info()
        urls = self.urls if info is None else self.urls[info.id::info.num_workers]
        for u in urls:
            for clip in open_shards(u):
                if self.split is None or clip.split == self.split:
                    yield self.sample(clip)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)     # workers run side by side; intra-op threads would oversubscribe


def _as_is(item: Any) -> Any:
    return item                  # cuts keep their numpy arrays and bytes (no conversion to tensors)


def sample_stream(data: IterableDataset, workers: int) -> Iterable:
    """``data`` itself, or its items read by ``workers`` DataLoader processes (one item at a time)."""
    if workers == 0:
        return data
    return DataLoader(data, batch_size=None, num_workers=workers, worker_init_fn=_one_thread,
                      collate_fn=_as_is)


def clip_count(x: Any) -> int:
    """Clips in a cut or a decoded batch."""
    return len(x.index) if isinstance(x, VideoCut) else len(x.pcm) if isinstance(x, AudioCut) else len(x)


class Batcher:
    """Collects samples' clips and runs ``forward[modality]`` on full batches of ``batch_size`` clips
    (clips of several samples per batch, never a forward pass per sample); outputs stay in order."""

    def __init__(self, specs: Sequence[ClipSpec], forward: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                 batch_size: int, device: str | torch.device) -> None:
        if batch_size < 1:
            raise EvalError(f"--batch-size {batch_size} must be at least 1")
        self.specs, self.forward, self.batch_size, self.device = list(specs), forward, batch_size, device
        self.pending: dict[str, list] = {s.modality: [] for s in specs}     # cuts or CPU tensors
        self.carry: dict[str, list[torch.Tensor]] = {s.modality: [] for s in specs}  # decoded, on device
        self.counts = {s.modality: 0 for s in specs}
        self.outputs: dict[str, list[np.ndarray]] = {s.modality: [] for s in specs}
        self.batch_sizes: list[int] = []                   # clips of each forward pass

    def add(self, inputs: dict[str, Any]) -> None:
        """Queue one sample's clips (cuts or decoded tensors); run the full batches now available."""
        for s in self.specs:
            self.pending[s.modality].append(inputs[s.modality])
            self.counts[s.modality] += clip_count(inputs[s.modality])
        self._run(final=False)

    def finish(self) -> dict[str, np.ndarray]:
        """Run what is left; every modality's outputs, one row per clip in the order added."""
        self._run(final=True)
        return {m: np.concatenate(o) if o else np.zeros((0, 0), np.float32) for m, o in self.outputs.items()}

    def _run(self, final: bool) -> None:
        for s in self.specs:
            m = s.modality
            if self.counts[m] < self.batch_size and not (final and self.counts[m]):
                continue
            fresh = self.pending[m]
            if fresh and not isinstance(fresh[0], torch.Tensor):     # cuts: one decode for all of them
                fresh = [BATCHES[m](fresh, s, self.device)]
            x = torch.cat([*self.carry[m], *(t.to(self.device, non_blocking=True) for t in fresh)])
            cut = len(x) if final else len(x) // self.batch_size * self.batch_size
            with torch.inference_mode():
                for b in x[:cut].split(self.batch_size):
                    self.outputs[m].append(self.forward[m](b).float().cpu().numpy())
                    self.batch_sizes.append(len(b))
            self.pending[m], self.carry[m] = [], ([x[cut:]] if cut < len(x) else [])
            self.counts[m] = len(x) - cut


def clip_outputs(url: str, split: str | None, specs: Sequence[ClipSpec],
                 forward: dict[str, Callable[[torch.Tensor], torch.Tensor]], clips_per_video: int,
                 augment: bool, batch_size: int = 32, seed: int = 0, device: str | torch.device = "cpu",
                 progress: bool = True, workers: int = 0, desc: str = "clips") -> dict[str, ClipFeatures]:
    """``forward[modality]`` of every clip of ``split``, in full batches, for each spec's modality.

    Returns ``{modality: ClipFeatures}`` (the outputs as features) with videos sorted by id; row ``i``
    of each modality is the same clip window. Clips are decoded in the ``workers`` on a CPU device,
    and as one batch on the device (nvJPEG) on CUDA.
    """
    data = ClipInputs(url, split, specs, clips_per_video, augment, seed, decode=decodes_in_workers(device))
    batcher = Batcher(specs, forward, batch_size, device)
    keys: dict[str, int] = {}
    labels: list[str] = []
    video: list[int] = []
    warned = False
    for item in tqdm(sample_stream(data, workers), disable=not progress, unit="sample", desc=desc):
        vid = keys.setdefault(item.video, len(keys))
        if vid == len(labels):
            labels.append(item.label)
        if item.size is not None and not warned:
            message = upscale_warning(*item.size, next(s for s in specs if s.modality == "video"), url)
            if message:
                log.warning(message)
                warned = True
        batcher.add(item.inputs)
        video += [vid] * clips_per_video
    rows = batcher.finish()
    if not keys:
        raise EvalError(f"no samples with split {split!r} in {url}; build the shards with a dataset "
                        "adapter (avshards build --dataset NAME) or pass the right --train-split/--test-split")
    feats = {s.modality: ClipFeatures(rows[s.modality], np.asarray(video), list(keys), labels) for s in specs}
    # Sorted by video id: the same features in the same order whatever the workers' interleaving.
    order = np.argsort(np.asarray(list(keys)), kind="stable")
    return {m: f.subset(order) for m, f in feats.items()}


def extract(url: str, split: str | None, backbones: dict[str, nn.Module], specs: Sequence[ClipSpec],
            clips_per_video: int, augment: bool, batch_size: int = 32, seed: int = 0,
            device: str | torch.device = "cpu", progress: bool = True, workers: int = 0
            ) -> dict[str, ClipFeatures]:
    """Features (max-pooled conv5) of every clip of ``split`` for each spec's modality, from the same
    start times (see :func:`clip_outputs`). ``workers`` > 0 reads (and on a CPU decodes) clips in
    that many processes."""
    forward = {s.modality: (lambda x, s=s: pooled(backbones[s.modality], x, s)) for s in specs}
    desc = f"features {'+'.join(s.modality for s in specs)} {split or ''}".strip()
    return clip_outputs(url, split, specs, forward, clips_per_video, augment, batch_size, seed, device,
                        progress, workers, desc)


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
