"""The DALI graph: JPEG decode, video augmentation, volume, log-mel, time warp, SpecAugment and
the spectrogram crop, defined once for the GPU and for DALI's CPU operators.

:func:`two_view_graph` takes the named inputs of :mod:`crisscross.data.dali.inputs` (the clip's
distinct frames, the views' frame indices, the waveforms and each view's parameters, drawn on the
host by :mod:`crisscross.data.params`, the definition the torch backend applies too) and returns
the batch's four views. ``device="gpu"`` decodes with nvJPEG (``decoders.image(device="mixed")``)
and runs every operator on the device; ``"cpu"`` runs the same graph on CPU operators, so CI tests
the production definition. Settings come from :data:`crisscross.paper.VIDEO_AUG` /
:data:`~crisscross.paper.AUDIO_AUG`, the table the torch backend (:mod:`crisscross.data.augment`)
reads too; an augmentation they turn off (a Table 5 subset) is left out of the graph. Each
distinct frame of a clip is decoded once, and each view picks its frames from them
(``sequence_rearrange``), as the torch path does. A view's frames are one ``FHWC`` sequence, so
its one parameter set covers every frame; with per-frame parameters (``per_frame``) each frame
is augmented as a one-frame sequence of its own.
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
from crisscross.data.dali.inputs import VIEWS, audio_params_used, canvas_size, jpeg_names, video_params_used

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
    """ROI of torchvision's Resize(short side eval_resize) + CenterCrop(crop_size), in source pixels."""
    height, width = _frame_size(jpeg0)
    wide = height <= width
    short = s.eval_resize
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


def decode_frames(inputs: Mapping[str, Any], video_frames: int, device: str):
    """The clip's distinct frames, each decoded once, as one uint8 sequence [2T, H, W, 3] (the
    slots past ``frames`` repeat frame 0 and are never picked)."""
    # GPU: frames are small (~128 x 228), below nvJPEG's hybrid threshold, so every image the
    # hardware decoder does not take gets its Huffman stage on the CPU; hand them all to the
    # hardware decoder (A100/H100) to keep the CPU free. Fancy upsampling = libjpeg-turbo's
    # chroma upsampling, as the CPU decoder and torchvision do.
    options: dict = dict(device="cpu")
    if device == "gpu":
        options = dict(device="mixed", hw_decoder_load=GPU_HW_DECODER_LOAD, jpeg_fancy_upsampling=True)
    slots = jpeg_names(video_frames)
    first = fn.decoders.image(inputs[slots[0]], output_type=types.RGB, **options)
    frames, count = [first], inputs["frames"]
    for k, slot in enumerate(slots[1:], start=1):
        if count > k:              # DALI conditionals: only the clips with a k-th frame decode one
            frame = fn.decoders.image(inputs[slot], output_type=types.RGB, **options)
        else:
            frame = first
        frames.append(frame)
    return fn.stack(*frames, axis_name="F")


def augment_view(frames, index, jpeg0, p: dict | None, s: paper.VideoAugSettings, device: str,
                 video_frames: int):
    """One view: its frames (``index`` into the decoded ``frames``) augmented as one sequence,
    or frame by frame with per-frame parameters (``s.per_frame``: row t of every parameter is
    frame t's; ``p=None``: eval transform). Returns a float DataNode [3, T, S, S]."""
    if p is None or not s.per_frame:
        return augment_video(fn.sequence_rearrange(frames, new_order=index), jpeg0, p, s, device)
    parts = [augment_video(fn.sequence_rearrange(frames, new_order=index[t:t + 1]), jpeg0,
                           {name: value[t] for name, value in p.items()}, s, device) for t in range(video_frames)]
    return fn.cat(*parts, axis=1)


def augment_video(seq, jpeg0, p: dict | None, s: paper.VideoAugSettings, device: str):
    """Augment a view's uint8 frames ``seq`` [T, H, W, 3] as one sequence (``p=None``: eval
    transform; ``jpeg0``: a frame's JPEG, for its size). Returns a float DataNode [3, T, S, S]
    normalised with the table's mean and std."""
    size = [s.crop_size, s.crop_size]
    if p is None or "crop" not in p:          # no multi-scale crop: the eval-style centre crop
        start, end = _eval_box(jpeg0, s)
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
    """Flip, jitter in the drawn order, grayscale, blur, cutout: one parameter set for all frames
    (each step only where the settings have it)."""
    if "flip" in p:
        x = fn.flip(x, horizontal=p["flip"])
    if "jitter" in p:
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
    if "gray" in p:
        if p["gray"] == 1:
            x = _layout(fn.cat(*[_gray(x)] * 3, axis=3), "FHWC")
    if "sigma" in p:
        if p["sigma"] > 0.0:
            x = fn.gaussian_blur(x, sigma=p["sigma"], window_size=s.blur_kernel)
    if "cutout" not in p:
        return x
    cut = p["cutout"]
    fill = fn.reductions.mean(x[0:1], axes=[0, 1, 2], keep_dims=True)     # first frame's mean colour
    return _fill_box(x, fn.stack(cut[0], cut[1]), fn.stack(cut[2], cut[2]), "HW", fill, "FHWC")


