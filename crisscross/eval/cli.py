"""`crisscross eval`: one command per protocol of appendix E, each writing a JSON report, a
markdown table laid out like the paper's and (for classification) a confusion matrix picture.

CKPT is a checkpoint file, a run folder or an exported model folder; "random" (or --random-init)
evaluates a randomly initialised network instead - the baseline that shows what pretraining added.
SHARDS are one or more shard folders, one per split / fold (built with `avshards build --dataset`);
the reported accuracy is their average.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import replace

import click

from crisscross import paper
from crisscross.cliutil import check_device, default_device, options, report
from crisscross.eval.errors import EvalError

FINETUNE_DATASETS = sorted({name for name, _ in paper.FINETUNE})
PROBE_PRESETS = sorted(paper.PROBE_CLIPS_PER_VIDEO)


# Arguments and options every protocol shares.
common_options = options(
    click.argument("ckpt"),
    click.argument("shards", nargs=-1, required=True),
    click.option("--random-init", is_flag=True, help="Evaluate a randomly initialised network "
                 "(the baseline) instead of CKPT; same as passing CKPT 'random'."),
    click.option("--out", default="eval", show_default=True, type=click.Path(file_okay=False),
                 help="Folder for the report files (NAME.json, NAME.md, NAME-confusion.png)."),
    click.option("--name", default=None, help="Dataset name used as the table column "
                 "(default: the shard folders' name)."),
    click.option("--label", default=None, help="Method name used as the table row "
                 "(default: the run folder's name, or 'random init')."),
    click.option("--train-split", default="train", show_default=True,
                 help="Value of the samples' json 'split' used for training."),
    click.option("--test-split", default="test", show_default=True,
                 help="Value of the samples' json 'split' used for testing."),
    click.option("--device", default=default_device, show_default="cuda if available, else cpu",
                 callback=check_device, help="Torch device for the backbone (and the SVM's solver)."),
    click.option("--batch-size", type=click.IntRange(1), default=None,
                 help="Clips per forward pass (feature protocols: 32) or training batch size "
                 "(fine-tuning / probe: the paper's setting)."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of clip sampling, augmentations, validation split and random init."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)


# Options of the frozen-feature protocols (SVM, fusion, retrieval).
feature_options = options(
    click.option("--train-clips", type=click.IntRange(1), default=None,
                 help="Clips per training video (default: the protocol's, e.g. 25 video / 10 audio)."),
    click.option("--test-clips", type=click.IntRange(1), default=None,
                 help="Uniformly spaced clips per test video (default: the protocol's, 10)."),
    click.option("--frames", type=click.IntRange(1), default=None,
                 help="Frames per video clip (default: the protocol's: 8; retrieval 32, E.3's 2 s)."),
    click.option("--crop-size", type=click.IntRange(16), default=None,
                 help="Video crop size (default: the protocol's: 224 for the video linear SVM, E.1 - build "
                 "those shards with --short-side 256; 112 for retrieval and fusion)."),
    click.option("--audio-seconds", type=click.FloatRange(0.1), default=None,
                 help="Audio per clip (default: the protocol's, 2 s; the paper's ESC-50 Table 8 uses 5 "
                 "with --test-clips 1)."),
    click.option("--cache", default=None, type=click.Path(file_okay=False),
                 help="Feature cache folder (default: OUT/cache)."),
    click.option("--no-cache", is_flag=True, help="Always extract features; write no cache."),
    click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
                 help="Processes reading (and on a CPU decoding and transforming) clips; 0: the main process."),
    click.option("--with-baseline", is_flag=True,
                 help="Also evaluate the random-init network and add its row to the same table."),
)


def user_errors(f: Callable) -> Callable:
    """Turn the errors a user can cause into one clear line instead of a traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from avshards.format import SchemaError
        from avshards.reader import TruncatedShardError
        from avshards.remote import ShardAccessError, TransientError

        try:
            return f(*args, **kwargs)
        except (EvalError, SchemaError, FileNotFoundError, ShardAccessError, TruncatedShardError,
                TransientError) as e:
            report(e)          # one sentence, the exit code of its kind (crisscross.cliutil)
    return wrapper


