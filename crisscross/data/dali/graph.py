"""The DALI graph: JPEG decode, temporally consistent video augmentation, volume, log-mel,
SpecAugment and the spectrogram crop, defined once for the GPU and for DALI's CPU operators.

:func:`two_view_graph` takes the named inputs of :mod:`crisscross.data.dali.inputs` (the frames,
the waveforms and each view's parameters, drawn on the host by :mod:`crisscross.data.params`,
the definition the torch backend applies too) and returns the batch's four views. ``device="gpu"``
decodes with nvJPEG (``decoders.image(device="mixed")``) and runs every operator on the device;
``"cpu"`` runs the same graph on CPU operators, so CI tests the production definition. Settings
come from :data:`crisscross.paper.VIDEO_AUG` / :data:`~crisscross.paper.AUDIO_AUG`, the table the
torch backend (:mod:`crisscross.data.augment`) reads too. A view's frames are one ``FHWC``
sequence, so its one parameter set covers every frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import nvidia.dali.math as dmath
import torch
from nvidia.dali import fn, types
from nvidia.dali.backend import TensorListGPU
from nvidia.dali.plugin.pytorch import feed_ndarray

from crisscross import paper
from crisscross.data.dali.inputs import AUDIO_INPUTS, VIDEO_INPUTS, VIEWS, canvas_size, jpeg_names

DEVICES = ("gpu", "cpu")
OUTPUTS = ("v1", "v2", "a1", "a2")
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)           # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
GPU_HW_DECODER_LOAD = 1.0      # share of JPEGs for the hardware decoder (untuned: no GPU measured yet)


# --- helpers ----------------------------------------------------------------------------------
def _int(x):
    """Cast to int32 (slice shapes, flags and orders must be integers)."""
    return fn.cast(x, dtype=types.INT32)


def _frame_size(jpeg0):
    """(height, width) of a JPEG from its header, as float DataNodes (no decode)."""
    shape = fn.cast(fn.peek_image_shape(jpeg0), dtype=types.FLOAT)
    return shape[0], shape[1]


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


# --- the graph ------------------------------------------------------------------------------------
def two_view_graph(inputs: Mapping[str, Any], device: str, augment: bool, video_frames: int,
                   video: paper.VideoAugSettings, audio: paper.AudioAugSettings, n_steps: int) -> tuple:
    """The DataNodes (v1, v2, a1, a2) from the named inputs of :mod:`crisscross.data.dali.inputs`
    (``inputs["v1_jpeg0"]``, ``inputs["a1"]``, ``inputs["v1_crop"]``...; no parameters without
    ``augment``: the evaluation transform)."""
    jpegs = jpeg_names(video_frames)
    outs = []
    for k, v in enumerate(VIEWS):
        p = {n: inputs[f"v{v}_{n}"] for n in VIDEO_INPUTS} if augment else None
        outs.append(augment_video([inputs[n] for n in jpegs[k * video_frames:(k + 1) * video_frames]], p, video, device))
    for v in VIEWS:
        p = {n: inputs[f"a{v}_{n}"] for n in AUDIO_INPUTS} if augment else None
        outs.append(augment_audio(_dev(inputs[f"a{v}"], device), p, audio, n_steps, device))
    return tuple(outs)


def to_torch(tensor_list, device: str | torch.device = "cpu") -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) as a torch tensor on ``device``."""
    dense = tensor_list.as_tensor()
    if isinstance(tensor_list, TensorListGPU):      # device to device copy
        out = torch.empty(dense.shape(), dtype=torch.float32, device=device)
        feed_ndarray(dense, out)
        return out
    return torch.from_numpy(np.array(dense)).to(device)
