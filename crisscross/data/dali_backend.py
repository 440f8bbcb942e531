"""The DALI augmentation backend: JPEG decode, temporally consistent video augmentation, volume
jitter, log-mel, SpecAugment and the spectrogram crop, defined once for the GPU and the CPU.

One pipeline definition, :func:`two_view_pipeline`, with a ``device`` switch: ``"gpu"`` decodes
with nvJPEG (``decoders.image(device="mixed")``) and runs every operator on the device;
``"cpu"`` (``device_id=None``) runs the same graph on CPU operators, so CI tests the production
definition. Settings come from :data:`crisscross.paper.VIDEO_AUG` / :data:`~crisscross.paper.AUDIO_AUG`,
the table the torch backend (:mod:`crisscross.data.augment`) reads too.

Parameters are either **drawn** inside DALI (``params="draw"``: ``fn.random.*``, one draw per view
applied to every frame of the view, so a view is temporally consistent) or **injected**
(``params="inject"``: fed per view through ``external_source``; tests inject the torch backend's
parameters to check parity, and a loader can inject parameters drawn from (seed, epoch, key) for
an exact resume). The injected parameters of one view (fed as ``v1_crop``, ``a2_masks``, ...):

================  ==========================================================================
video ``crop``    float32 [y, x, h, w]: crop box in source pixels, resized to ``crop_size``^2
video ``flip``    int32 0/1: horizontal flip
video ``jitter``  float32 [brightness, contrast, saturation, hue] factors (1, 1, 1, 0 = none)
video ``order``   int32[4]: order of the jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue)
video ``gray``    int32 0/1: grayscale
video ``sigma``   float32: gaussian blur sigma (0 = no blur), window ``blur_kernel``
video ``cutout``  float32 [y, x, size]: square hole filled with the first frame's mean (size 0 = none)
audio ``volume``  float32: gain applied to the waveform before the spectrogram
audio ``masks``   float32 [start, width] * (freq_masks + time_masks): frequency masks, then time masks
audio ``crop``    float32 [i, j, h, w]: BYOL-A crop box on the zero canvas (spectrogram centred)
================  ==========================================================================

Feeding: :class:`DaliAugmenter` takes per-clip selections (the 16 JPEGs and two audio slices that
DataLoader workers chose after doing the I/O) and returns the trainer's batch dict;
:func:`augment_batch` is the hook ``make_train_loader(backend="dali")`` calls with its prepared
clips; :class:`DaliShardLoader` reads shards with DALI's own ``readers.webdataset`` instead.
docs/dali.md says when to use which and what the measured differences to the torch backend are.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator, Sequence
from itertools import permutations
from typing import Any

import numpy as np
import nvidia.dali as dali       # ImportError here: the loader turns it into the install hint
import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, types

from avshards.format import WAV_HEADER_BYTES
from avshards.index import index_path
from crisscross import paper
from crisscross.data.augment import AudioAugParams, VideoAugParams
from crisscross.data.views import sample_views

VIEWS = ("1", "2")
VIDEO_PARAMS = ("crop", "flip", "jitter", "order", "gray", "sigma", "cutout")
AUDIO_PARAMS = ("volume", "masks", "crop")
OUTPUTS = ("v1", "v2", "a1", "a2")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)           # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
JITTER_ORDERS = [list(p) for p in permutations(range(4))]
GPU_HW_DECODER_LOAD = 1.0      # share of JPEGs for the hardware decoder (untuned: no GPU measured yet)


def audio_steps(audio_samples: int, s: paper.AudioAugSettings = paper.AUDIO_AUG) -> int:
    """Spectrogram frames of a centred STFT: 32000 samples -> 201."""
    return audio_samples // s.hop_length + 1


# --- parameters drawn by DALI ------------------------------------------------------------------
def _uniform(low: float, high: float):
    return fn.random.uniform(range=[float(low), float(high)])


def _randint(low, high):
    """Uniform integer in [low, high) per sample, as float; the bounds may be DataNodes."""
    return dmath.floor(low + _uniform(0.0, 1.0) * (high - low))


def _coin(p: float):
    """0.0 / 1.0 per sample, 1.0 with probability ``p``."""
    return fn.cast(fn.random.coin_flip(probability=float(p)), dtype=types.FLOAT)


def _int(x):
    """Cast to int32 (slice shapes, flags and orders must be integers)."""
    return fn.cast(x, dtype=types.INT32)


def _frame_size(jpeg0):
    """(height, width) of a JPEG from its header, as float DataNodes (no decode)."""
    shape = fn.cast(fn.peek_image_shape(jpeg0), dtype=types.FLOAT)
    return shape[0], shape[1]


def _round(v):
    """Round half up (torchvision's round() differs only on exact ties)."""
    return dmath.floor(v + 0.5)


def draw_crop_box(jpeg0, s: paper.VideoAugSettings, attempts: int = 10):
    """torchvision's RandomResizedCrop box [top, left, h, w] for the frames of ``jpeg0``: up to
    ``attempts`` draws of (area, log aspect), the first that fits wins, else the centre crop."""
    height, width = _frame_size(jpeg0)
    lo, hi = (math.log(r) for r in s.crop_ratio)
    in_ratio = width / height           # fallback: the largest centre box within the ratio range
    narrow, wide = in_ratio < min(s.crop_ratio), in_ratio > max(s.crop_ratio)
    w = narrow * width + wide * _round(height * max(s.crop_ratio)) + (1 - narrow - wide) * width
    h = narrow * _round(width / min(s.crop_ratio)) + wide * height + (1 - narrow - wide) * height
    found = 0.0 * height
    for _ in range(attempts):
        target = height * width * _uniform(*s.crop_scale)
        aspect = dmath.exp(_uniform(lo, hi))
        cw, ch = _round(dmath.sqrt(target * aspect)), _round(dmath.sqrt(target / aspect))
        take = (1.0 - found) * (cw <= width) * (ch <= height)     # first fitting attempt
        w, h = take * cw + (1.0 - take) * w, take * ch + (1.0 - take) * h
        found = found + take
    top = found * _randint(0, height - h + 1) + (1.0 - found) * dmath.floor((height - h) / 2.0)
    left = found * _randint(0, width - w + 1) + (1.0 - found) * dmath.floor((width - w) / 2.0)
    return fn.stack(top, left, h, w)


def draw_video_params(s: paper.VideoAugSettings, jpeg0) -> dict:
    """One view's video parameters drawn with ``fn.random`` (the crop for the frames of ``jpeg0``)."""
    on = _coin(s.jitter_p)
    factors = [1.0 + on * (_uniform(max(0.0, 1 - a), 1 + a) - 1.0)
               for a in (s.brightness, s.contrast, s.saturation)]
    which = _int(fn.random.uniform(values=list(range(len(JITTER_ORDERS)))))
    order = fn.stack(*[fn.lookup_table(which, keys=list(range(len(JITTER_ORDERS))),
                                       values=[float(o[k]) for o in JITTER_ORDERS]) for k in range(4)])
    side = _coin(s.cutout_p) * _randint(1, s.cutout_max_size + 1)
    cutout = fn.stack(_randint(0, s.crop_size - side + 1), _randint(0, s.crop_size - side + 1), side)
    return dict(crop=draw_crop_box(jpeg0, s), flip=_int(_coin(s.flip_p)),
                jitter=fn.stack(*factors, on * _uniform(-s.hue, s.hue)), order=_int(order),
                gray=_int(_coin(s.grayscale_p)), sigma=_coin(s.blur_p) * _uniform(*s.blur_sigma), cutout=cutout)


def draw_audio_params(s: paper.AudioAugSettings, n_steps: int) -> dict:
    """One view's audio parameters drawn with ``fn.random`` (SpecAugment widths randint[0, max))."""
    masks = []
    for count, max_w, extent in ((s.freq_masks, s.freq_mask_max, s.n_mels),
                                 (s.time_masks, s.time_mask_max, n_steps)):
        for _ in range(count):
            w = _randint(0, max_w)
            masks += [_randint(0, extent - w + 1), w]
    canvas_h, canvas_w = canvas_size(s, n_steps)
    # BYOL-A: h = clip(int(U * 80), 1, canvas_h); i = randint(0, canvas_h - h) inclusive
    h = dmath.clamp(dmath.floor(_uniform(*s.crop_scale) * s.n_mels), 1.0, float(canvas_h))
    w = dmath.clamp(dmath.floor(_uniform(*s.crop_scale) * n_steps), 1.0, float(canvas_w))
    i, j = _randint(0, canvas_h - h + 1), _randint(0, canvas_w - w + 1)
    on = _coin(s.crop_p)   # off: the box of the spectrogram itself on the canvas = identity
    i = on * i + (1 - on) * ((canvas_h - s.n_mels) // 2)
    j = on * j + (1 - on) * ((canvas_w - n_steps) // 2)
    h, w = on * h + (1 - on) * s.n_mels, on * w + (1 - on) * n_steps
    return dict(volume=_uniform(*s.volume), masks=fn.stack(*masks), crop=fn.stack(i, j, h, w))


def canvas_size(s: paper.AudioAugSettings, n_steps: int) -> tuple[int, int]:
    """BYOL-A's virtual crop canvas: (80, 301) for 80 x 201 and crop_canvas (1.0, 1.5)."""
    return int(s.n_mels * s.crop_canvas[0]), int(n_steps * s.crop_canvas[1])


def inject_params(prefix: str, names: Sequence[str]) -> dict:
    """``external_source`` nodes named ``prefix + name`` (e.g. ``v1_crop``), fed by the caller."""
    return {n: fn.external_source(name=f"{prefix}{n}") for n in names}


# --- video --------------------------------------------------------------------------------------
def _dev(node, device: str):
    """Parameters live on the CPU; arithmetic with device data needs them on the device."""
    return node.gpu() if device == "gpu" else node


def _layout(x, layout: str):
    """Arithmetic drops the layout; operators after it (and conditional merges) need it back."""
    return fn.reshape(x, layout=layout)


def _gray(x):
    """Luma of each pixel of an FHWC float sequence, as F x H x W x 1."""
    return fn.expand_dims(sum(w * x[:, :, :, c] for c, w in enumerate(GRAY_WEIGHTS)), axes=[3])


def _hue_shift(x, hue):
    """Shift the HSV hue by ``hue`` turns as torchvision's adjust_hue (value and saturation kept).

    Closed form without branches, so it fuses into one DALI arithmetic kernel:
    RGB_k = V - C * clamp(min(n_k, 4 - n_k), 0, 1), n_k = (k + 6 H) mod 6, k = 5, 3, 1.
    """
    r, g, b = x[:, :, :, 0], x[:, :, :, 1], x[:, :, :, 2]
    hi, lo = dmath.max(r, dmath.max(g, b)), dmath.min(r, dmath.min(g, b))
    c = hi - lo
    safe = c + (c == 0.0)                                   # gray pixels: hue 0, no 0/0
    is_r = hi == r
    is_g = (hi == g) & (hi != r)
    is_b = (hi != r) & (hi != g)
    h6 = is_r * ((g - b) / safe) + is_g * ((b - r) / safe + 2.0) + is_b * ((r - g) / safe + 4.0) + 6.0 * hue
    out = []
    for k in (5.0, 3.0, 1.0):
        n = k + h6
        n = n - 6.0 * dmath.floor(n / 6.0)
        out.append(hi - c * dmath.clamp(dmath.min(n, 4.0 - n), 0.0, 1.0))
    return fn.stack(*out, axis=3)


def _jitter(x, op: int, factor):
    """torchvision's adjust_brightness / contrast / saturation / hue on floats in [0, 255]."""
    if op == 0:
        y = dmath.clamp(x * factor, 0.0, 255.0)
    elif op == 1:    # blend with the mean luma of each frame, as torchvision on a [T, C, H, W] video
        mean = fn.reductions.mean(_gray(x), axes=[1, 2, 3], keep_dims=True)
        y = dmath.clamp((x - mean) * factor + mean, 0.0, 255.0)
    elif op == 2:
        gray = _gray(x)
        y = dmath.clamp((x - gray) * factor + gray, 0.0, 255.0)
    else:
        y = _hue_shift(x, factor)
    return _layout(y, "FHWC")


def _fill_box(x, anchor, shape, axis_names: str, fill, layout: str):
    """``x`` with the box(es) set to ``fill`` (a device tensor, so erase's CPU-only fill_value
    cannot take it): erase on a tensor of ones gives the mask, one multiply-add applies it."""
    keep = fn.erase(_layout(x * 0.0 + 1.0, layout), anchor=anchor, shape=shape, axis_names=axis_names,
                    fill_value=0.0)
    return _layout(x * keep + (1.0 - keep) * fill, layout)


def _eval_box(jpeg0, s: paper.VideoAugSettings):
    """ROI of torchvision's Resize(short side EVAL_RESIZE) + CenterCrop(crop_size), in source pixels."""
    height, width = _frame_size(jpeg0)
    wide = height <= width
    short = paper.EVAL_RESIZE
    rh = wide * short + (1 - wide) * dmath.floor(short * height / width)    # int(128 * long / short)
    rw = wide * dmath.floor(short * width / height) + (1 - wide) * short

    def round_half_even(v):                                  # Python's round(), as torchvision
        r = dmath.floor(v + 0.5)
        tie = (v + 0.5) == r
        return r - tie * (r - 2.0 * dmath.floor(r / 2.0))

    top, left = round_half_even((rh - s.crop_size) / 2.0), round_half_even((rw - s.crop_size) / 2.0)
    sy, sx = height / rh, width / rw
    return (fn.stack(top * sy, left * sx),
            fn.stack((top + s.crop_size) * sy, (left + s.crop_size) * sx))


def augment_video(jpegs: list, p: dict | None, s: paper.VideoAugSettings, device: str):
    """Decode a view's JPEG nodes and augment them as one sequence (``p=None``: eval transform).

    Returns a float DataNode [3, T, S, S] normalised with the table's mean and std.
    """
    # GPU: frames are small (~128 x 228), below nvJPEG's hybrid threshold, so every image the
    # hardware decoder does not take gets its Huffman stage on the CPU; hand them all to the
    # hardware decoder (A100/H100) to keep the CPU free. Fancy upsampling = libjpeg-turbo's
    # chroma upsampling, as the CPU decoder and torchvision do.
    options: dict = dict(device="cpu")
    if device == "gpu":
        options = dict(device="mixed", hw_decoder_load=GPU_HW_DECODER_LOAD, jpeg_fancy_upsampling=True)
    seq = fn.stack(*[fn.decoders.image(j, output_type=types.RGB, **options) for j in jpegs], axis_name="F")
    size = [s.crop_size, s.crop_size]
    if p is None:
        start, end = _eval_box(jpegs[0], s)
        x = fn.resize(seq, roi_start=start, roi_end=end, size=size)
    else:
        # cut first, then resize: the antialias filter must not reach past the box (as torchvision)
        box = _int(p["crop"])
        x = fn.resize(fn.slice(seq, start=fn.stack(box[0], box[1]), shape=fn.stack(box[2], box[3]),
                               axis_names="HW"), size=size)
    x = fn.cast(x, dtype=types.FLOAT)     # resized on uint8 (rounded), as the torch backend
    if p is not None:
        x = _augment_frames(x, p, s, device)
    mean = types.Constant(np.array([255 * m for m in s.mean], np.float32).reshape(1, 1, 1, 3))
    std = types.Constant(np.array([255 * v for v in s.std], np.float32).reshape(1, 1, 1, 3))
    return fn.transpose((x - mean) / std, perm=[3, 0, 1, 2])


def _augment_frames(x, p: dict, s: paper.VideoAugSettings, device: str):
    """Flip, jitter in the drawn order, grayscale, blur, cutout: one parameter set for all frames."""
    x = fn.flip(x, horizontal=p["flip"])
    order, factors = p["order"], _dev(p["jitter"], device)
    for slot in range(4):      # DALI conditionals: each sample takes the branch its order names
        op = order[slot]
        if op == 0:
            x = _jitter(x, 0, factors[0])
        elif op == 1:
            x = _jitter(x, 1, factors[1])
        elif op == 2:
            x = _jitter(x, 2, factors[2])
        else:
            x = _jitter(x, 3, factors[3])
    if p["gray"] == 1:
        x = _layout(fn.cat(*[_gray(x)] * 3, axis=3), "FHWC")
    if p["sigma"] > 0.0:
        x = fn.gaussian_blur(x, sigma=p["sigma"], window_size=s.blur_kernel)
    cut = p["cutout"]
    fill = fn.reductions.mean(x[0:1], axes=[0, 1, 2], keep_dims=True)     # first frame's mean colour
    return _fill_box(x, fn.stack(cut[0], cut[1]), fn.stack(cut[2], cut[2]), "HW", fill, "FHWC")


# --- audio ----------------------------------------------------------------------------------------
def augment_audio(wave, p: dict | None, s: paper.AudioAugSettings, n_steps: int, device: str):
    """Volume, log-mel, SpecAugment masks and the spectrogram crop of one view (``p=None``: log-mel
    only). Returns a float DataNode [1, n_mels, n_steps]."""
    if p is not None:
        wave = wave * _dev(p["volume"], device)
    spec = fn.spectrogram(wave, nfft=s.n_fft, window_length=s.n_fft, window_step=s.hop_length,
                          center_windows=True, reflect_padding=True, power=2)
    mel = fn.mel_filter_bank(spec, nfilter=s.n_mels, sample_rate=float(paper.SAMPLE_RATE),
                             freq_low=s.f_min, freq_high=s.f_max, normalize=True, mel_formula="slaney")
    x = (dmath.log(mel + s.log_eps) - s.norm_mean) / s.norm_std
    x = fn.reshape(fn.expand_dims(x, axes=[2]), layout="HWC")                 # 80 x T x 1
    if p is not None:
        x = _spec_masks(x, p["masks"], s, n_steps)
        x = _spec_crop(x, p["crop"], s, n_steps)
    return fn.transpose(x, perm=[2, 0, 1])


def _spec_masks(x, masks, s: paper.AudioAugSettings, n_steps: int):
    """Frequency then time masks, filled with the spectrogram's mean (0 dB would be the loudest)."""
    anchor, shape = [], []
    for k in range(s.freq_masks + s.time_masks):
        start, width = masks[2 * k], masks[2 * k + 1]
        if k < s.freq_masks:
            anchor += [start, 0.0 * start]
            shape += [width, 0.0 * width + n_steps]
        else:
            anchor += [0.0 * start, start]
            shape += [0.0 * width + s.n_mels, width]
    fill = fn.reductions.mean(x, keep_dims=True)
    return _fill_box(x, fn.stack(*anchor), fn.stack(*shape), "HW", fill, "HWC")


def _spec_crop(x, box, s: paper.AudioAugSettings, n_steps: int):
    """BYOL-A RandomResizeCrop: centre the spectrogram on a zero canvas, cut the box, resize it back
    with bicubic ``align_corners=True`` (emulated with a fractional ROI on DALI's pixel centres)."""
    canvas_h, canvas_w = canvas_size(s, n_steps)
    top, left = (canvas_h - s.n_mels) // 2, (canvas_w - n_steps) // 2
    i, j, h, w = box[0], box[1], box[2], box[3]
    crop = fn.slice(x, start=_int(fn.stack(i - top, j - left)), shape=_int(fn.stack(h, w)), axis_names="HW",
                    out_of_bounds_policy="pad", fill_values=0.0)
    # align_corners: output k samples input k * (h - 1) / (H - 1); DALI samples r0 + (k + .5) * step - .5
    step_y, step_x = (h - 1.0) / (s.n_mels - 1), (w - 1.0) / (n_steps - 1)
    y0, x0 = 0.5 - 0.5 * step_y, 0.5 - 0.5 * step_x
    return fn.resize(crop, roi_start=fn.stack(y0, x0), roi_end=fn.stack(y0 + s.n_mels * step_y, x0 + n_steps * step_x),
                     size=[s.n_mels, n_steps], interp_type=types.INTERP_CUBIC, antialias=False)


# --- the pipeline -----------------------------------------------------------------------------------
def two_view_graph(jpegs: dict, waves: dict, device: str, params: str, augment: bool,
                   video: paper.VideoAugSettings, audio: paper.AudioAugSettings, n_steps: int,
                   return_params: bool = False) -> tuple:
    """The graph shared by both feeding paths: ``jpegs["1"]`` = view 1's JPEG nodes, ``waves["1"]``
    its waveform node; returns the DataNodes (v1, v2, a1, a2), then with ``return_params`` every
    parameter in :func:`param_names` order (to check what ``fn.random`` drew)."""
    outs, drawn = [], []
    for v in VIEWS:
        p = None
        if augment:
            p = inject_params(f"v{v}_", VIDEO_PARAMS) if params == "inject" else draw_video_params(video, jpegs[v][0])
            drawn += [p[n] for n in VIDEO_PARAMS]
        outs.append(augment_video(jpegs[v], p, video, device))
    for v in VIEWS:
        p = None
        if augment:
            p = inject_params(f"a{v}_", AUDIO_PARAMS) if params == "inject" else draw_audio_params(audio, n_steps)
            drawn += [p[n] for n in AUDIO_PARAMS]
        outs.append(augment_audio(_dev(waves[v], device), p, audio, n_steps, device))
    return tuple(outs + drawn) if return_params else tuple(outs)


def param_names() -> list[tuple[str, str]]:
    """(view, name) of the parameters :func:`two_view_graph` returns after the four views."""
    return [(f"v{v}", n) for v in VIEWS for n in VIDEO_PARAMS] + [(f"a{v}", n) for v in VIEWS for n in AUDIO_PARAMS]


def two_view_pipeline(batch_size: int, device: str = "gpu", params: str = "draw", augment: bool = True,
                      video_frames: int = paper.VIDEO_FRAMES,
                      audio_samples: int = int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE),
                      video: paper.VideoAugSettings = paper.VIDEO_AUG, audio: paper.AudioAugSettings = paper.AUDIO_AUG,
                      num_threads: int = 2, seed: int = 0, device_id: int = 0, return_params: bool = False):
    """The DALI pipeline fed through ``external_source``: ``v1_jpeg0..7``, ``v2_jpeg0..7`` (uint8
    JPEG bytes), ``a1``/``a2`` (float32 waveforms of ``audio_samples``) and, with
    ``params="inject"``, the parameters of the module docstring. Outputs v1, v2, a1, a2.
    ``device="cpu"`` runs on CPU operators (no GPU needed)."""
    check_choice("device", device, ("gpu", "cpu"))
    check_choice("params", params, ("draw", "inject"))

    @dali.pipeline_def(enable_conditionals=True)
    def pipe():
        jpegs = {v: [fn.external_source(name=f"v{v}_jpeg{i}") for i in range(video_frames)] for v in VIEWS}
        waves = {v: fn.external_source(name=f"a{v}") for v in VIEWS}
        return two_view_graph(jpegs, waves, device, params, augment, video, audio,
                              audio_steps(audio_samples, audio), return_params)

    return pipe(batch_size=batch_size, num_threads=num_threads, seed=seed,
                device_id=device_id if device == "gpu" else None, prefetch_queue_depth=1)


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


def to_torch(tensor_list, device: str | torch.device = "cpu") -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) as a torch tensor on ``device``."""
    from nvidia.dali.backend import TensorListGPU
    from nvidia.dali.plugin.pytorch import feed_ndarray

    dense = tensor_list.as_tensor()
    if isinstance(tensor_list, TensorListGPU):      # device to device copy
        out = torch.empty(dense.shape(), dtype=torch.float32, device=device)
        feed_ndarray(dense, out)
        return out
    return torch.from_numpy(np.array(dense)).to(device)


class DaliAugmenter:
    """Batches of per-clip selections in, the trainer's batch dict out (the external_source path).

    A selection is ``{"jpeg": 2 * video_frames JPEG byte strings (view 1 then view 2), "a1": float32
    waveform, "a2": ...}``, plus with ``params="inject"`` ``"params": {"v1": {...}, "v2": {...},
    "a1": {...}, "a2": {...}}`` keyed as in the module docstring. Batches may be smaller than
    ``batch_size`` (the last one).
    """

    def __init__(self, batch_size: int, device: str = "cpu", params: str = "draw", augment: bool = True,
                 video_frames: int = paper.VIDEO_FRAMES, audio_seconds: float = paper.AUDIO_SECONDS,
                 num_threads: int = 2, seed: int = 0, device_id: int = 0,
                 video: paper.VideoAugSettings = paper.VIDEO_AUG, audio: paper.AudioAugSettings = paper.AUDIO_AUG,
                 return_params: bool = False):
        self.video_frames, self.params, self.augment = video_frames, params, augment
        self.batch_size = batch_size
        self.out_device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        self.pipe = two_view_pipeline(batch_size, device, params, augment, video_frames,
                                      int(audio_seconds * paper.SAMPLE_RATE), video, audio,
                                      num_threads, seed, device_id, return_params)
        self.pipe.build()

    def feed(self, clips: Sequence[dict]) -> None:
        """Hand one batch of selections to the pipeline's external sources."""
        n = self.video_frames
        for k, v in enumerate(VIEWS):
            for i in range(n):
                self.pipe.feed_input(f"v{v}_jpeg{i}", [np.frombuffer(c["jpeg"][k * n + i], np.uint8) for c in clips])
            # equal-shape inputs go in as one dense [B, ...] array: one copy instead of B
            self.pipe.feed_input(f"a{v}", np.stack([c[f"a{v}"] for c in clips]).astype(np.float32, copy=False))
        if self.augment and self.params == "inject":
            for view, names in (("v", VIDEO_PARAMS), ("a", AUDIO_PARAMS)):
                for v in VIEWS:
                    for name in names:
                        dtype = np.int32 if name in ("flip", "order", "gray") else np.float32
                        self.pipe.feed_input(f"{view}{v}_{name}",
                                             np.array([c["params"][f"{view}{v}"][name] for c in clips], dtype))

    def __call__(self, clips: Sequence[dict]) -> dict[str, Any]:
        """The batch {v1, v2, a1, a2} on the device (plus ``params`` with ``return_params``)."""
        self.feed(clips)
        outs = self.pipe.run()
        batch: dict[str, Any] = dict(zip(OUTPUTS, (to_torch(t, self.out_device) for t in outs[:4])))
        if len(outs) > 4:
            batch["params"] = {}
            for (view, name), t in zip(param_names(), outs[4:]):
                batch["params"].setdefault(view, {})[name] = torch.from_numpy(np.array(t.as_tensor()))
        return batch


def video_params(p: VideoAugParams) -> dict:
    """The torch backend's parameters of a video view in this pipeline's injected form."""
    return dict(crop=list(p.crop), flip=int(p.flip), jitter=list(p.jitter), order=list(p.jitter_order),
                gray=int(p.grayscale), sigma=p.blur_sigma or 0.0, cutout=list(p.cutout or (0, 0, 0)))


def audio_params(p: AudioAugParams, s: paper.AudioAugSettings, n_steps: int) -> dict:
    """The torch backend's parameters of an audio view in this pipeline's injected form."""
    if p.time_warp is not None:
        raise ValueError("the DALI backend has no time warp (it is off in pretraining); use --backend torch")
    freq = list(p.freq_masks) + [(0, 0)] * (s.freq_masks - len(p.freq_masks))
    time = list(p.time_masks) + [(0, 0)] * (s.time_masks - len(p.time_masks))
    canvas_h, canvas_w = canvas_size(s, n_steps)
    whole = ((canvas_h - s.n_mels) // 2, (canvas_w - n_steps) // 2, s.n_mels, n_steps)
    return dict(volume=p.volume, masks=[v for box in freq + time for v in box], crop=list(p.crop or whole))


_AUGMENTERS: dict = {}


def augment_batch(items: Sequence, device: str | torch.device = "cpu",
                  video_settings: paper.VideoAugSettings = paper.VIDEO_AUG,
                  audio_settings: paper.AudioAugSettings = paper.AUDIO_AUG) -> dict[str, torch.Tensor]:
    """The loader's hook: prepared clips (:class:`crisscross.data.loader.Prepared`: the worker's
    selection plus parameters drawn from (seed, epoch, key)) -> {v1, v2, a1, a2} on ``device``,
    decoded and augmented by DALI with those parameters injected, so resume stays exact."""
    device = torch.device(device)
    raw = items[0].raw
    frames, samples = len(raw.v1), len(raw.a1)
    key = (device, video_settings, audio_settings, frames, samples)
    aug = _AUGMENTERS.get(key)
    if aug is None or aug.batch_size < len(items):
        dali_device = "gpu" if device.type == "cuda" else "cpu"
        aug = _AUGMENTERS[key] = DaliAugmenter(len(items), dali_device, "inject", True, frames,
                                               samples / paper.SAMPLE_RATE, device_id=device.index or 0,
                                               video=video_settings, audio=audio_settings)
    steps = audio_steps(samples, audio_settings)
    clips = [{"jpeg": [it.raw.jpegs[j] for j in it.raw.v1 + it.raw.v2],
              "a1": it.raw.a1.astype(np.float32) / 32768.0, "a2": it.raw.a2.astype(np.float32) / 32768.0,
              "params": {"v1": video_params(it.video[0]), "v2": video_params(it.video[1]),
                         "a1": audio_params(it.audio[0], audio_settings, steps),
                         "a2": audio_params(it.audio[1], audio_settings, steps)}} for it in items]
    return aug(clips)


# --- DALI's own webdataset reader -------------------------------------------------------------------
class ViewSelector:
    """``fn.python_function`` body: one clip's json + mjpeg + wav bytes -> 2 * T JPEGs, 2 waveforms.

    This is the CPU-bound step of the reader path: the frames are one mjpeg member whose frame
    offsets are in the json, so only Python can cut them out (see docs/dali.md for the format
    change that would make it native). Starts come from :func:`crisscross.data.views.sample_views`
    with a generator seeded by (seed, key, the number of times this key was seen).
    """

    def __init__(self, mode: str, seed: int, video_frames: int, audio_samples: int):
        self.mode, self.seed, self.video_frames, self.audio_samples = mode, seed, video_frames, audio_samples
        self.seen: dict[int, int] = {}

    def __call__(self, meta: np.ndarray, mjpeg: np.ndarray, wav: np.ndarray) -> tuple:
        info = json.loads(meta.tobytes())
        key = zlib.crc32(info["key"].encode())
        visit = self.seen[key] = self.seen.get(key, -1) + 1
        rng = np.random.default_rng([self.seed, key, visit])
        n, T, N = info["num_frames"], self.video_frames, self.audio_samples
        starts = sample_views(n, info["num_samples"], self.mode, rng, T, N)
        off = info["frame_offsets"]
        frames = [min(t + k, n - 1) for t in (starts.v1, starts.v2) for k in range(T)]   # repeat the last
        jpegs = [mjpeg[off[i]:off[i + 1]] for i in frames]
        pcm = wav[WAV_HEADER_BYTES:].view("<i2")
        waves = []
        for a in (starts.a1, starts.a2):
            w = np.zeros(N, np.float32)
            piece = pcm[a:a + N].astype(np.float32) / 32768.0
            w[:len(piece)] = piece                              # zero-pad short clips, as the loader
            waves.append(w)
        return (*jpegs, *waves)


class DaliShardLoader:
    """Two-view batches straight from local or s3:// shards with ``readers.webdataset`` and their
    ``.idx`` files. Each of ``world_size`` ranks reads its part (sharded by sample index); every
    rank yields the same number of batches per epoch. Clips without audio are skipped."""

    def __init__(self, urls: Sequence[str], batch_size: int, mode: str = "mild", device: str = "cpu",
                 params: str = "draw", augment: bool = True, rank: int = 0, world_size: int = 1,
                 seed: int = 0, num_threads: int = 2, device_id: int = 0, shuffle: bool = True,
                 video_frames: int = paper.VIDEO_FRAMES, audio_seconds: float = paper.AUDIO_SECONDS):
        check_choice("params", params, ("draw",))      # the reader path draws inside DALI
        audio_samples = int(audio_seconds * paper.SAMPLE_RATE)
        selector = ViewSelector(mode, seed, video_frames, audio_samples)

        @dali.pipeline_def(enable_conditionals=True)
        def pipe():
            meta, mjpeg, wav = fn.readers.webdataset(
                paths=list(urls), index_paths=[index_path(u) for u in urls], ext=["json", "mjpeg", "wav"],
                missing_component_behavior="skip", shard_id=rank, num_shards=world_size,
                random_shuffle=shuffle, initial_fill=max(64, 4 * batch_size), pad_last_batch=True,
                seed=seed, name="reader")
            picked = fn.python_function(meta, mjpeg, wav, function=selector, num_outputs=2 * video_frames + 2)
            jpegs = {v: picked[k * video_frames:(k + 1) * video_frames] for k, v in enumerate(VIEWS)}
            waves = {v: picked[2 * video_frames + k] for k, v in enumerate(VIEWS)}
            return two_view_graph(jpegs, waves, device, params, augment, paper.VIDEO_AUG, paper.AUDIO_AUG,
                                  audio_steps(audio_samples))

        self.pipe = pipe(batch_size=batch_size, num_threads=num_threads, seed=seed,
                         device_id=device_id if device == "gpu" else None)
        self.pipe.build()
        self.out_device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        # equal batch counts on every rank: the smallest rank's share, whole batches only
        self.samples_per_rank = self.pipe.epoch_size("reader") // world_size
        self.num_batches = self.samples_per_rank // batch_size

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(self.num_batches):
            yield dict(zip(OUTPUTS, (to_torch(t, self.out_device) for t in self.pipe.run())))
