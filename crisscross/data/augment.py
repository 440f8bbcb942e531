"""The torch reference augmentation backend (CPU or CUDA tensors, batched with per-clip parameters).

``augment_*`` applies the parameters that :mod:`crisscross.data.params` draws (one draw per view,
for all its frames, or one per frame) with torch ops only, so the same parameters give the same
result on CPU and CUDA, and the DALI backend can be tested against these functions with the same
parameters. All settings come from :mod:`crisscross.paper` (``VIDEO_AUG``, ``AUDIO_AUG``, ...).

Video, in this order (docs/data.md has the table):

1. random resized crop of ``crop = (top, left, height, width)`` (source pixels), resized to
   ``crop_size`` squared, bilinear with antialias, on uint8 (as DALI's resize does); ``crop=None``
   (no multi-scale crop): the evaluation transform's short-side resize + centre crop;
2. horizontal flip;
3. colour jitter with torchvision's float formulas, in ``jitter_order`` (0 brightness,
   1 contrast, 2 saturation, 3 hue), every result clamped to [0, 1]:
   brightness ``x * b``; contrast ``c * x + (1 - c) * mean(gray(frame))`` (the pivot is the mean
   of each frame's grayscale, torchvision's choice; DALI's ``color_twist`` pivots at 128 instead,
   so DALI must pass ``contrast_center``); saturation ``s * x + (1 - s) * gray(x)``; hue: shift H
   by ``h`` in HSV (``gray = 0.2989 R + 0.587 G + 0.114 B``);
4. grayscale (``gray(x)`` in all three channels);
5. gaussian blur, kernel ``blur_kernel``, a random sigma per view, reflect padding;
6. cutout: one square ``(top, left, side)`` in output pixels, the same in every frame, FILLED
   with the per-channel mean of the view's first frame (the original multiplied; a bug);
7. ImageNet normalisation; output ``[3, T, S, S]`` float32.

With one parameter set per frame (``settings.per_frame``) each frame is augmented as a view of one
frame (its own crop, flip, jitter, grayscale, blur and cutout, filled with its own mean).

Two schedules of the same steps. On the CPU (``batched=False``) one clip at a time: crop and resize
on uint8 with torchvision's kernel, then every step in place on the clip's floats while they are
in cache, skipping the steps its parameters leave out. Elsewhere (``batched=True``, the default
on CUDA) the whole batch at once in a fixed number of ops whatever its size: the crop, resize and
flip of every clip are two batched matrix products with antialiased-bilinear weight matrices built
on the host (the filter of ``interpolate(antialias=True)``, in float with one rounding to uint8
levels, as torch's own CUDA uint8 resize does: within a level of the CPU kernel), and the per-clip
parameters travel as one tensor, copied once. The colour jitter runs as fixed slots, each clip's
linear ops before its hue shift, the hue shifts, the linear ops after (a slot a clip does not use is
the identity).

Audio: volume ``x * g`` -> log-mel (:func:`logmel`) -> optional time warp -> frequency masks ->
time masks (both filled with the mean of the spectrogram before masking) -> BYOL-A random resized
crop (the spectrogram centred on a zero canvas of ``crop_canvas`` times its size, a box of it
resized back with bicubic, ``align_corners=True``). The time warp and the crop are batched matrix
products with torch's bicubic weights (a = -0.75, indices clamped as ``interpolate`` does).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
import torchaudio
from torchvision.transforms.v2 import functional as F

from crisscross import paper
from crisscross.data.params import AudioAugParams, VideoAugParams, ViewParams, frame_params
from crisscross.paper import AudioAugSettings, VideoAugSettings

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)           # ITU-R 601-2 luma, torchvision's rgb_to_grayscale
NO_JITTER = (1.0, 1.0, 1.0, 0.0)                # the identity factor of each jitter op
HUE_OFFSETS = (5.0, 3.0, 1.0)                   # R, G, B: RGB_k = V - C * f((k + 6 H) mod 6)
_SIXTHS = [torch.tensor(k / 6.0) for k in range(6)]  # 0-dim: broadcast on any device


# --- parameters as tensors -----------------------------------------------------------------------
def _on_device(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Per-clip host arrays ([n, ...] each) as float32 tensors on ``device``, in ONE copy."""
    if device.type == "cpu":
        return {name: torch.from_numpy(np.asarray(a, np.float32)) for name, a in arrays.items()}
    n = len(next(iter(arrays.values())))
    flat = np.concatenate([np.asarray(a, np.float32).reshape(n, -1) for a in arrays.values()], axis=1)
    packed = torch.from_numpy(flat)
    packed = packed.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else packed.to(device)
    out, col = {}, 0
    for name, a in arrays.items():
        width = int(np.prod(np.shape(a)[1:], dtype=int))
        out[name] = packed[:, col:col + width].reshape(np.shape(a))
        col += width
    return out