def _checkpoint(ckpt: str, random_init: bool) -> str | None:
    if random_init or ckpt == "random":
        return None
    if not os.path.exists(ckpt):
        raise EvalError(f"checkpoint {ckpt} does not exist; pass a checkpoint file, a run folder, "
                        "or 'random' for the random-initialisation baseline")
    return ckpt


def _check_shards(shards: tuple[str, ...]) -> list[str]:
    for s in shards:
        if "://" not in s and not os.path.exists(s) and "{" not in s:
            raise EvalError(f"shard folder {s} does not exist; build it with `avshards build --dataset NAME`")
    return list(shards)


def _extraction(ckpt, out, cache, no_cache, batch_size, device, seed, quiet, train_split, test_split,
                train_clips, test_clips, workers):
    from crisscross.eval.protocols import Extraction

    return Extraction(ckpt, train_clips, test_clips, train_split, test_split,
                      None if no_cache else (cache or os.path.join(out, "cache")), batch_size or 32,
                      device, seed, not quiet, workers)


def _with_baseline(ckpt: str | None, label: str | None, with_baseline: bool, run: Callable) -> tuple:
    """``run(checkpoint, row label)``; with the baseline, run it again on the random-init network (of
    the checkpoint's architecture) and add that row to the table (and its report under "baseline")."""
    report, table, extra = run(ckpt, label)
    if with_baseline and ckpt is not None:
        base, base_table, _ = run(None, None)
        report["baseline"] = base
        table += "".join(line + "\n" for line in base_table.splitlines()[2:])
    return report, table, extra


