"""Fig. 3: Grad-CAM saliency of the video backbone's last convolution (and the audio backbone's).

A self-supervised model has no class score to explain, so the score is what CrissCross was trained
to raise: by default the cross-modal agreement of a clip with its own sound (``crossmodal``: the
cosine of the video prediction with the audio projection, the synchronous term of the loss; for
the audio map the other way round). Where the video saliency lands is then where the model "sees"
the sound source (the paper's reading of Fig. 3). ``norm`` explains the embedding's norm instead,
for clips without audio (their audio input is silence).

Grad-CAM (Selvaraju et al. 2017): weights = gradient of the score w.r.t. the conv5 map, averaged
over its positions; map = ReLU(sum over channels of weight * activation), upsampled to the input
(trilinear over frames for video, bilinear over the log-mel for audio) and scaled to [0, 1].

Inputs are the evaluation's (:func:`crisscross.eval.features.video_inputs` / ``audio_inputs``,
no augmentation) from the middle of each clip.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crisscross import paper
from crisscross.eval.features import ClipSpec, audio_inputs, duration, video_inputs
from crisscross.viz import VizError, pyplot

TARGETS = ("crossmodal", "norm")
OTHER = {"video": "audio", "audio": "video"}
PANEL_INCHES = 1.8
DPI = 100


@dataclass
class ClipInputs:
    """One clip's evaluation inputs: video [1, 3, T, S, S] (None without frames) and log-mel
    [1, 1, 80, steps] (silence without audio)."""

    key: str
    label: str | None
    video: Tensor | None
    audio: Tensor


def load_crisscross(checkpoint: str | None, device: str | torch.device = "cpu", seed: int = 0) -> nn.Module:
    """The whole model (backbones, projectors, predictors: the cross-modal score needs them) of a
    checkpoint, or a seeded random initialisation for None / "random" (the same network
    :func:`crisscross.eval.features.load_backbones` builds)."""
    from crisscross.export import load_model_or_random

    try:
        model = load_model_or_random(checkpoint, seed)
    except (FileNotFoundError, ValueError) as e:
        raise VizError(str(e)) from None
    return model.eval().requires_grad_(False).to(device)


def clip_inputs(clip, spec_video: ClipSpec, spec_audio: ClipSpec) -> ClipInputs:
    """The evaluation inputs of the window in the middle of ``clip`` (no augmentation)."""
    window = max(spec_video.seconds, spec_audio.seconds)
    dur = duration(clip, "video") if clip.num_frames else duration(clip, "audio")
    start = np.array([max(0.0, (dur - window) / 2)])
    rng = np.random.default_rng(0)                       # unused without augmentation
    video = video_inputs(clip, start, spec_video, False, rng) if clip.num_frames else None
    return ClipInputs(clip.key, clip.label, video,
                      audio_inputs(clip, start, spec_audio, False, rng))


def _branch(model: nn.Module, modality: str, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(conv5 map, projection z, prediction p) of one modality, as CrissCross.forward computes them."""
    from crisscross.models import global_pool

    backbone = getattr(model, f"{modality}_backbone")
    # Grad-CAM needs d score / d conv5 only: the backbone runs without a graph, the heads with one.
    with torch.no_grad():
        fmap = backbone.features(x)
    fmap.requires_grad_(True)
    z = getattr(model, f"{modality}_projector")(global_pool(fmap, backbone.pool))
    # Table 3's common predictor is fed l2-normalised projections (CrissCross.forward does the same).
    p = getattr(model, f"{modality}_predictor")(F.normalize(z, dim=1) if model.shared_predictor
                                                else z)
    return fmap, z, p


def grad_cam(fmap: Tensor, score: Tensor, size: Sequence[int]) -> Tensor:
    """Grad-CAM of ``score`` on the conv map ``fmap`` [B, C, ...] -> [B, *size] in [0, 1]."""
    grads, = torch.autograd.grad(score.sum(), fmap)
    weights = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
    cam = F.relu((weights * fmap).sum(dim=1, keepdim=True))
    mode = "trilinear" if cam.dim() == 5 else "bilinear"
    cam = F.interpolate(cam, size=tuple(size), mode=mode, align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (cam.dim() - 1))
    return (cam / peak).detach()