def _clip_shape(v: torch.Tensor, ndim: int = 5) -> torch.Tensor:
    """[n] or [n, k] per-clip values shaped to broadcast over [n, k, ...] of ``ndim`` dims."""
    return v.reshape(*v.shape, *([1] * (ndim - v.ndim)))


# --- video: crop and resize ----------------------------------------------------------------------
def _channels_first(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> [T, 3, H, W] (a view); [T, 3, H, W] passes through."""
    if frames.ndim != 4:
        raise ValueError(f"expected frames [T, H, W, 3] or [T, 3, H, W], got shape {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 and frames.shape[1] != 3 else frames


def _eval_window(height: int, width: int, s: VideoAugSettings) -> tuple[tuple[int, int], tuple[int, int]]:
    """torchvision's Resize(short side ``eval_resize``) size and CenterCrop(crop_size) offsets:
    ((resized height, width), (top, left))."""
    short, long = (height, width) if height <= width else (width, height)
    size = (s.eval_resize, int(s.eval_resize * long / short))
    rh, rw = size if height <= width else size[::-1]
    return (rh, rw), (int(round((rh - s.crop_size) / 2.0)), int(round((rw - s.crop_size) / 2.0)))


def _crop_uint8(frames: torch.Tensor, p: VideoAugParams, s: VideoAugSettings) -> torch.Tensor:
    """One clip's crop (or the eval-style centre crop) resized to crop_size^2 on uint8, flipped."""
    if p.crop is None:
        (rh, rw), (top, left) = _eval_window(*frames.shape[-2:], s)
        x = _resize_uint8(frames, rh, rw)[..., top:top + s.crop_size, left:left + s.crop_size]
    else:
        top, left, h, w = p.crop
        x = _resize_uint8(frames[..., top:top + h, left:left + w], s.crop_size, s.crop_size)
    return x.flip(-1) if p.flip else x


def _resize_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's antialiased bilinear resize of uint8 [T, 3, H, W] (the same kernel, called
    directly: torchvision's functional API only adds overhead here)."""
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    return nnf.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _aa_matrix(in_size: int, out_size: int, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """[n, out_size, in_size]: the rows of torch's antialiased bilinear resize
    (``interpolate(antialias=True)``, ATen's ``_compute_weights_aa``) of the windows
    ``[start, start + length)`` of an axis of ``in_size`` pixels to ``out_size`` pixels."""
    start, length = np.asarray(start, np.int64), np.asarray(length, np.int64)
    scale = (length / out_size)[:, None]                                  # [n, 1]
    support = np.where(scale >= 1.0, scale, 1.0)                          # bilinear: interp_size 2 / 2
    invscale = np.where(scale >= 1.0, 1.0 / scale, 1.0)
    centre = scale * (np.arange(out_size) + 0.5)                          # [n, out]
    lo = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), length[:, None])
    taps = lo[..., None] + np.arange(int((hi - lo).max()))                # [n, out, taps]
    w = np.clip(1.0 - np.abs((taps - centre[..., None] + 0.5) * invscale[..., None]), 0.0, None)
    w *= taps < hi[..., None]
    w /= np.where(w.sum(-1, keepdims=True) == 0, 1.0, w.sum(-1, keepdims=True))
    cols = np.where(taps < hi[..., None], start[:, None, None] + taps, in_size)   # padding -> dropped column
    out = np.zeros((len(start), out_size, in_size + 1))
    np.put_along_axis(out, cols, w, axis=2)
    return out[..., :in_size]