def _finish(out: str, name: str, report: dict, table: str, confusion) -> None:
    from crisscross.eval.report import write_report

    paths = write_report(out, name, report, table, confusion)
    click.echo(table, nl=False)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@click.group("eval", context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Evaluate a checkpoint with the paper's protocols (appendix E).

    \b
    crisscross eval linear   CKPT SHARDS...   linear SVM on frozen features (E.1)
    crisscross eval fusion   CKPT SHARDS...   video+audio features -> SVM (E.1)
    crisscross eval retrieval CKPT SHARDS...  nearest-neighbour retrieval R@1/5/20 (E.3)
    crisscross eval finetune CKPT SHARDS...   full fine-tuning, Table S11 (E.2)
    crisscross eval probe    CKPT SHARDS...   linear layer on a frozen backbone (E.1, large sets)
    crisscross eval table    REPORTS...       one paper-style table from several reports

    \b
    Example:
      crisscross eval linear runs/k400 shards/esc50-1 --modality audio --with-baseline
    """


@eval_group.command("linear")
@common_options
@feature_options
@click.option("--modality", type=click.Choice(["video", "audio"]), default="video", show_default=True,
              help="Which backbone's features to classify.")
@click.option("--protocol", type=click.Choice(["auto", "video_linear", "audio_linear", "dcase_linear"]),
              default="auto", show_default=True,
              help="Clip counts / pooling / audio length (auto: video_linear or audio_linear; "
              "dcase_linear: 60 clips of 1 s).")
@click.option("--select-on-test", is_flag=True,
              help="Choose C on the test split, as the paper does (optimistic; the report says so).")
@user_errors
def linear_command(ckpt, shards, random_init, out, name, label, train_split, test_split, device, batch_size,
                   seed, quiet, train_clips, test_clips, frames, crop_size, audio_seconds, cache, no_cache,
                   workers, with_baseline, modality, protocol, select_on_test):
    """Linear SVM with the C sweep on frozen CKPT features of SHARDS (one folder per split / fold).

    Defaults are E.1's: video 8 frames at 224^2 (build the shards with --short-side 256), 25
    augmented training clips and 10 uniform test clips per video; audio 2 s, 10 and 10. C is
    chosen on a validation part of the training split (--select-on-test: on the test split, as
    the paper does).

    \b
    Examples:
      crisscross eval linear runs/k400 shards/ucf101-1 shards/ucf101-2 shards/ucf101-3 --name UCF101
      crisscross eval linear runs/k400 shards/esc50-1 --modality audio --with-baseline --name ESC50
      crisscross eval linear random shards/hmdb51-1 --crop-size 112 --quiet   # quick 112^2 look
    """
    from crisscross.eval.features import load_backbones, protocol_spec
    from crisscross.eval.protocols import linear_eval

    ckpt = _checkpoint(ckpt, random_init)
    protocol = protocol if protocol != "auto" else f"{modality}_linear"
    p = paper.EVAL[protocol]
    spec = protocol_spec(protocol, modality, frames, crop_size, audio_seconds)
    how = _extraction(ckpt, out, cache, no_cache, batch_size, device, seed, quiet, train_split, test_split,
                      train_clips or p.train_clips, test_clips or p.test_clips, workers)
    urls = _check_shards(shards)
    report, table, cm = _with_baseline(ckpt, label, with_baseline, lambda c, row: linear_eval(
        load_backbones(c, device, seed, like=ckpt), urls, spec, replace(how, checkpoint=c),
        "test" if select_on_test else "validation", name, row))
    _finish(out, f"linear-{modality}-{report['dataset']}", report, table, cm)


@eval_group.command("fusion")
@common_options
@feature_options
@click.option("--select-on-test", is_flag=True,
              help="Choose C on the test split, as the paper does (optimistic; the report says so).")
@user_errors
def fusion_command(ckpt, shards, random_init, out, name, label, train_split, test_split, device, batch_size,
                   seed, quiet, train_clips, test_clips, frames, crop_size, audio_seconds, cache, no_cache,
                   workers, with_baseline, select_on_test):
    """Late fusion: video and audio features of the same clips concatenated -> linear SVM.

    Reports the paper's Table 2 rows: audio alone (a), video alone (v) and both (a+v).

    \b
    Example:
      crisscross eval fusion runs/ks shards/ks --name KS --select-on-test
    """
    from crisscross.eval.features import load_backbones, protocol_spec
    from crisscross.eval.protocols import fusion_eval

    ckpt = _checkpoint(ckpt, random_init)
    p = paper.EVAL["fusion_video"]
    specs = [protocol_spec("fusion_video", "video", frames, crop_size),
             protocol_spec("fusion_audio", "audio", audio_seconds=audio_seconds)]
    how = _extraction(ckpt, out, cache, no_cache, batch_size, device, seed, quiet, train_split, test_split,
                      train_clips or p.train_clips, test_clips or p.test_clips, workers)
    urls = _check_shards(shards)
    report, table, cm = _with_baseline(ckpt, label, with_baseline, lambda c, row: fusion_eval(
        load_backbones(c, device, seed, like=ckpt), urls, specs, replace(how, checkpoint=c),
        "test" if select_on_test else "validation", name, row))
    _finish(out, f"fusion-{report['dataset']}", report, table, cm)


@eval_group.command("retrieval")
@common_options
@feature_options
@click.option("--modality", type=click.Choice(["video", "audio"]), default="video", show_default=True,
              help="Which backbone's features to retrieve with.")
@user_errors
def retrieval_command(ckpt, shards, random_init, out, name, label, train_split, test_split, device,
                      batch_size, seed, quiet, train_clips, test_clips, frames, crop_size, audio_seconds,
                      cache, no_cache, workers, with_baseline, modality):
    """Retrieval: each test video queries the training videos; R@1/5/20 (E.3, Table 7).

    Features are the mean of 10 uniformly spaced 2 s clips (32 frames) per video.

    \b
    Example:
      crisscross eval retrieval runs/k400 shards/ucf101-1 --name UCF101
    """
    from crisscross.eval.features import load_backbones, protocol_spec
    from crisscross.eval.protocols import retrieval_eval

    ckpt = _checkpoint(ckpt, random_init)
    p = paper.EVAL["retrieval"]
    spec = protocol_spec("retrieval", modality, frames, crop_size, audio_seconds)
    how = _extraction(ckpt, out, cache, no_cache, batch_size, device, seed, quiet, train_split, test_split,
                      train_clips or p.train_clips, test_clips or p.test_clips, workers)
    urls = _check_shards(shards)
    report, table, _ = _with_baseline(ckpt, label, with_baseline, lambda c, row: retrieval_eval(
        load_backbones(c, device, seed, like=ckpt), urls, spec, replace(how, checkpoint=c), name, row))
    _finish(out, f"retrieval-{modality}-{report['dataset']}", report, table, None)


def _milestones(ctx, param, value: str | None) -> tuple[int, ...] | None:
    """``--milestones 6,10,14`` -> (6, 10, 14), with one clear line for anything else."""
    if not value:
        return None
    try:
        out = tuple(int(m) for m in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of epochs, e.g. 6,10,14") from None
    if any(m < 1 for m in out) or list(out) != sorted(out):
        raise click.BadParameter(f"{value!r}: milestones are increasing epochs from 1, e.g. 6,10,14")
    return out


# Options of the supervised protocols (fine-tuning, probe).
training_options = options(
    click.option("--frames", type=click.Choice(["8", "32"]), default="8", show_default=True,
                 help="Frames per clip (Table S11's two setups)."),
    click.option("--crop-size", type=click.IntRange(16), default=None,
                 help="Crop size (default 224, Table S11; use small values only for quick tests)."),
    click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs (default: the preset's)."),
    click.option("--epoch-size", type=click.IntRange(1), default=None,
                 help="Training clips per epoch (default: the preset's; the milestones count these epochs)."),
    click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
                 help="Learning rate (default: the preset's)."),
    click.option("--milestones", default=None, callback=_milestones,
                 help="Comma-separated epochs where the LR drops (default: the preset's)."),
    click.option("--test-clips", type=click.IntRange(1), default=None, help="Uniform clips per test video (10)."),
    click.option("--max-steps", type=click.IntRange(1), default=None,
                 help="Stop training after this many steps (quick checks)."),
    click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
                 help="DataLoader worker processes reading (and on a CPU decoding) training clips."),
)


def _settings(base, frames, crop_size, epochs, epoch_size, lr, milestones, test_clips, batch_size):
    import dataclasses

    changes = {"frames": int(frames), "crop_size": crop_size, "epochs": epochs, "epoch_size": epoch_size,
               "lr": lr, "test_clips": test_clips, "batch_size": batch_size, "milestones": milestones}
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def _supervised(ckpt, shards, random_init, out, name, label, train_split, test_split, device, seed, quiet,
                settings, protocol, max_steps, workers, clips_per_video=1):
    from crisscross.eval.features import ClipSpec, load_backbones, protocol_spec
    from crisscross.eval.finetune import Classifier, finetune_report, shard_classes, train_classifier
    from crisscross.eval.linear_layer import linear_probe
    from crisscross.eval.protocols import dataset_name, method_label
    from crisscross.eval.report import confusion_matrix, markdown_table, mean_std

    ckpt = _checkpoint(ckpt, random_init)
    urls = _check_shards(shards)
    results = []
    for url in urls:
        classes = shard_classes(url, train_split)
        backbone = load_backbones(ckpt, device, seed)["video"]    # fresh weights for every split
        kw = dict(train_split=train_split, test_split=test_split, device=device, seed=seed,
                  max_steps=max_steps, workers=workers, progress=not quiet)
        if protocol == "finetune":
            spec = ClipSpec("video", settings.frames, settings.crop_size)
            model = Classifier(backbone, len(classes), settings.dropout)
            results.append(train_classifier(model, url, classes, settings, spec, **kw))
        else:
            base = protocol_spec("video_linear", "video")
            spec = ClipSpec("video", settings.frames, settings.crop_size, pool=base.pool,
                            pool_stride=base.pool_stride)
            results.append(linear_probe(backbone, url, classes, settings, spec, clips_per_video, **kw))
    name, label = name or dataset_name(urls), label or method_label(ckpt)
    report = finetune_report(results[0], settings, spec, urls, ckpt, name, label, protocol)
    report["accuracy"], report["accuracy_std"] = mean_std([r.accuracy for r in results])
    report["splits"] = [r.to_json() for r in results]
    classes = results[0].classes
    cm = sum(confusion_matrix(r.y_true, r.y_pred, len(classes)) for r in results if r.classes == classes)
    table = markdown_table(["Method", f"{name} ({settings.frames} frames)"], [[label, report["accuracy"]]])
    _finish(out, f"{protocol}-{name}-{settings.frames}f", report, table, (cm, classes))


@eval_group.command("finetune")
@common_options
@training_options
@click.option("--preset", type=click.Choice(FINETUNE_DATASETS), default="ucf101", show_default=True,
              help="Which Table S11 column to take the hyper-parameters from.")
@user_errors
def finetune_command(ckpt, shards, random_init, out, name, label, train_split, test_split, device, batch_size,
                     seed, quiet, frames, crop_size, epochs, epoch_size, lr, milestones, test_clips, max_steps,
                     workers, preset):
    """Full fine-tuning of the video backbone + a new linear layer (Table S11), 10-clip test.

    An epoch is the preset's epoch size (UCF101 95K clips, HMDB51 35K: about 10 augmented clips
    per training video); the learning rate drops at the milestone epochs.

    \b
    Examples:
      crisscross eval finetune runs/k400 shards/ucf101-1 --preset ucf101 --frames 8 --workers 8
      crisscross eval finetune runs/k400 shards/hmdb51-1 --preset hmdb51 --frames 32 --name HMDB51
      crisscross eval finetune random shards/ucf101-1 --crop-size 56 --max-steps 2   # quick check
    """
    settings = _settings(paper.FINETUNE[(preset, int(frames))], frames, crop_size, epochs, epoch_size, lr,
                         milestones, test_clips, batch_size)
    _supervised(ckpt, shards, random_init, out, name, label, train_split, test_split, device, seed, quiet,
                settings, "finetune", max_steps, workers)


@eval_group.command("probe")
@common_options
@training_options
@click.option("--preset", type=click.Choice(PROBE_PRESETS), default="kinetics400", show_default=True,
              help="E.1's setting: training clips per video per epoch (kinetics400: 1; ucf101 / hmdb51: 10, "
              "the 32-frame setting).")
@click.option("--clips-per-video", type=click.IntRange(1), default=None,
              help="Training clips per video per epoch (default: the preset's); --epoch-size overrides it.")
@user_errors
def probe_command(ckpt, shards, random_init, out, name, label, train_split, test_split, device, batch_size,
                  seed, quiet, frames, crop_size, epochs, epoch_size, lr, milestones, test_clips, max_steps,
                  workers, preset, clips_per_video):
    """Linear layer on the frozen, max-pooled video backbone (for sets too large for the SVM).

    \b
    Examples:
      crisscross eval probe runs/k400 shards/k400 --preset kinetics400 --workers 16 --name K400
      crisscross eval probe runs/k400 shards/ucf101-1 --preset ucf101 --frames 32 --name UCF101
    """
    from crisscross.eval.linear_layer import probe_settings

    settings = probe_settings(int(frames), crop_size or paper.EVAL_CROP_SIZE,
                              test_clips or paper.EVAL["video_linear"].test_clips, batch_size=batch_size,
                              epochs=epochs, epoch_size=epoch_size, lr=lr, milestones=milestones)
    _supervised(ckpt, shards, random_init, out, name, label, train_split, test_split, device, seed, quiet,
                settings, "probe", max_steps, workers, clips_per_video or paper.PROBE_CLIPS_PER_VIDEO[preset])


@eval_group.command("table")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Markdown file to write (default: print only).")
def table_command(reports, out):
    """One paper-style table (method rows, dataset columns) from several REPORTS (*.json).

    \b
    Example:
      crisscross eval table eval/linear-video-UCF101.json eval/linear-audio-ESC50.json --out eval/table.md
    """
    import json

    from crisscross.eval.report import combine_reports

    loaded = []
    for path in reports:
        try:
            with open(path) as f:
                report = json.load(f)
        except ValueError:
            report = None
        if not isinstance(report, dict) or not {"protocol", "dataset", "method"} <= set(report):
            raise click.ClickException(f"{path} is not a report written by `crisscross eval`; pass the "
                                       "PROTOCOL-....json files from --out")
        loaded.append(report)
    table = combine_reports(loaded)
    click.echo(table, nl=False)
    if out:
        with open(out, "w") as f:
            f.write(table)
