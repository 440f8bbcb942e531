"""The torch reference augmentation backend (CPU or CUDA tensors, batched with per-clip parameters).

``augment_*`` applies the parameters that :mod:`crisscross.data.params` draws (one draw per view,
for all its frames) with torch ops only, so the same parameters give the same result on CPU and
CUDA, and the DALI backend can be tested against these functions with the same parameters.
All settings come from :mod:`crisscross.paper` (``VIDEO_AUG``, ``AUDIO_AUG``, ...).

Video, in this order (docs/data.md has the table):

1. random resized crop of ``crop = (top, left, height, width)`` (source pixels), resized to
   ``crop_size`` squared, bilinear with antialias, on uint8 (as DALI's resize does);
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

Audio: volume ``x * g`` -> log-mel (:func:`logmel`) -> optional time warp -> frequency masks ->
time masks (both filled with the mean of the spectrogram before masking) -> BYOL-A random resized
crop (the spectrogram centred on a zero canvas of ``crop_canvas`` times its size, a box of it
resized back with bicubic, ``align_corners=True``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
import torchaudio
from torchvision.transforms.v2 import functional as F

from crisscross import paper
from crisscross.data.params import AudioAugParams, VideoAugParams
from crisscross.paper import AudioAugSettings, VideoAugSettings


# --- video ---------------------------------------------------------------------------------------
def _channels_first(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] -> [T, 3, H, W]; [T, 3, H, W] passes through."""
    if frames.ndim != 4:
        raise ValueError(f"expected frames [T, H, W, 3] or [T, 3, H, W], got shape {tuple(frames.shape)}")
    return frames.permute(0, 3, 1, 2) if frames.shape[-1] == 3 and frames.shape[1] != 3 else frames