def _resize_matrices(params: Sequence[VideoAugParams], height: int, width: int,
                     s: VideoAugSettings) -> tuple[np.ndarray, np.ndarray]:
    """Row and column resampling matrices ([n, S, H], [n, S, W]) of each clip's crop and resize,
    its horizontal flip folded into the column matrix."""
    size, n = s.crop_size, len(params)
    rows, cols = np.zeros((n, size, height)), np.zeros((n, size, width))
    cropped = [i for i, p in enumerate(params) if p.crop is not None]
    if cropped:
        box = np.array([params[i].crop for i in cropped])
        rows[cropped] = _aa_matrix(height, size, box[:, 0], box[:, 2])
        cols[cropped] = _aa_matrix(width, size, box[:, 1], box[:, 3])
    centred = [i for i, p in enumerate(params) if p.crop is None]
    if centred:           # eval-style: resize the whole frame, keep the centre window's rows
        (rh, rw), (top, left) = _eval_window(height, width, s)
        rows[centred] = _aa_matrix(height, rh, [0], [height])[:, top:top + size]
        cols[centred] = _aa_matrix(width, rw, [0], [width])[:, left:left + size]
    flips = [i for i, p in enumerate(params) if p.flip]
    cols[flips] = cols[flips, ::-1]
    return rows, cols


def _crop_batched(clips: Sequence[torch.Tensor], params: Sequence[VideoAugParams],
                  s: VideoAugSettings) -> torch.Tensor:
    """Every clip's crop, resize and flip -> float [n, 3, T, S, S] in [0, 1]: per frame size, two
    batched matrix products, rounded to uint8 levels."""
    n, t, size = len(clips), clips[0].shape[0], s.crop_size
    out = torch.empty(n, 3, t, size, size, device=clips[0].device)
    for (h, w), members in _by_size(clips).items():
        rows, cols = _resize_matrices([params[i] for i in members], h, w, s)
        m = _on_device({"rows": rows, "cols": cols}, clips[0].device)
        g = len(members)
        x = torch.stack([clips[i] for i in members]).permute(0, 3, 2, 1, 4)              # [g, H, 3, T, W]
        x = torch.bmm(m["rows"], x.to(torch.float32, memory_format=torch.contiguous_format).view(g, h, -1))
        x = torch.bmm(x.view(g, size * 3 * t, w), m["cols"].transpose(1, 2))              # [g, S*3*T, S]
        x = x.view(g, size, 3, t, size).permute(0, 2, 3, 1, 4)                            # [g, 3, T, S, S]
        if g == n:
            out.copy_(x)
        else:
            out[torch.tensor(members, device=out.device)] = x
    return out.round_().clamp_(0, 255).div_(255)


