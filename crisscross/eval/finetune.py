"""Full fine-tuning (appendix E.2, Table S11) and the shared supervised loop of the linear probe.

The video backbone, its global average pool replaced by a global max pool, gets a new linear
layer; everything trains with SGD + momentum and a multi-step schedule (epoch milestones). An epoch
is Table S11's epoch size in clips (95K for UCF101, 35K for HMDB51: about 10 augmented clips per
training video, the eval-train augmentations of Table S3), drawn as that many clips per video from
one read of the training split and shuffled through a buffer of encoded clips. Testing averages
the softmax of uniformly spaced clips per video (10 in the paper), without augmentation, batched
across videos.

The linear probe (linear_layer.py) is the same loop with the backbone frozen and the head reading
the protocol's max-pooled conv5 map.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from avshards import remote
from avshards.format import MANIFEST_NAME, AVClip
from avshards.reader import load_index, open_shards, read_samples, shard_urls
from crisscross.eval.errors import EvalError
from crisscross.eval.features import (BATCHES, CUTS, ClipSpec, clip_outputs, clip_rng, clip_starts,
                                      decodes_in_workers, duration, pooled, split_clips)
from crisscross.eval.protocols import pretraining_info
from crisscross.paper import FinetuneSettings

SHUFFLE_CLIPS = 2048        # encoded clips held for shuffling the training stream (memory vs randomness)
MANY_CLIPS = 50             # clips per video per epoch beyond which the epoch size surely was not meant
log = logging.getLogger(__name__)


class Classifier(nn.Module):
    """Backbone -> pooled features -> dropout -> linear layer.

    ``spec`` None: the backbone's own global pooling (set to "max" for fine-tuning, E.2);
    otherwise the protocol's max pool of the conv5 map (the linear probe, E.1).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0,
                 spec: ClipSpec | None = None, frozen: bool = False) -> None:
        super().__init__()
        self.backbone, self.spec, self.frozen = backbone, spec, frozen
        if spec is None:
            backbone.pool = "max"
        backbone.requires_grad_(not frozen)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.feature_dim, num_classes) if spec is None else nn.LazyLinear(num_classes)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.frozen:     # a frozen backbone keeps its batch-norm statistics
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            f = self.backbone(x) if self.spec is None else pooled(self.backbone, x, self.spec)
        return self.head(self.dropout(f))


def shard_classes(url: str, split: str | None = None) -> list[str]:
    """Sorted class names of a shard folder: from its manifest, else by reading the samples."""
    try:
        with open(os.path.join(url, MANIFEST_NAME)) as f:
            labels = json.load(f).get("labels")
        if labels:
            return sorted(labels)
    except (OSError, ValueError):
        pass
    return sorted({str(c.label) for c in split_clips(url, split)})


def sample_metas(url: str) -> Iterator[dict]:
    """The json of every sample of ``url``: only those bytes are read where a shard has an index."""
    for shard in shard_urls(url):
        index = load_index(shard)
        if index is None:
            yield from (AVClip.from_sample(s).meta for s in read_samples(shard))
            continue
        for sample in index:
            offset, size = sample.members["json"]
            yield json.loads(remote.read_range(shard, offset, offset + size))


def count_training_videos(url: str, split: str, classes: Sequence[str]) -> int:
    """Samples of ``split`` whose label is one of ``classes`` (what one pass of training reads)."""
    known = set(classes)
    return sum(1 for m in sample_metas(url) if m.get("split") == split and str(m.get("label")) in known)


def clips_per_video(epoch_size: int | None, videos: int, default: int = 1) -> int:
    """Clips drawn from each training video per epoch: enough for ``epoch_size`` clips (Table S11's
    "es"), or ``default`` when there is no epoch size."""
    return default if not epoch_size else max(1, math.ceil(epoch_size / max(videos, 1)))


