"""Linear SVM on real labeled sounds (arcade game effects, class = file name without its number)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from avshards.build import build
from avshards.sources import SourceItem
from crisscross.checkpoint import save_checkpoint
from crisscross.cli import main as crisscross_cli
from crisscross.eval.features import load_backbones, protocol_spec
from crisscross.eval.protocols import Extraction, linear_eval
from crisscross.models import build_crisscross

CLASSES = ("coin", "error", "gameover", "hit", "hurt", "jump", "laser", "lose", "upgrade")   # 5 files each


@pytest.fixture(scope="module")
def sfx_shards(media, tmp_path_factory):
    """Audio-only shards: sounds 1-2 of each class are the test videos, sounds 3-5 train."""
    items = [SourceItem(str(media / f"audio/arcade_sfx/{c}{n}.wav"), c, "test" if n <= 2 else "train", id=f"{c}{n}")
             for c in CLASSES for n in range(1, 6)]
    out = tmp_path_factory.mktemp("sfx") / "arcade"
    report = build(items, out, workers=2, progress=False)
    assert report.num_samples == len(items)
    return str(out)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("feature-cache"))


def test_svm_beats_chance_on_real_sounds_with_random_features(sfx_shards, cache):
    """The linear SVM protocol end to end (C chosen on validation) learns real sounds: 18 test sounds
    of 9 classes, 2.5 x chance = 5 right (p ~ 0.05 by luck alone; 6-9 right here).

    Why not the 2 s ESC-50 window with 2 training clips (the test until issue 19): these sounds last
    0.13-1.07 s, so a 2 s log-mel is mostly padding and its random crop / masks often remove the
    sound; with 2 such clips per sound every C of the sweep scored 2-4 of 18 (even chosen on the test
    split), and the 9-sound validation part picked among them by noise (CI: C=0.005, 3 of 18). A
    0.5 s window and E.1's 10 training clips per sound: 4-9 of 18 over the grid and extraction seeds,
    the validation choice 6-9. Kills "labels shuffled against clips", "scores not averaged per video"."""
    spec = protocol_spec("audio_linear", "audio", audio_seconds=0.5)
    how = Extraction(None, train_clips=10, test_clips=1, cache_dir=cache, progress=False)
    report, table, (cm, classes) = linear_eval(load_backbones(None), [sfx_shards], spec, how)
    chance = 1 / len(CLASSES)
    assert report["accuracy"] >= 2.5 * chance, report["splits"]
    assert report["feature_dim"] == 1536            # 512 x 3 x 1: conv5 3x2 at 0.5 s, max pool (1,3)/(1,2)
    assert report["select_on"] == "validation" and "validation part" in report["notes"][0]
    # one vote per test sound: the confusion matrix counts each once, its diagonal is the accuracy
    assert classes == sorted(CLASSES) and cm.sum() == 2 * len(CLASSES) and (cm.sum(1) == 2).all()
    assert np.trace(cm) / cm.sum() == pytest.approx(report["accuracy"])
    assert "| random init |" in table


def test_audio_linear_features_are_4608_d():
    """E.1 ESC-50: 2 s log-mel (80 x 201) -> conv5 3x7 -> max pool (1,3) stride (1,2) -> 4608-d."""
    from crisscross.eval.features import pooled

    spec = protocol_spec("audio_linear", "audio")
    backbone = load_backbones(None)["audio"].to("meta")
    assert spec.audio_seconds == 2.0
    assert pooled(backbone, torch.empty(1, 1, 80, 201, device="meta"), spec).shape == (1, 4608)


@pytest.mark.slow
def test_cli_linear_reports_and_random_init_flag(sfx_shards, cache, tmp_path):
    ckpt = tmp_path / "run" / "checkpoint.pt"
    torch.manual_seed(123)
    save_checkpoint(ckpt, {"model": build_crisscross().state_dict()})
    args = [sfx_shards, "--modality", "audio", "--train-clips", "2", "--test-clips", "1", "--quiet",
            "--cache", cache, "--name", "arcade", "--device", "cpu"]
    runs = {}
    for name, extra in (("ckpt", [str(ckpt), "--with-baseline"]), ("flag", [str(ckpt), "--random-init"]),
                        ("word", ["random"])):
        out = tmp_path / name
        result = CliRunner().invoke(crisscross_cli, ["eval", "linear", *extra, *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((out / "linear-audio-arcade.json").read_text())
        assert (out / "linear-audio-arcade.md").read_text().startswith("# Linear SVM (audio) on arcade")
        assert (out / "linear-audio-arcade-confusion.png").stat().st_size > 1000
    assert runs["ckpt"]["method"] == "run" and not runs["ckpt"]["random_init"]
    assert runs["flag"]["random_init"] and runs["flag"]["method"] == "random init"
    # --random-init and CKPT "random" are the same network; the checkpoint's is another one.
    assert runs["flag"]["splits"] == runs["word"]["splits"]
    assert runs["ckpt"]["splits"][0]["sweep"] != runs["flag"]["splits"][0]["sweep"]
    # --with-baseline: the random-init row beside the checkpoint's, in one table.
    assert runs["ckpt"]["baseline"]["splits"] == runs["flag"]["splits"]
    table = (tmp_path / "ckpt" / "linear-audio-arcade.md").read_text()
    assert "| run |" in table and "| random init |" in table


def test_cli_linear_user_errors(sfx_shards, tmp_path):
    run = CliRunner().invoke(crisscross_cli, ["eval", "linear", str(tmp_path / "missing.pt"), sfx_shards])
    assert run.exit_code != 0 and "does not exist" in run.output and "Traceback" not in run.output
    run = CliRunner().invoke(crisscross_cli, ["eval", "linear", "random", sfx_shards, "--modality", "audio",
                                              "--train-split", "val", "--out", str(tmp_path), "--quiet",
                                              "--train-clips", "1", "--no-cache"])
    assert run.exit_code != 0 and "no samples with split 'val'" in run.output


def test_workers_give_the_same_features(sfx_shards):
    from crisscross.eval.features import extract

    backbones = load_backbones(None)
    spec = protocol_spec("audio_linear", "audio")
    one, two = (extract(sfx_shards, "test", backbones, [spec], 1, True, progress=False, workers=w)["audio"]
                for w in (0, 2))
    assert one.keys == two.keys == sorted(one.keys) and one.labels == two.labels
    assert torch.allclose(torch.from_numpy(one.features), torch.from_numpy(two.features), atol=1e-4)


# --- the SVM solver against scikit-learn's LinearSVC, on real features ------------------------------
@pytest.fixture(scope="module")
def sfx_features(sfx_shards):
    """Real features: 12 augmented clips per training sound, 2 uniform clips per test sound (4608-d)."""
    from crisscross.eval.features import extract

    backbones, spec = load_backbones(None), protocol_spec("audio_linear", "audio")
    train = extract(sfx_shards, "train", backbones, [spec], 12, True, progress=False)["audio"]
    test = extract(sfx_shards, "test", backbones, [spec], 2, False, progress=False)["audio"]
    return train, test


def _global_max(f):
    """The global max of conv5's first 256 channels, from the 4608-d (1,3)/(1,2) pooling (its windows
    cover the map): real features with fewer dimensions than rows."""
    from crisscross.eval.svm import ClipFeatures

    x = f.features.reshape(len(f.features), 512, 9).max(axis=2)[:, :256]
    return ClipFeatures(np.ascontiguousarray(x), f.video, f.keys, f.labels)


def _sklearn_objective(x, y, coef, intercept, C):
    """LinearSVC's primal objective (one-vs-rest squared hinge, regularised intercept), in float64."""
    classes = np.unique(y)
    targets = np.where(y[:, None] == (classes[1:] if len(classes) == 2 else classes)[None, :], 1.0, -1.0)
    w = np.concatenate([coef.T, intercept[None]], 0).astype(np.float64)
    scores = np.c_[x, np.ones(len(x))] @ w
    return float(0.5 * np.square(w).sum() + C * np.square(np.maximum(0, 1 - targets * scores)).sum())