def _by_size(clips: Sequence[torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    """Clip indices grouped by frame size (a batch may mix aspect ratios)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(tuple(c.shape[-2:]), []).append(i)
    return groups


# --- video: the steps on floats [n, 3, T, S, S] ----------------------------------------------------
def _gray(x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """torchvision's luma of [n, 3, ...] -> [n, 1, ...], times ``scale`` [n, 1, ...] if given."""
    r, g, b = x.unbind(dim=1)
    if scale is None:
        return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)
    s = scale[:, 0]
    return r.mul(s * GRAY_WEIGHTS[0]).addcmul_(g, s * GRAY_WEIGHTS[1]).addcmul_(b, s * GRAY_WEIGHTS[2]).unsqueeze(1)


def _frame_gray_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean luma of each frame of [n, 3, T, S, S] -> [n, 1, T, 1, 1] (from the channel means)."""
    m = x.mean(dim=(-2, -1))                                               # [n, 3, T]
    return (m[:, 0] * GRAY_WEIGHTS[0] + m[:, 1] * GRAY_WEIGHTS[1] + m[:, 2] * GRAY_WEIGHTS[2])[:, None, :, None, None]


def _linear_jitter(x: torch.Tensor, coeffs: torch.Tensor, gray: bool, mean: bool, clamp: bool) -> torch.Tensor:
    """In place, per clip: ``a x + b gray(x) + g mean_gray(frame)`` with ``coeffs`` [n, 3] = (a, b, g)
    (brightness: a = f; contrast: a = f, g = 1 - f; saturation: a = f, b = 1 - f; or several of
    them composed, see :func:`_jitter_slots`), clamped to [0, 1] when ``clamp``; ``gray`` / ``mean``
    False: that term is 0 for every clip. One pass over the clip for ``a x + ...``."""
    a, b, g = (_clip_shape(coeffs[:, k]) for k in range(3))
    offset = _gray(x, b) if gray else None                                 # [n, 1, T, S, S]
    if mean:
        frame_mean = _frame_gray_mean(x).mul_(g)                           # [n, 1, T, 1, 1]
        offset = frame_mean if offset is None else offset.add_(frame_mean)
    if offset is None:
        x.mul_(a)
    else:
        torch.addcmul(offset, x, a, out=x)
    return x.clamp_(0.0, 1.0) if clamp else x


def _hue_shift(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """torchvision's HSV hue shift of [n, 3, T, S, S] (in place), without the HSV round trip: the
    closed form of HSV -> RGB, RGB_k = lo + C * clamp(|((6 H + k) mod 6) - 2| - 1, 0, 1),
    k = 5, 3, 1, computed in units of a turn (u = H + k / 6, mod 1 as ``frac``) as
    (lo - C) + 6 C * clamp(|frac(u) - 1/3|, 1/6, 1/3). ``offsets`` [n, 3] = (h + k / 6 + 1) per clip
    and channel, the shift h in turns. Only cheap element-wise ops (no where, no remainder): the
    max channel is picked with 0/1 weights, ``sign(hi - channel)`` is 0 where it is the max."""
    r, g, b = x.unbind(dim=1)
    hi = torch.maximum(torch.maximum(g, b), r)
    lo = torch.minimum(torch.minimum(g, b), r)
    c6 = (hi - lo).mul_(6.0)
    inv = torch.reciprocal(c6.clamp_min(1e-30))         # gray pixels: hue 0 and no 0 / 0
    h = torch.addcmul(_SIXTHS[2], b - r, inv)            # green is the maximum ...
    h.lerp_(torch.addcmul(_SIXTHS[4], r - g, inv), (hi - g).sign_())       # ... else blue,
    h = (g - b).mul_(inv).lerp_(h, (hi - r).sign_())     # and red before both (torchvision's order)
    u = h.unsqueeze(1) + _clip_shape(offsets)           # [n, 3, T, S, S]
    torch.frac(u, out=u).sub_(1.0 / 3.0).abs_().clamp_(1.0 / 6.0, 1.0 / 3.0)
    return torch.addcmul(lo.sub_(c6, alpha=1.0 / 6.0).unsqueeze(1), c6.unsqueeze(1), u, out=x)


GRAY_SUM = sum(GRAY_WEIGHTS)                    # gray(gray(x)) = GRAY_SUM * gray(x)


def _compose(first: tuple, then: tuple) -> tuple:
    """(a, b, g) of ``then`` after ``first`` (both ``a x + b gray(x) + g mean_gray``): the family is
    closed, as gray(gray(x)) = W gray(x), mean_gray(gray(x)) = W mean_gray(x), W = GRAY_SUM."""
    a1, b1, g1 = first
    a2, b2, g2 = then
    gray_gain = a1 + GRAY_SUM * b1                   # gray(y) = gray_gain gray(x) + W g1 mean_gray(x)
    return (a2 * a1, a2 * b1 + b2 * gray_gain,
            a2 * g1 + b2 * GRAY_SUM * g1 + g2 * (gray_gain + GRAY_SUM * g1))


def _linear_segments(ops: Sequence[int], f: Sequence[float]) -> list[tuple[tuple, bool]]:
    """Consecutive brightness / contrast / saturation ops as composed steps ((a, b, g), clamp).
    A factor <= 1 keeps values in [0, 1] (a convex blend), so its clamp is the identity and the
    next op composes with it; a factor > 1 ends the step with a clamp."""
    coeffs = {0: (f[0], 0.0, 0.0), 1: (f[1], 0.0, 1.0 - f[1]), 2: (f[2], 1.0 - f[2], 0.0)}
    steps, current = [], None
    for op in ops:
        current = coeffs[op] if current is None else _compose(current, coeffs[op])
        if f[op] > 1.0:
            steps.append((current, True))
            current = None
    return steps + ([(current, False)] if current is not None else [])


def _jitter_slots(params: Sequence[VideoAugParams]) -> tuple[list[tuple[np.ndarray, bool]], np.ndarray | None,
                                                           list[tuple[np.ndarray, bool]]]:
    """The colour jitter of n clips as fixed slots: each clip's linear steps before its hue shift
    (:func:`_linear_segments`; a slot is an array [n, 3] of (a, b, g) and whether any clip of it
    clamps), the hue shifts ([n] turns, or None when no clip shifts), the linear steps after. A slot
    a clip does not use is the identity (1, 0, 0)."""
    before, after, hues = [], [], []
    for p in params:
        ops = [op for op in p.jitter_order if p.jitter[op] != NO_JITTER[op]]
        k = ops.index(3) if 3 in ops else len(ops)
        before.append(_linear_segments(ops[:k], p.jitter))
        after.append(_linear_segments(ops[k + 1:], p.jitter))
        hues.append(p.jitter[3] if k < len(ops) else 0.0)

    def slots(rows: list[list[tuple]]) -> list[tuple[np.ndarray, bool]]:
        depth = max(map(len, rows), default=0)
        cells = [[r[j] if j < len(r) else ((1.0, 0.0, 0.0), False) for r in rows] for j in range(depth)]
        return [(np.array([c[0] for c in col]), any(c[1] for c in col)) for col in cells]

    return slots(before), (np.array(hues) if any(hues) else None), slots(after)


def _blur_matrices(sigmas: Sequence[float | None], kernel: int, size: int) -> np.ndarray:
    """[n, size, size]: torchvision's gaussian blur of one axis (kernel ``kernel``,
    exp(-u^2 / (2 sigma^2)) normalised, reflect padding) as a matrix, the padding folded in
    (None: the identity; taps under 1e-8 dropped, the result within 2e-8). Two matrix products
    blur a frame: ``M @ frame @ M.T``."""
    r = kernel // 2
    u = np.arange(-r, r + 1, dtype=np.float64)
    source = np.abs(np.arange(size)[:, None] + u)                        # [size, kernel] reflected taps
    source = np.where(source >= size, 2 * (size - 1) - source, source).astype(np.int64)
    out = np.zeros((len(sigmas), size, size))
    for i, s in enumerate(sigmas):
        if s is None:
            out[i] = np.eye(size)
            continue
        pdf = np.exp(-0.5 * (u / s) ** 2)
        pdf /= pdf.sum()
        pdf[pdf < 1e-8] = 0.0         # a small sigma's outer taps: denormal in float32, slow to multiply
        np.add.at(out[i], (np.arange(size)[:, None], source), pdf)        # reflected taps add up
    return out


def _gaussian_blur(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Separable blur of [n, 3, T, S, S] with one matrix per clip (``matrices`` [n, S, S], from
    :func:`_blur_matrices`): rows then columns, two batched matrix products. On one CPU thread
    as fast as the grouped 1 x k convolutions per plane they replace (1-2 ms per 8-frame view,
    tools/bench_augment.py), and on the GPU path two batched GEMMs instead of a grouped
    convolution over every plane of the batch."""
    m = matrices[:, None, None]                                                  # [n, 1, 1, S, S]
    return torch.matmul(m, torch.matmul(x, m.transpose(-1, -2)))