class TrainClips(IterableDataset):
    """``per_video`` augmented clips of every sample of a split per epoch, shuffled through a
    buffer of :data:`SHUFFLE_CLIPS` encoded clips; shards split over DataLoader workers. Yields
    ``(clip, class index)``: a one-clip cut (``decode=False``, decoded on the device by the
    caller) or its decoded tensor. Randomness depends on (seed, epoch, key) only."""

    def __init__(self, url: str, split: str, spec: ClipSpec, classes: Sequence[str], seed: int = 0,
                 per_video: int = 1, decode: bool = True) -> None:
        self.urls, self.split, self.spec, self.seed = shard_urls(url), split, spec, seed
        self.index = {c: i for i, c in enumerate(classes)}
        self.per_video, self.decode, self.epoch = per_video, decode, 0

    def _clips(self) -> Iterator[AVClip]:
        info = get_worker_info()
        urls = self.urls if info is None else self.urls[info.id::info.num_workers]
        for u in urls:
            for clip in open_shards(u):
                if clip.split == self.split and str(clip.label) in self.index:
                    yield clip

    def cuts(self, clip: AVClip, count: int | None = None) -> Iterator:
        """``count`` (default ``per_video``) one-clip cuts of ``clip`` for this epoch, drawn lazily."""
        rng = clip_rng(self.seed + 1000003 * self.epoch, clip.key)
        starts = clip_starts(duration(clip, self.spec.modality), self.spec.seconds, count or self.per_video,
                             True, rng)
        return (CUTS[self.spec.modality](clip, starts[i:i + 1], self.spec, True, rng) for i in range(len(starts)))

    def _item(self, cut, label: int) -> tuple:
        return (BATCHES[self.spec.modality]([cut], self.spec)[0] if self.decode else cut), label

    def __iter__(self) -> Iterator[tuple]:
        rng = np.random.default_rng([self.seed, self.epoch])
        buffer: list[tuple] = []
        for clip in self._clips():
            label = self.index[str(clip.label)]
            for cut in self.cuts(clip):
                buffer.append((cut, label))
                if len(buffer) >= SHUFFLE_CLIPS:
                    yield self._item(*buffer.pop(int(rng.integers(len(buffer)))))
        rng.shuffle(buffer)
        for item in buffer:
            yield self._item(*item)


def collate_cuts(items: Sequence[tuple]) -> tuple[list, torch.Tensor]:
    """A batch of (cut, label): the cuts as a list (decoded later, on the device), labels as a tensor."""
    return [c for c, _ in items], torch.tensor([y for _, y in items])


@dataclass
class TrainResult:
    """Outcome of a supervised run: video-level test accuracy and what produced it."""

    accuracy: float
    classes: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    losses: list[float]             # mean training loss per epoch
    steps: int
    steps_per_epoch: int = 0
    clips_per_video: int = 1
    train_videos: int = 0

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "num_test_videos": int(len(self.y_true)),
                "epoch_losses": self.losses, "steps": self.steps, "steps_per_epoch": self.steps_per_epoch,
                "clips_per_video": self.clips_per_video, "train_videos": self.train_videos}