@pytest.mark.slow
@pytest.mark.parametrize("features", ["conv5 4608-d (fewer rows than dims)", "global max 256-d (more rows)"])
def test_solver_matches_linearsvc_on_real_features(sfx_features, features):
    """Same objective, optimised at least as well as LinearSVC, the same predictions within noise.

    (LinearSVC at C=1 on the 4608-d features takes minutes: that C is checked on the 256-d ones.)"""
    import warnings

    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from crisscross.eval.svm import average_per_video
    from crisscross.eval.svm_solver import SVMProblem

    train, test = sfx_features if features.startswith("conv5") else map(_global_max, sfx_features)
    assert (len(train.features) < train.features.shape[1]) == features.startswith("conv5")
    classes = sorted(set(train.labels))
    y = np.array([classes.index(train.labels[v]) for v in train.video])
    truth = np.array([classes.index(c) for c in test.labels])
    scaler = StandardScaler().fit(train.features)
    xs, xt = scaler.transform(train.features), scaler.transform(test.features)
    problem, start = SVMProblem(train.features), None
    for C in (1e-4, 1e-2) if features.startswith("conv5") else (1e-4, 1e-2, 1.0):
        ours, start = problem.fit(y, C, start)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # LinearSVC does not converge at C=1 in 2000 iterations
            ref = LinearSVC(C=C, max_iter=2000, random_state=0).fit(xs, y)
        w = ours.weight.numpy()
        mine = _sklearn_objective(xs, y, w[:-1].T, w[-1], C)
        theirs = _sklearn_objective(xs, y, ref.coef_, ref.intercept_, C)
        assert mine <= theirs * 1.01, (C, mine, theirs)
        votes = [average_per_video(m, test.video, test.num_videos).argmax(1)
                 for m in (ours.decision_function(test.features), ref.decision_function(xt))]
        accuracy = [float((v == truth).mean()) for v in votes]
        assert abs(accuracy[0] - accuracy[1]) <= 2 / test.num_videos, (C, accuracy)   # 2 of 18 sounds
        assert (votes[0] == votes[1]).mean() >= 0.8, (C, votes)