def _cutout(x: torch.Tensor, boxes: Sequence[tuple[int, int, int] | None]) -> torch.Tensor:
    """In place: fill one square per clip (every frame) with the per-channel mean of its first frame."""
    fill = x[:, :, 0].mean(dim=(-2, -1))                                        # [n, 3]
    if len(boxes) == 1:                       # one clip (the CPU schedule): a slice
        top, left, side = boxes[0]
        x[:, :, :, top:top + side, left:left + side] = fill[:, :, None, None, None]
        return x
    n, _, _, h, w = x.shape
    box = torch.tensor([b or (0, 0, 0) for b in boxes], device=x.device)
    top, left, side = box[:, 0, None], box[:, 1, None], box[:, 2, None]
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    hole = ((rows >= top) & (rows < top + side))[:, :, None] & ((cols >= left) & (cols < left + side))[:, None, :]
    return torch.where(hole.view(n, 1, 1, h, w), fill[:, :, None, None, None], x, out=x)


@functools.lru_cache(maxsize=16)
def _normalisation(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(-mean / std, 1 / std) shaped [1, 3, 1, 1, 1]: ``(x - mean) / std`` as one multiply-add."""
    m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    return ((-m / s).float().view(1, 3, 1, 1, 1).to(device), (1 / s).float().view(1, 3, 1, 1, 1).to(device))


def _augment_floats(x: torch.Tensor, params: Sequence[VideoAugParams], s: VideoAugSettings,
                    out: torch.Tensor) -> torch.Tensor:
    """Jitter, grayscale, blur, cutout and normalisation of [n, 3, T, S, S] floats in [0, 1] (x is
    overwritten), the result in ``out``. Steps no clip of the n needs are skipped."""
    before, hues, after = _jitter_slots(params)
    grays = np.array([p.grayscale for p in params], np.float32)
    blurs = any(p.blur_sigma is not None for p in params)
    host: dict[str, np.ndarray] = {f"before{j}": a for j, (a, _) in enumerate(before)}
    host |= {f"after{j}": a for j, (a, _) in enumerate(after)}
    if hues is not None:
        host["hue"] = hues[:, None] + np.array(HUE_OFFSETS) / 6.0 + 1.0      # frac needs u > 0
    if grays.any():
        host["gray"] = grays
    if blurs:
        host["blur"] = _blur_matrices([p.blur_sigma for p in params], s.blur_kernel, s.crop_size)
    dev = _on_device(host, x.device) if host else {}

    def linear(name: str, slots: list[tuple[np.ndarray, bool]]) -> None:
        for j, (coeffs, clamp) in enumerate(slots):
            _linear_jitter(x, dev[f"{name}{j}"], bool(coeffs[:, 1].any()), bool(coeffs[:, 2].any()), clamp)

    linear("before", before)
    if hues is not None:
        _hue_shift(x, dev["hue"])
    linear("after", after)
    if grays.all():
        x.copy_(_gray(x).expand_as(x))
    elif grays.any():
        x.lerp_(_gray(x).expand_as(x), _clip_shape(dev["gray"]))
    if blurs:
        x = _gaussian_blur(x, dev["blur"])
    if any(p.cutout for p in params):
        x = _cutout(x, [p.cutout for p in params])
    bias, scale = _normalisation(s.mean, s.std, x.device)
    return torch.addcmul(bias, x, scale, out=out)


def _one_frame_views(clips: Sequence[torch.Tensor], params: Sequence[ViewParams]) -> tuple[list, list, bool]:
    """Clips whose views have one parameter set per frame become one-frame clips (frame order)."""
    frames = [frame_params(p) for p in params]
    if all(f is None for f in frames):
        return list(clips), list(params), False
    if not all(f is not None and len(f) == len(c) for c, f in zip(clips, frames)):
        raise ValueError("per-frame parameters need one set per frame of every clip of the batch")
    return [f[None] for c in clips for f in c], [q for f in frames for q in f], True


def augment_video_batch(clips: Sequence[torch.Tensor], params: Sequence[ViewParams],
                        settings: VideoAugSettings = paper.VIDEO_AUG, batched: bool | None = None,
                        out: torch.Tensor | None = None) -> torch.Tensor:
    """Augment N views at once: uint8 frames ([T, H, W, 3] or [T, 3, H, W], sizes may differ
    between clips, T may not) with one parameter set each (or a tuple of one per frame) -> float32
    [N, 3, T, S, S] on the clips' device (written into ``out`` if given). ``batched``: the schedule
    (module docstring); default: one clip at a time on the CPU, the whole batch at once elsewhere."""
    frames = [_channels_first(c) for c in clips]
    n, t, size, device = len(frames), frames[0].shape[0], settings.crop_size, frames[0].device
    frames, views, per_frame = _one_frame_views(frames, params)
    batched = device.type != "cpu" if batched is None else batched
    if out is None:
        out = torch.empty(n, 3, t, size, size, device=device)
    # one-frame views are computed as [N * T, 3, 1, S, S], then put in place
    work = torch.empty(len(frames), 3, 1, size, size, device=device) if per_frame else out
    if batched:
        x = _crop_batched(frames, views, settings)
        _augment_floats(x, views, settings, out=work)
    else:
        for i, (f, p) in enumerate(zip(frames, views)):
            x = work[i:i + 1]
            torch.mul(_crop_uint8(f, p, settings).permute(1, 0, 2, 3), 1.0 / 255, out=x[0])
            _augment_floats(x, [p], settings, out=x)
    if per_frame:
        out.copy_(work.view(n, t, 3, size, size).permute(0, 2, 1, 3, 4))
    return out


def augment_video(frames: torch.Tensor, params: ViewParams,
                  settings: VideoAugSettings = paper.VIDEO_AUG) -> torch.Tensor:
    """Augment one view: uint8 frames [T, H, W, 3] (or [T, 3, H, W]) -> float32 [3, T, S, S]."""
    return augment_video_batch([frames], [params], settings)[0]


def eval_video_batch(clips: Sequence[torch.Tensor], settings: VideoAugSettings = paper.VIDEO_AUG,
                     resize: int = paper.EVAL_RESIZE, batched: bool | None = None) -> torch.Tensor:
    """No augmentation: resize the short side to ``resize``, centre crop, normalise -> [N, 3, T, S, S]."""
    s = dataclasses.replace(settings, eval_resize=resize, per_frame=False)
    return augment_video_batch(clips, [VideoAugParams(crop=None)] * len(clips), s, batched)


def eval_video(frames: torch.Tensor, settings: VideoAugSettings = paper.VIDEO_AUG,
               resize: int = paper.EVAL_RESIZE) -> torch.Tensor:
    """Evaluation transform of one clip: uint8 frames -> float32 [3, T, S, S]."""
    return eval_video_batch([frames], settings, resize)[0]


# --- audio ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _mel_tools(settings: AudioAugSettings, sample_rate: int, device: torch.device):
    """The STFT window and the mel filterbank [mels, freqs], made once per (settings, rate, device)."""
    window = torch.hann_window(settings.n_fft, periodic=True, device=device)   # librosa's "hann"
    fbank = torchaudio.functional.melscale_fbanks(
        settings.n_fft // 2 + 1, settings.f_min, settings.f_max, settings.n_mels, sample_rate,
        norm="slaney", mel_scale="slaney").to(device)                          # [freqs, mels]
    return window, fbank.T.contiguous()


def logmel(wave: torch.Tensor, settings: AudioAugSettings = paper.AUDIO_AUG,
           sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """Normalised log-mel of float waves [..., N] -> [..., n_mels, N // hop + 1].

    STFT (n_fft, periodic Hann of n_fft, hop, centred with reflect padding), power 2, Slaney mel
    filterbank with Slaney norm (as librosa), natural log(mel + eps), global normalisation.
    """
    window, fbank = _mel_tools(settings, sample_rate, wave.device)
    lead = wave.shape[:-1]
    spec = torch.stft(wave.reshape(-1, wave.shape[-1]).float(), settings.n_fft, settings.hop_length,
                      settings.n_fft, window, center=True, pad_mode="reflect", return_complex=True)
    parts = torch.view_as_real(spec).square_()                                # (re^2, im^2)
    mel = torch.matmul(fbank, torch.add(parts[..., 0], parts[..., 1]))
    out = mel.add_(settings.log_eps).log_().sub_(settings.norm_mean).div_(settings.norm_std)
    return out.reshape(*lead, *out.shape[-2:])


def _cubic_matrix(out_size: int, in_size: int, sources: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """[n, out_size, in_size]: torch's bicubic interpolation (a = -0.75) reading at ``sources``
    [n, out_size] (positions in input pixels), its four taps clamped to ``[first, last]`` of each
    row (the input interpolate sees); taps outside ``[0, in_size)`` read zeros."""
    a = -0.75
    base = np.floor(sources)
    t = sources - base

    def near(d):            # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):             # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1)            # [n, out, 4]
    taps = np.clip(base[..., None] + np.arange(-1, 3), first[:, None, None], last[:, None, None]).astype(np.int64)
    inside = (taps >= 0) & (taps < in_size)
    n, width = len(sources), in_size + 1
    cols = np.where(inside, taps, in_size)                                 # zeros -> a dropped column
    flat = (np.arange(n * out_size).reshape(n, out_size, 1) * width + cols).ravel()
    out = np.bincount(flat, (weights * inside).ravel(), minlength=n * out_size * width)   # clamped taps add up
    return out.reshape(n, out_size, width)[..., :in_size]


def _time_warp_matrix(n_steps: int, warps: Sequence[tuple[int, int] | None]) -> np.ndarray:
    """[n, T, T]: SpecAugment's time warp as a matrix on the time axis: [0, centre) stretched to
    new_centre steps and [centre, T) to the rest, each by bicubic interpolation
    (``align_corners=False``); None: the identity."""
    k = np.arange(n_steps)
    out = np.zeros((len(warps), n_steps, n_steps))
    for i, w in enumerate(warps):
        if w is None:
            out[i] = np.eye(n_steps)
            continue
        centre, new = w
        left = (k[:new] + 0.5) * (centre / new) - 0.5
        right = centre + (k[new:] - new + 0.5) * ((n_steps - centre) / (n_steps - new)) - 0.5
        rows_l = _cubic_matrix(new, n_steps, left[None], np.zeros(1), np.full(1, centre - 1.0))[0]
        rows_r = _cubic_matrix(n_steps - new, n_steps, right[None], np.full(1, float(centre)),
                               np.full(1, n_steps - 1.0))[0]
        out[i] = np.concatenate([rows_l, rows_r])
    return out


def _crop_matrices(params: Sequence[AudioAugParams], n_mels: int, n_steps: int,
                   canvas: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """([n, F, F], [n, T, T]): the BYOL-A crop of each view as row and column matrices on the
    spectrogram: the box of the zero canvas (spectrogram centred) resized back with bicubic,
    ``align_corners=True``; no crop: the identity."""
    ch, cw = int(canvas[0] * n_mels), int(canvas[1] * n_steps)
    y0, x0 = (ch - n_mels) // 2, (cw - n_steps) // 2
    box = np.array([p.crop or (y0, x0, n_mels, n_steps) for p in params], np.float64)

    def axis(size: int, offset: int, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        scale = np.where(size > 1, (length - 1) / max(size - 1, 1), 0.0)
        src = start[:, None] + scale[:, None] * np.arange(size) - offset        # in spectrogram pixels
        return _cubic_matrix(size, size, src, start - offset, start + length - 1 - offset)

    return axis(n_mels, y0, box[:, 0], box[:, 2]), axis(n_steps, x0, box[:, 1], box[:, 3])


def _masks(spec: torch.Tensor, params: Sequence[AudioAugParams]) -> torch.Tensor:
    """Frequency and time masks of [N, 1, F, T], filled with each spectrogram's mean (in place)."""
    n, _, f, t = spec.shape

    def boxes(ranges: Sequence[tuple[tuple[int, int], ...]]) -> np.ndarray:   # [n, count, 2], padded
        count = max(1, max(len(r) for r in ranges))
        return np.array([list(r) + [(0, 0)] * (count - len(r)) for r in ranges], np.float32).reshape(n, count, 2)

    dev = _on_device({"freq": boxes([p.freq_masks for p in params]), "time": boxes([p.time_masks for p in params])},
                     spec.device)

    def band(box: torch.Tensor, size: int) -> torch.Tensor:                 # [n, size]: inside any box
        pos = torch.arange(size, device=spec.device, dtype=torch.float32).view(1, 1, -1)
        return ((pos >= box[..., :1]) & (pos < box[..., :1] + box[..., 1:])).any(dim=1)

    hole = (band(dev["freq"], f)[:, :, None] | band(dev["time"], t)[:, None, :]).view(n, 1, f, t)
    return spec.lerp_(spec.mean(dim=(-3, -2, -1), keepdim=True).expand_as(spec), hole.float())


def augment_audio_batch(waves: torch.Tensor, params: Sequence[AudioAugParams],
                        settings: AudioAugSettings = paper.AUDIO_AUG,
                        sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """Augment N audio views: float waves [N, samples] in [-1, 1] -> [N, 1, n_mels, steps]."""
    volume = [p.volume for p in params]
    if any(v != 1.0 for v in volume):
        waves = waves.float() * _clip_shape(_on_device({"v": np.array(volume)}, waves.device)["v"], 2)
    spec = logmel(waves, settings, sample_rate)                                 # [N, F, T]
    n_mels, n_steps = spec.shape[-2:]
    if any(p.time_warp for p in params):
        warp = _on_device({"w": _time_warp_matrix(n_steps, [p.time_warp for p in params])}, spec.device)["w"]
        spec = torch.bmm(spec, warp.transpose(1, 2))
    spec = spec.unsqueeze(1)
    if any(p.freq_masks or p.time_masks for p in params):
        spec = _masks(spec, params)
    if any(p.crop for p in params):
        rows, cols = _crop_matrices(params, n_mels, n_steps, settings.crop_canvas)
        m = _on_device({"rows": rows, "cols": cols}, spec.device)
        spec = torch.bmm(torch.bmm(m["rows"], spec[:, 0]), m["cols"].transpose(1, 2)).unsqueeze(1)
    return spec


def augment_audio(wave: torch.Tensor, params: AudioAugParams, settings: AudioAugSettings = paper.AUDIO_AUG,
                  sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """Augment one audio view: float wave [N] -> [1, n_mels, steps]."""
    return augment_audio_batch(wave.reshape(1, -1), [params], settings, sample_rate)[0]


def eval_audio(wave: torch.Tensor, settings: AudioAugSettings = paper.AUDIO_AUG,
               sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """No augmentation: float wave [..., N] -> log-mel [..., 1, n_mels, steps]."""
    return logmel(wave, settings, sample_rate).unsqueeze(-3)