# --- audio ----------------------------------------------------------------------------------------
def augment_audio(wave, p: dict | None, s: paper.AudioAugSettings, n_steps: int, device: str):
    """Volume, log-mel, time warp, SpecAugment masks and the spectrogram crop of one view (each
    where the settings have it; ``p=None``: log-mel only). Returns a float DataNode
    [1, n_mels, n_steps]."""
    if p is not None and "volume" in p:
        wave = wave * _dev(p["volume"], device)
    spec = fn.spectrogram(wave, nfft=s.n_fft, window_length=s.n_fft, window_step=s.hop_length,
                          center_windows=True, reflect_padding=True, power=2)
    mel = fn.mel_filter_bank(spec, nfilter=s.n_mels, sample_rate=float(paper.SAMPLE_RATE),
                             freq_low=s.f_min, freq_high=s.f_max, normalize=True, mel_formula="slaney")
    x = (dmath.log(mel + s.log_eps) - s.norm_mean) / s.norm_std
    x = fn.reshape(fn.expand_dims(x, axes=[2]), layout="HWC")                 # 80 x T x 1
    if p is not None:
        if "warp" in p:
            x = _time_warp(x, p["warp"], s, n_steps)
        if "masks" in p:
            x = _spec_masks(x, p["masks"], s, n_steps)
        if "crop" in p:
            x = _spec_crop(x, p["crop"], s, n_steps)
    return fn.transpose(x, perm=[2, 0, 1])


def _time_warp(x, warp, s: paper.AudioAugSettings, n_steps: int):
    """SpecAugment's time warp: steps [0, centre) stretched to new_centre steps, the rest squeezed
    into what is left, each by cubic resampling (DALI's cubic is Catmull-Rom, a = -0.5; torch's
    bicubic uses a = -0.75, so warped bins differ a little, as in the spectrogram crop)."""
    centre, new = warp[0], warp[1]
    zero = 0.0 * centre
    left = fn.slice(x, start=_int(fn.stack(zero, zero)), shape=_int(fn.stack(zero + s.n_mels, centre)), axis_names="HW")
    right = fn.slice(x, start=_int(fn.stack(zero, centre)), shape=_int(fn.stack(zero + s.n_mels, n_steps - centre)),
                     axis_names="HW")
    cubic = dict(interp_type=types.INTERP_CUBIC, antialias=False)
    left = fn.resize(left, size=fn.stack(zero + s.n_mels, new), **cubic)
    right = fn.resize(right, size=fn.stack(zero + s.n_mels, n_steps - new), **cubic)
    return _layout(fn.cat(left, right, axis=1), "HWC")


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
    (``inputs["jpeg0"]``, ``inputs["v1_frames"]``, ``inputs["a1"]``, ``inputs["v1_crop"]``...; no
    parameters without ``augment``: the evaluation transform)."""
    frames = decode_frames(inputs, video_frames, device)
    jpeg0 = inputs[jpeg_names(video_frames)[0]]
    outs = []
    for v in VIEWS:
        p = {n: inputs[f"v{v}_{n}"] for n in video_params_used(video)} if augment else None
        outs.append(augment_view(frames, inputs[f"v{v}_frames"], jpeg0, p, video, device, video_frames))
    for v in VIEWS:
        p = {n: inputs[f"a{v}_{n}"] for n in audio_params_used(audio)} if augment else None
        outs.append(augment_audio(_dev(inputs[f"a{v}"], device), p, audio, n_steps, device))
    return tuple(outs)


def to_torch(tensor_list, device: str | torch.device = "cpu") -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) as a torch tensor on ``device``; a GPU copy is queued
    on torch's current stream (what DALI's own PyTorch iterator does), so nothing waits."""
    dense = tensor_list.as_tensor()
    if isinstance(tensor_list, TensorListGPU):      # device to device copy
        out = torch.empty(dense.shape(), dtype=torch.float32, device=device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(out.device))
        return out
    return torch.from_numpy(np.array(dense)).to(device)