def train_classifier(model: Classifier, url: str, classes: list[str], settings: FinetuneSettings,
                     spec: ClipSpec, train_split: str = "train", test_split: str = "test",
                     device: str = "cpu", seed: int = 0, max_steps: int | None = None, workers: int = 0,
                     progress: bool = True, per_video: int = 1) -> TrainResult:
    """SGD (momentum, weight decay) with a multi-step schedule over epochs, then the clip-averaged test.

    An epoch is ``settings.epoch_size`` clips (``per_video`` clips per training video when it is None).
    The loss stays on the device during an epoch and is read once at its end (no host sync per step).
    """
    torch.manual_seed(seed)
    model.to(device)
    videos = count_training_videos(url, train_split, classes)
    if videos == 0:
        raise EvalError(f"no training samples with split {train_split!r} of the classes {classes[:3]}... in "
                        f"{url}; build it with avshards build --dataset NAME, or pass --train-split")
    per_video = clips_per_video(settings.epoch_size, videos, per_video)
    if per_video > MANY_CLIPS:
        log.warning(f"an epoch of {settings.epoch_size} clips is {per_video} clips per training video of "
                    f"{url} ({videos} videos; Table S11 takes about 10); pass --epoch-size for a smaller set")
    epoch_clips = settings.epoch_size or per_video * videos
    steps_per_epoch = math.ceil(epoch_clips / settings.batch_size)
    decode = decodes_in_workers(device)
    data = TrainClips(url, train_split, spec, classes, seed, per_video, decode)
    loader = DataLoader(data, batch_size=settings.batch_size, num_workers=workers, drop_last=False,
                        collate_fn=None if decode else collate_cuts, pin_memory=not decode)
    if isinstance(model.head, nn.LazyLinear):       # materialise the probe's head before the optimiser
        first = next(data._clips())
        with torch.no_grad():
            model.eval()(BATCHES[spec.modality](list(data.cuts(first, 1)), spec, device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(settings.milestones), settings.gamma)
    loss_fn, losses, steps = nn.CrossEntropyLoss(), [], 0
    autocast = torch.device(device).type == "cuda"
    for epoch in range(settings.epochs):
        data.epoch = epoch
        model.train()
        total, count = torch.zeros((), device=device), 0
        bar = tqdm(total=steps_per_epoch, disable=not progress, unit="batch",
                   desc=f"train epoch {epoch + 1}/{settings.epochs}")
        for x, y in loader:
            x = BATCHES[spec.modality](x, spec, device) if not decode else x.to(device, non_blocking=True)
            # bfloat16 autocast on GPUs: the speed of mixed precision without a gradient scaler.
            with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
                loss = loss_fn(model(x), y.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count, steps = total + loss.detach(), count + 1, steps + 1
            bar.update(1)
            if count >= steps_per_epoch or (max_steps is not None and steps >= max_steps):
                break
        bar.close()
        losses.append((total / max(count, 1)).item())     # one host sync per epoch
        sched.step()
        if max_steps is not None and steps >= max_steps:
            break
    y_true, y_pred = evaluate(model, url, classes, spec, settings.test_clips, test_split, device,
                              settings.batch_size, progress, workers)
    return TrainResult(float((y_true == y_pred).mean()), classes, y_true, y_pred, losses, steps,
                       steps_per_epoch, per_video, videos)


def evaluate(model: nn.Module, url: str, classes: list[str], spec: ClipSpec, test_clips: int,
             split: str = "test", device: str = "cpu", batch_size: int = 32, progress: bool = True,
             workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class per test video: softmax averaged over ``test_clips`` uniform clips
    (clips of several videos per forward pass)."""
    model.eval().to(device)
    autocast = torch.device(device).type == "cuda"

    def softmax(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", torch.bfloat16, enabled=autocast):
            return model(x).float().softmax(-1)

    try:
        probs = clip_outputs(url, split, [spec], {spec.modality: softmax}, test_clips, False, batch_size,
                             device=device, progress=progress, workers=workers, desc="test")[spec.modality]
    except EvalError as e:
        if not str(e).startswith("no samples"):
            raise
        raise EvalError(f"no test samples with split {split!r} in {url}; pass --test-split") from None
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index.get(label, -1) for label in probs.labels])
    return y_true, probs.video_means().argmax(1)


def finetune_report(result: TrainResult, settings: FinetuneSettings, spec: ClipSpec, urls: Sequence[str],
                    checkpoint: str | None, name: str, label: str, protocol: str = "finetune") -> dict:
    """The JSON report of a fine-tuning (or probe) run."""
    return {"title": f"{'Full fine-tuning' if protocol == 'finetune' else 'Linear probe'} on {name}",
            "protocol": protocol, "method": label, "dataset": name, "shards": list(urls),
            "checkpoint": checkpoint, "random_init": checkpoint is None,
            "pretraining": pretraining_info(checkpoint), "settings": asdict(settings),
            "spec": asdict(spec), "accuracy": result.accuracy, **result.to_json(),
            "notes": [f"top-1 video accuracy; softmax averaged over {settings.test_clips} uniformly "
                      "spaced clips per test video, no test augmentation."]}