def saliency(model: nn.Module, inputs: ClipInputs, modality: str, target: str = "crossmodal",
             device: str | torch.device = "cpu") -> np.ndarray:
    """Grad-CAM of ``modality``'s backbone for one clip: [T, S, S] (video) or [80, steps] (audio)."""
    if target not in TARGETS:
        raise VizError(f"unknown saliency target {target!r}; use one of {', '.join(TARGETS)}")
    x = {"video": inputs.video, "audio": inputs.audio}
    if x[modality] is None or (target == "crossmodal" and x[OTHER[modality]] is None):
        raise VizError(f"sample {inputs.key!r} has no video frames: show its audio map with --modality audio "
                       "--target norm, or choose clips with frames")
    with torch.enable_grad():
        mine = x[modality].to(device)
        fmap, z, p = _branch(model, modality, mine)
        if target == "norm":
            score = z.norm(dim=1)
        else:
            with torch.no_grad():
                _, z_other, _ = _branch(model, OTHER[modality], x[OTHER[modality]].to(device))
            score = F.cosine_similarity(p, z_other, dim=1)
        return grad_cam(fmap, score, mine.shape[2:])[0].cpu().numpy()


def display_frames(video: Tensor, settings: paper.VideoAugSettings = paper.VIDEO_AUG) -> np.ndarray:
    """Undo the input normalisation: [1, 3, T, S, S] -> RGB floats [T, S, S, 3] in [0, 1]."""
    mean = torch.tensor(settings.mean).view(3, 1, 1, 1)
    std = torch.tensor(settings.std).view(3, 1, 1, 1)
    return (video[0].cpu() * std + mean).clamp(0, 1).permute(1, 2, 3, 0).numpy()


def frame_indices(num_frames: int, shown: int) -> list[int]:
    """``shown`` evenly spaced frame indices of a clip."""
    return sorted({int(i) for i in np.linspace(0, num_frames - 1, max(1, shown)).round()})


def plot_video_saliency(clips: Sequence[ClipInputs], maps: Sequence[Sequence[np.ndarray]],
                        titles: Sequence[str], path: str | Path, frames_shown: int = 4) -> Path:
    """Rows: clips. Columns: for each checkpoint (``titles``), ``frames_shown`` frames with the map.

    ``maps[c][k]`` is checkpoint ``k``'s [T, S, S] map of clip ``c``. The picture has
    ``len(clips)`` x ``len(titles) * frames_shown`` panels of 1.8 inches at 100 dpi.
    """
    plt = pyplot()
    t = frame_indices(clips[0].video.shape[2], frames_shown)
    rows, cols = len(clips), len(titles) * len(t)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows), squeeze=False)
    for r, (clip, clip_maps) in enumerate(zip(clips, maps)):
        rgb = display_frames(clip.video)
        for k, cam in enumerate(clip_maps):
            for j, f in enumerate(t):
                ax = axes[r][k * len(t) + j]
                ax.imshow(rgb[f])
                ax.imshow(cam[f], cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
                if r == 0:
                    ax.set_title(f"{titles[k]}\nframe {f}", fontsize=7)
        axes[r][0].set_ylabel(_row_name(clip), fontsize=7)
    _finish(fig, axes, path)
    return Path(path)


def plot_audio_saliency(clips: Sequence[ClipInputs], maps: Sequence[Sequence[np.ndarray]],
                        titles: Sequence[str], path: str | Path) -> Path:
    """Rows: clips. Columns: the log-mel, then each checkpoint's map over it
    (``len(clips)`` x ``1 + len(titles)`` panels, 1.8 inches high, 3.6 wide)."""
    plt = pyplot()
    rows, cols = len(clips), 1 + len(titles)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * PANEL_INCHES * cols, PANEL_INCHES * rows), squeeze=False)
    for r, (clip, clip_maps) in enumerate(zip(clips, maps)):
        spec = clip.audio[0, 0].cpu().numpy()
        for k, cam in enumerate([None, *clip_maps]):
            ax = axes[r][k]
            ax.imshow(spec, origin="lower", aspect="auto", cmap="magma")
            if cam is not None:
                ax.imshow(cam, origin="lower", aspect="auto", cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            if r == 0:
                ax.set_title("log-mel" if cam is None else titles[k - 1], fontsize=8)
        axes[r][0].set_ylabel(_row_name(clip), fontsize=7)
    _finish(fig, axes, path)
    return Path(path)


def _row_name(clip: ClipInputs) -> str:
    return clip.key if clip.label in (None, "") else f"{clip.key}\n{clip.label}"


def _finish(fig, axes: Iterable, path: str | Path) -> None:
    plt = pyplot()
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.01, top=0.9, wspace=0.04, hspace=0.06)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