def test_solver_binary_problem_has_one_column(sfx_features):
    """Two classes: one weight column, scores of the second class and their negation (as LinearSVC)."""
    from crisscross.eval.svm_solver import SVMProblem

    train, _ = sfx_features
    keep = np.isin(np.asarray(train.labels)[train.video], ["coin", "laser"])
    x, labels = train.features[keep], np.asarray(train.labels)[train.video][keep]
    y = (labels == "laser").astype(int)
    model, _ = SVMProblem(x).fit(y, 1e-2)
    assert model.weight.shape == (x.shape[1] + 1, 1) and model.classes.tolist() == [0, 1]
    scores = model.decision_function(x)
    assert np.allclose(scores[:, 0], -scores[:, 1]) and (scores.argmax(1) == y).mean() >= 0.95


# --- the feature cache ------------------------------------------------------------------------------
def test_cache_key_covers_checkpoint_seed_and_clip_settings(sfx_shards, tmp_path):
    """A change of the checkpoint (rewritten in place), the seed or any clip setting misses the cache
    (a new file, features of the new setting); the same settings hit it. Kills the mutants "the key
    leaves out the seed / the clip settings / the checkpoint's contents" (a stale feature set would be
    returned). The tiny model: what is cached does not depend on the network's size."""
    from crisscross.eval.features import cached_extract

    ckpt, cache = tmp_path / "run" / "checkpoint.pt", tmp_path / "cache"

    def write_checkpoint(seed):
        torch.manual_seed(seed)
        save_checkpoint(ckpt, {"model": build_crisscross("tiny").state_dict(), "config": {"model": "tiny"}})

    def run(spec, clips=1, augment=True, seed=0):
        backbones = load_backbones(str(ckpt))
        files = set(cache.glob("*.npz")) if cache.exists() else set()
        feats = cached_extract(cache, str(ckpt), sfx_shards, "test", backbones, [spec], clips, augment,
                               seed=seed, progress=False)["audio"]
        return feats.features, len(set(cache.glob("*.npz")) - files)

    write_checkpoint(1)
    spec = protocol_spec("audio_linear", "audio")
    base, new = run(spec)
    assert new == 1
    again, new = run(spec)
    assert new == 0 and np.array_equal(base, again)                                   # a hit
    changes = {"seed": dict(seed=1), "clips per video": dict(clips=2), "augmentation": dict(augment=False),
               "audio seconds": dict(spec=protocol_spec("audio_linear", "audio", audio_seconds=1.0))}
    for what, change in changes.items():
        feats, new = run(**{"spec": spec, **change})
        assert new == 1 and not np.array_equal(feats, base), what                       # a miss
    write_checkpoint(2)                                                               # same path, new weights
    feats, new = run(spec)
    assert new == 1 and not np.array_equal(feats, base)


@pytest.mark.slow      # ~40 s on 2 shared cores: it builds a second fold
def test_mean_and_std_over_split_folders(sfx_shards, media, tmp_path):
    """Two folds (fold 2 tests sounds 3-4 instead of 1-2): the report's accuracy is the mean of the
    folds' and accuracy_std their population standard deviation; the confusion matrix counts the 36
    test sounds of both. Kills "only the first fold", "sample std", "clips pooled across folds". The
    tiny model through a checkpoint, one clip per sound: the bookkeeping does not need the paper's."""
    items = [SourceItem(str(media / f"audio/arcade_sfx/{c}{n}.wav"), c, "test" if n in (3, 4) else "train", id=f"{c}{n}")
             for c in CLASSES for n in range(1, 6)]
    fold2 = tmp_path / "arcade-2"
    assert build(items, fold2, workers=2, progress=False).num_samples == len(items)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, {"model": build_crisscross("tiny").state_dict(), "config": {"model": "tiny"}})
    how = Extraction(str(ckpt), train_clips=1, test_clips=1, progress=False)
    report, _, (cm, _) = linear_eval(load_backbones(str(ckpt)), [sfx_shards, str(fold2)],
                                     protocol_spec("audio_linear", "audio", audio_seconds=0.5), how)
    folds = [s["accuracy"] for s in report["splits"]]
    assert len(folds) == 2 and folds[0] != folds[1], folds           # the case tells mean and std apart
    assert report["accuracy"] == pytest.approx(np.mean(folds))
    assert report["accuracy_std"] == pytest.approx(abs(folds[0] - folds[1]) / 2)     # population std
    assert cm.sum() == 2 * 2 * len(CLASSES) and np.trace(cm) == round(sum(folds) * 2 * len(CLASSES))
    assert "averaged over 2 split(s)" in report["notes"][1]