def _gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's luma on [..., 3, H, W] -> [..., 1, H, W]."""
    r, g, b = x.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _per_clip(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    """Per-clip scalars shaped to broadcast over [N, T, C, H, W]."""
    return torch.tensor(values, dtype=x.dtype).to(x.device, non_blocking=True).view(-1, 1, 1, 1, 1)


def _jitter_op(op: int, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """One colour jitter op on clips x [n, T, 3, H, W] with per-clip factors f [n, 1, 1, 1, 1]."""
    if op == 0:
        return (x * f).clamp(0, 1)
    if op == 1:
        mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
        return (f * x + (1 - f) * mean).clamp(0, 1)
    if op == 2:
        return (f * x + (1 - f) * _gray(x)).clamp(0, 1)
    return _hue_shift(x, f.squeeze(-3))


def _hue_shift(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """torchvision's HSV hue shift of clips x [n, T, 3, H, W] by ``turns``, without the HSV round
    trip (the colour jitter's costliest step): the closed form of HSV -> RGB,
    RGB_k = V - C * clamp(min(n_k, 4 - n_k), 0, 1), n_k = (k + 6 H) mod 6, k = 5, 3, 1
    (the DALI backend computes the same formula)."""
    r, g, b = x.unbind(dim=-3)
    hi, lo = torch.maximum(r, torch.maximum(g, b)), torch.minimum(r, torch.minimum(g, b))
    c = hi - lo
    safe = torch.where(c == 0, 1.0, c)                  # gray pixels: hue 0, no 0/0
    h6 = torch.where(hi == r, (g - b) / safe, torch.where(hi == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h6 = h6 + 6.0 * turns
    out = [hi - c * torch.minimum(n, 4.0 - n).clamp(0.0, 1.0)
           for n in (torch.remainder(h6 + k, 6.0) for k in (5.0, 3.0, 1.0))]
    return torch.stack(out, dim=-3)


def _color_jitter(x: torch.Tensor, params: Sequence[VideoAugParams]) -> torch.Tensor:
    """Each clip's jitter in its own order; clips sharing the op at a position run batched."""
    for position in range(4):
        for op in range(4):
            idx = [i for i, p in enumerate(params) if p.jitter_order[position] == op
                   and p.jitter[op] != (0.0 if op == 3 else 1.0)]
            if idx:
                sel = torch.tensor(idx, device=x.device)
                x[sel] = _jitter_op(op, x[sel], _per_clip([params[i].jitter[op] for i in idx], x))
    return x


def _gaussian_blur(x: torch.Tensor, sigmas: Sequence[float], kernel: int) -> torch.Tensor:
    """Separable gaussian blur of clips x [n, T, 3, H, W], one sigma per clip (torchvision's
    kernel: exp(-u^2 / (2 sigma^2)) on u = -(k-1)/2 .. (k-1)/2, normalised; reflect padding)."""
    n, t, c, h, w = x.shape
    u = torch.linspace(-(kernel - 1) / 2, (kernel - 1) / 2, kernel, dtype=x.dtype).to(x.device)
    sigma = torch.tensor(sigmas, dtype=x.dtype).to(x.device).view(-1, 1)
    k1d = torch.softmax(-0.5 * (u / sigma) ** 2, dim=1)               # [n, k]
    weight = k1d.repeat_interleave(t * c, dim=0)                       # one filter per plane
    planes = nnf.pad(x.reshape(1, n * t * c, h, w), [kernel // 2] * 4, mode="reflect")
    planes = nnf.conv2d(planes, weight.view(-1, 1, 1, kernel), groups=n * t * c)
    planes = nnf.conv2d(planes, weight.view(-1, 1, kernel, 1), groups=n * t * c)
    return planes.view(n, t, c, h, w)


def _cutout(x: torch.Tensor, boxes: Sequence[tuple[int, int, int] | None]) -> torch.Tensor:
    """Fill one square per clip (all frames) with the per-channel mean of the clip's first frame."""
    n, _, _, h, w = x.shape
    box = torch.tensor([b or (0, 0, 0) for b in boxes]).to(x.device, non_blocking=True)
    top, left, side = box[:, 0, None], box[:, 1, None], box[:, 2, None]
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows >= top) & (rows < top + side)                      # [n, h]
    in_cols = (cols >= left) & (cols < left + side)                    # [n, w]
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).view(n, 1, 1, h, w)
    fill = x[:, 0].mean(dim=(-2, -1)).view(n, 1, 3, 1, 1)
    return torch.where(mask, fill, x)


def _normalise(x: torch.Tensor, settings: VideoAugSettings) -> torch.Tensor:
    """ImageNet normalisation of [N, T, 3, H, W] -> [N, 3, T, H, W]."""
    mean = torch.tensor(settings.mean, dtype=x.dtype).to(x.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(settings.std, dtype=x.dtype).to(x.device).view(1, 1, 3, 1, 1)
    return ((x - mean) / std).permute(0, 2, 1, 3, 4).contiguous()


def augment_video_batch(clips: Sequence[torch.Tensor], params: Sequence[VideoAugParams],
                        settings: VideoAugSettings = paper.VIDEO_AUG) -> torch.Tensor:
    """Augment N views at once: uint8 frames ([T, H, W, 3] or [T, 3, H, W], sizes may differ
    between clips) with one parameter set each -> float32 [N, 3, T, S, S] on the clips' device."""
    size = [settings.crop_size, settings.crop_size]
    crops = [F.resized_crop(_channels_first(c), *p.crop, size=size, antialias=True)
             for c, p in zip(clips, params)]
    x = F.to_dtype(torch.stack(crops), torch.float32, scale=True)      # [N, T, 3, S, S]
    flips = [i for i, p in enumerate(params) if p.flip]
    if flips:
        x[flips] = x[flips].flip(-1)
    x = _color_jitter(x, params)
    grays = [i for i, p in enumerate(params) if p.grayscale]
    if grays:
        x[grays] = _gray(x[grays]).expand(-1, -1, 3, -1, -1)
    blurs = [i for i, p in enumerate(params) if p.blur_sigma is not None]
    if blurs:
        x[blurs] = _gaussian_blur(x[blurs], [params[i].blur_sigma for i in blurs], settings.blur_kernel)
    if any(p.cutout for p in params):
        x = _cutout(x, [p.cutout for p in params])
    return _normalise(x, settings)


def augment_video(frames: torch.Tensor, params: VideoAugParams,
                  settings: VideoAugSettings = paper.VIDEO_AUG) -> torch.Tensor:
    """Augment one view: uint8 frames [T, H, W, 3] (or [T, 3, H, W]) -> float32 [3, T, S, S]."""
    return augment_video_batch([frames], [params], settings)[0]


def eval_video_batch(clips: Sequence[torch.Tensor], settings: VideoAugSettings = paper.VIDEO_AUG,
                     resize: int = paper.EVAL_RESIZE) -> torch.Tensor:
    """No augmentation: resize the short side to ``resize``, centre crop, normalise -> [N, 3, T, S, S]."""
    out = [F.center_crop(F.resize(_channels_first(c), [resize], antialias=True),
                         [settings.crop_size, settings.crop_size]) for c in clips]
    return _normalise(F.to_dtype(torch.stack(out), torch.float32, scale=True), settings)


def eval_video(frames: torch.Tensor, settings: VideoAugSettings = paper.VIDEO_AUG,
               resize: int = paper.EVAL_RESIZE) -> torch.Tensor:
    """Evaluation transform of one clip: uint8 frames -> float32 [3, T, S, S]."""
    return eval_video_batch([frames], settings, resize)[0]


# --- audio ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _mel_tools(settings: AudioAugSettings, sample_rate: int, device: torch.device):
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
    mel = fbank @ (spec.real ** 2 + spec.imag ** 2)
    out = (torch.log(mel + settings.log_eps) - settings.norm_mean) / settings.norm_std
    return out.reshape(*lead, *out.shape[-2:])


def _time_warp(spec: torch.Tensor, centre: int, new_centre: int) -> torch.Tensor:
    """SpecAugment time warp of [C, F, T]: stretch [0, centre) to new_centre steps, squeeze the rest."""
    f, t = spec.shape[-2:]
    left = nnf.interpolate(spec[None, :, :, :centre], (f, new_centre), mode="bicubic", align_corners=False)
    right = nnf.interpolate(spec[None, :, :, centre:], (f, t - new_centre), mode="bicubic", align_corners=False)
    return torch.cat([left, right], dim=-1)[0]


def _masks(spec: torch.Tensor, params: Sequence[AudioAugParams]) -> torch.Tensor:
    """Frequency and time masks of [N, 1, F, T], filled with each spectrogram's mean."""
    n, _, f, t = spec.shape

    def band(ranges: Sequence[tuple[tuple[int, int], ...]], size: int) -> torch.Tensor:
        count = max((len(r) for r in ranges), default=0)
        if count == 0:
            return torch.zeros(n, size, dtype=torch.bool, device=spec.device)
        box = torch.tensor([list(r) + [(0, 0)] * (count - len(r)) for r in ranges])
        box = box.to(spec.device, non_blocking=True)                    # [n, count, 2]
        pos = torch.arange(size, device=spec.device).view(1, 1, -1)
        inside = (pos >= box[..., :1]) & (pos < box[..., :1] + box[..., 1:])
        return inside.any(dim=1)                                         # [n, size]

    freq = band([p.freq_masks for p in params], f)
    time = band([p.time_masks for p in params], t)
    mask = (freq[:, :, None] | time[:, None, :]).view(n, 1, f, t)
    return torch.where(mask, spec.mean(dim=(-3, -2, -1), keepdim=True), spec)


def _spec_crop(spec: torch.Tensor, crop: tuple[int, int, int, int], canvas: tuple[float, float]) -> torch.Tensor:
    """BYOL-A RandomResizeCrop of [C, F, T] with a given box on the zero canvas."""
    c, f, t = spec.shape
    ch, cw = int(canvas[0] * f), int(canvas[1] * t)
    board = spec.new_zeros(c, ch, cw)
    y, x = (ch - f) // 2, (cw - t) // 2
    board[:, y:y + f, x:x + t] = spec
    top, left, h, w = crop
    patch = board[None, :, top:top + h, left:left + w]
    return nnf.interpolate(patch, (f, t), mode="bicubic", align_corners=True)[0]


def augment_audio_batch(waves: torch.Tensor, params: Sequence[AudioAugParams],
                        settings: AudioAugSettings = paper.AUDIO_AUG,
                        sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """Augment N audio views: float waves [N, samples] in [-1, 1] -> [N, 1, n_mels, steps]."""
    gain = torch.tensor([p.volume for p in params], dtype=torch.float32).to(waves.device).view(-1, 1)
    spec = logmel(waves.float() * gain, settings, sample_rate).unsqueeze(1)
    if any(p.time_warp for p in params):
        spec = torch.stack([_time_warp(s, *p.time_warp) if p.time_warp else s for s, p in zip(spec, params)])
    spec = _masks(spec, params)
    if any(p.crop for p in params):
        spec = torch.stack([_spec_crop(s, p.crop, settings.crop_canvas) if p.crop else s
                            for s, p in zip(spec, params)])
    return spec


def augment_audio(wave: torch.Tensor, params: AudioAugParams, settings: AudioAugSettings = paper.AUDIO_AUG,
                  sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """Augment one audio view: float wave [N] -> [1, n_mels, steps]."""
    return augment_audio_batch(wave.reshape(1, -1), [params], settings, sample_rate)[0]


def eval_audio(wave: torch.Tensor, settings: AudioAugSettings = paper.AUDIO_AUG,
               sample_rate: int = paper.SAMPLE_RATE) -> torch.Tensor:
    """No augmentation: float wave [..., N] -> log-mel [..., 1, n_mels, steps]."""
    return logmel(wave, settings, sample_rate).unsqueeze(-3)
