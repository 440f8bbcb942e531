"""`crisscross viz`: the paper's qualitative figures as PNGs, with an ``index.md`` beside them.

Every command writes its pictures to ``--out`` and (re)writes its own section of ``OUT/index.md``,
so several commands can share one folder and the index lists all their pictures.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from crisscross import paper
from crisscross.cliutil import check_device, default_device, options, report
from crisscross.viz import VizError

MODALITIES = ("video", "audio")
INDEX_NAME = "index.md"


# --- shared pieces --------------------------------------------------------------------------------
def parse_checkpoint(value: str) -> tuple[str, str | None]:
    """``LABEL=PATH``, ``PATH`` or ``random`` -> (label, path or None for random initialisation)."""
    from crisscross.eval.protocols import method_label

    # A path may itself contain "=": only split off a label when the whole value is not a path.
    label, _, path = ("", "", value) if os.path.exists(value) else value.rpartition("=")
    ckpt = None if path == "random" else path
    if ckpt is not None and not os.path.exists(ckpt):
        raise VizError(f"checkpoint {ckpt} does not exist; pass a checkpoint file, a run folder, "
                       "or 'random' for a randomly initialised network")
    return label or method_label(ckpt), ckpt


def update_index(out: str | os.PathLike, section: str, title: str, body: str) -> Path:
    """Replace (or add) ``section`` of ``OUT/index.md``; other commands' sections are kept."""
    path = Path(out) / INDEX_NAME
    text = path.read_text() if path.exists() else "# Visualisations\n"
    start, end = f"<!-- viz:{section} -->", f"<!-- /viz:{section} -->"
    block = f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text.rstrip() + "\n")
    return path


def _image(name: str, caption: str) -> str:
    return f"![{name}]({name})\n\n{caption}\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def user_errors(f: Callable) -> Callable:
    """Errors a user can cause become one clear line, never a traceback."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        from avshards.format import SchemaError
        from avshards.reader import TruncatedShardError
        from avshards.remote import ShardAccessError, TransientError
        from crisscross.eval.errors import EvalError

        try:
            return f(*args, **kwargs)
        except (VizError, EvalError, FileNotFoundError, ShardAccessError, TruncatedShardError, SchemaError,
                TransientError) as e:
            report(e)          # one sentence, the exit code of its kind (crisscross.cliutil)
    return wrapper


def _check_shards(url: str) -> str:
    if "://" not in url and "{" not in url and not os.path.exists(url):
        raise VizError(f"shard folder {url} does not exist; build it with `avshards build`")
    return url


# Options every model-based command shares.
common_options = options(
    click.option("--ckpt", "ckpts", multiple=True, required=True,
                 help="A checkpoint file, run folder or exported model, 'random', or LABEL=PATH to name "
                 "it in the picture. Repeat to show checkpoints side by side (e.g. without and with "
                 "the asynchronous loss)."),
    click.option("--out", default="viz", show_default=True, type=click.Path(file_okay=False),
                 help="Folder for the PNGs and index.md."),
    click.option("--modality", "modalities", type=click.Choice(MODALITIES), multiple=True,
                 help="Which backbone(s) to show; repeat for both (default: both)."),
    click.option("--crop-size", type=click.IntRange(16), default=None,
                 help=f"Video crop size (default {paper.CROP_SIZE}; small values for quick looks)."),
    click.option("--device", default=default_device, show_default="cuda if available, else cpu",
                 callback=check_device, help="Torch device for the backbones."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of random initialisation, query / clip choice and the projection."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
)


# Options of the commands that extract features (embeddings, neighbours).
feature_options = options(
    click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True,
                 help="Clips per forward pass."),
    click.option("--cache", default=None, type=click.Path(file_okay=False),
                 help="Feature cache folder (default: OUT/cache; same files as `crisscross eval --cache`)."),
    click.option("--no-cache", is_flag=True, help="Always extract features; write no cache."),
    click.option("--frames", type=click.IntRange(1), default=None,
                 help="Frames per video clip (default: the retrieval protocol's 32, E.3's 2 s)."),
)


def features_of(ckpt: str | None, url: str, split: str | None, modalities: Sequence[str], clips: int,
                crop_size: int | None, device: str, seed: int, batch_size: int, cache: str | None, quiet: bool,
                frames: int | None = None):
    """The evaluation's features (uniform clips, no augmentation) of one checkpoint and split, for
    each modality, from one pass over the shards: ``{modality: ClipFeatures}``."""
    from crisscross.eval.features import EvalError, cached_extract, load_backbones
    from crisscross.viz.embeddings import modality_spec

    backbones = load_backbones(ckpt, device, seed)
    specs = [modality_spec(m, crop_size, frames) for m in modalities]
    try:
        return cached_extract(cache, ckpt, url, split, backbones, specs, clips, False, seed=seed,
                              batch_size=batch_size, device=device, progress=not quiet)
    except EvalError as e:
        if not str(e).startswith("no samples"):       # the eval's wording names eval's options
            raise
        raise VizError(f"no samples{f' of split {split!r}' if split else ''} in {url}; check the path, or "
                       "pass the split your shards use (`avshards inspect` shows it)") from None


# --- the group ------------------------------------------------------------------------------------
@click.group("viz", context_settings={"help_option_names": ["-h", "--help"]})
def viz_group() -> None:
    """Pictures of what a model learned: the paper's qualitative figures.

    \b
    crisscross viz embeddings SHARDS --ckpt A --ckpt B   clips projected to 2-D (Fig. 1)
    crisscross viz saliency   SHARDS --ckpt A --ckpt B   Grad-CAM on frames and log-mels (Fig. 3)
    crisscross viz neighbours SHARDS --ckpt A            top-5 retrieved videos per query (Fig. S1, S2)
    crisscross viz curves     RUN [RUN...]               loss terms / probe accuracy per epoch (Fig. 4, 5)
    crisscross viz scaling    REPORT [REPORT...]         accuracy vs. pretraining set size (Fig. 5 right)

    Each writes PNGs and its section of OUT/index.md.

    \b
    Example:
      crisscross viz embeddings shards/ks-val --ckpt "no async=runs/ks-noasync" --ckpt CrissCross=runs/ks
    """


@viz_group.command("embeddings")
@click.argument("shards")
@common_options
@feature_options
@click.option("--split", default=None, help="Only samples whose json 'split' is this (default: all).")
@click.option("--method", type=click.Choice(["tsne", "pca"]), default="tsne", show_default=True,
              help="2-D projection (scikit-learn).")
@click.option("--clips", type=int, default=1, show_default=True,
              help="Uniformly spaced clips per video, averaged into its feature.")
@user_errors
def embeddings_command(shards, ckpts, out, modalities, crop_size, device, seed, quiet, batch_size, cache,
                       no_cache, frames, split, method, clips):
    """Every video of SHARDS as a point in 2-D, one panel per --ckpt, coloured by label (Fig. 1).

    \b
    Example:
      crisscross viz embeddings shards/ks-val --ckpt "no async=runs/ks-noasync" --ckpt CrissCross=runs/ks
    """
    from crisscross.viz.embeddings import embedding_panel, plot_embeddings

    url, models = _check_shards(shards), [parse_checkpoint(c) for c in ckpts]
    os.makedirs(out, exist_ok=True)
    cache = None if no_cache else (cache or os.path.join(out, "cache"))
    modalities = modalities or MODALITIES
    feats = [features_of(ckpt, url, split, modalities, clips, crop_size, device, seed, batch_size, cache, quiet,
                         frames) for _, ckpt in models]
    body = []
    for modality in modalities:
        panels = [embedding_panel(label, f[modality].video_means(), f[modality].labels, method, seed)
                  for (label, _), f in zip(models, feats)]
        name = f"embeddings-{modality}.png"
        count = feats[0][modality].num_videos
        plot_embeddings(panels, Path(out) / name, f"{modality} representations ({method}, {count} videos)")
        spreads = ", ".join(f"{p.title}: {p.spread:.3f}" for p in panels)
        body.append(_image(name, f"{modality.capitalize()} embeddings ({method}); spread (mean cosine "
                                 f"distance) {spreads}."))
        click.echo(f"wrote {Path(out) / name} ({spreads})")
    update_index(out, "embeddings", "Distribution of the learned representations (Fig. 1)", "\n".join(body))


@viz_group.command("saliency")
@click.argument("shards")
@common_options
@click.option("--split", default=None, help="Pick clips among samples whose json 'split' is this.")
@click.option("--key", "keys", multiple=True, help="Sample key to show (repeat); default: --clips drawn at random.")
@click.option("--clips", type=int, default=4, show_default=True, help="How many clips to draw when no --key.")
@click.option("--frames-shown", type=int, default=4, show_default=True, help="Frames per clip and checkpoint.")
@click.option("--target", type=click.Choice(["crossmodal", "norm"]), default="crossmodal", show_default=True,
              help="What the map explains: agreement with the clip's own sound (crossmodal) or the "
              "embedding's norm (for clips without audio).")
@user_errors
def saliency_command(shards, ckpts, out, modalities, crop_size, device, seed, quiet, split, keys, clips,
                     frames_shown, target):
    """Grad-CAM of each --ckpt on chosen clips, over the frames and the log-mel (Fig. 3).

    \b
    Examples:
      crisscross viz saliency shards/k400-val --ckpt random --ckpt CrissCross=runs/k400 --clips 6
      crisscross viz saliency shards/esc50-1 --ckpt runs/k400 --modality audio --target norm
    """
    from tqdm import tqdm

    from crisscross.viz.embeddings import modality_spec
    from crisscross.viz.saliency import clip_inputs, load_crisscross, plot_audio_saliency, plot_video_saliency
    from crisscross.viz.saliency import saliency as grad_cam_of

    url, models = _check_shards(shards), [parse_checkpoint(c) for c in ckpts]
    os.makedirs(out, exist_ok=True)
    specs = modality_spec("video", crop_size, paper.VIDEO_FRAMES), modality_spec("audio")   # 0.5 s, as pretraining
    modalities = modalities or MODALITIES
    # Clips without frames only have something to show when the audio map explains the embedding norm.
    need_frames = "video" in modalities or target == "crossmodal"
    inputs = [clip_inputs(c, *specs) for c in choose_clips(url, split, keys, clips, seed, need_frames)]
    maps = {m: [[] for _ in inputs] for m in modalities}
    bar = tqdm(total=len(models) * len(inputs), disable=quiet, unit="clip", desc="grad-cam")
    for label, ckpt in models:
        model = load_crisscross(ckpt, device, seed)
        for i, x in enumerate(inputs):
            for m in modalities:
                maps[m][i].append(grad_cam_of(model, x, m, target, device))
            bar.update(1)
        del model
    bar.close()
    titles = [label for label, _ in models]
    body = []
    if "video" in modalities:
        plot_video_saliency(inputs, maps["video"], titles, Path(out) / "saliency-video.png", frames_shown)
        body.append(_image("saliency-video.png", f"Grad-CAM ({target}) on the video backbone's last convolution: "
                           f"rows are clips, columns {', '.join(titles)} x {frames_shown} frames."))
    if "audio" in modalities:
        plot_audio_saliency(inputs, maps["audio"], titles, Path(out) / "saliency-audio.png")
        body.append(_image("saliency-audio.png", f"Grad-CAM ({target}) on the audio backbone over the log-mel: "
                           f"rows are clips, columns the log-mel then {', '.join(titles)}."))
    update_index(out, "saliency", "Saliency (Fig. 3)", "\n".join(body))
    click.echo(f"wrote {len(body)} saliency pictures for {len(inputs)} clips to {out}")


def choose_clips(url: str, split: str | None, keys: Sequence[str], count: int, seed: int,
                 need_frames: bool = True) -> list:
    """The samples named by ``keys``, else ``count`` samples (with frames when ``need_frames``)
    drawn at random (seeded)."""
    import numpy as np

    from crisscross.eval.features import split_clips

    candidates = [c for c in split_clips(url, split)
                  if (c.key in keys if keys else c.num_frames > 0 or not need_frames)]
    if keys:
        missing = sorted(set(keys) - {c.key for c in candidates})
        if missing:
            raise VizError(f"no sample with key {missing[0]!r} in {url}"
                           f"{f' (split {split})' if split else ''}; `avshards inspect` lists the keys")
        return sorted(candidates, key=lambda c: list(keys).index(c.key))
    if not candidates:
        raise VizError(f"no samples {'with video frames ' if need_frames else ''}in {url}"
                       f"{f' (split {split})' if split else ''}; for audio-only shards use --modality audio "
                       "--target norm")
    picked = np.random.default_rng(seed).choice(len(candidates), min(count, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(picked)]


@viz_group.command("neighbours")
@click.argument("shards")
@common_options
@feature_options
@click.option("--gallery", default=None, help="Shards to search (default: SHARDS).")
@click.option("--query-split", default="test", show_default=True, help="json 'split' of the query videos.")
@click.option("--gallery-split", default="train", show_default=True, help="json 'split' of the searched videos.")
@click.option("--queries", type=int, default=8, show_default=True, help="Query videos drawn at random.")
@click.option("--k", type=int, default=None, help="Neighbours per query (default 5, as Fig. S1/S2).")
@click.option("--clips", type=int, default=paper.EVAL["retrieval"].test_clips, show_default=True,
              help="Uniformly spaced clips per video, averaged (the retrieval protocol).")
@user_errors
def neighbours_command(shards, ckpts, out, modalities, crop_size, device, seed, quiet, batch_size, cache,
                       no_cache, frames, gallery, query_split, gallery_split, queries, k, clips):
    """Each query video of SHARDS and its nearest videos of --gallery, per --ckpt (Fig. S1, S2).

    \b
    Example:
      crisscross viz neighbours shards/ucf101-1 --ckpt runs/k400 --query-split test --gallery-split train
    """
    from avshards.reader import open_shards
    from crisscross.eval.retrieval import recall_at_k
    from crisscross.viz.embeddings import known_labels
    from crisscross.viz.neighbours import TOP_K, collect_tiles, neighbour_rows, pick_queries, plot_neighbours

    url = _check_shards(shards)
    gallery = _check_shards(gallery or shards)
    models = [parse_checkpoint(c) for c in ckpts]
    os.makedirs(out, exist_ok=True)
    cache = None if no_cache else (cache or os.path.join(out, "cache"))
    k = k or TOP_K
    body, tiles = [], {}
    modalities = modalities or MODALITIES
    for label, ckpt in models:
        qf = features_of(ckpt, url, query_split, modalities, clips, crop_size, device, seed, batch_size, cache,
                         quiet, frames)
        gf = features_of(ckpt, gallery, gallery_split, modalities, clips, crop_size, device, seed, batch_size,
                         cache, quiet, frames)
        for modality in modalities:
            q, g = qf[modality], gf[modality]
            rows = neighbour_rows(q, g, pick_queries(q.num_videos, queries, seed), k)
            wanted = {key for r in rows for key in [r.query, *r.neighbours]} - set(tiles)
            if wanted:
                tiles.update(collect_tiles((c for u in dict.fromkeys([url, gallery]) for c in open_shards(u)), wanted))
            name = f"neighbours-{modality}-{_slug(label)}.png"
            plot_neighbours(rows, tiles, Path(out) / name, f"{modality}-to-{modality} retrieval: {label}")
            caption = f"{modality.capitalize()}-to-{modality} top-{k} neighbours, {label}"
            if known_labels(q.labels) and known_labels(g.labels):
                recall = recall_at_k(g.video_means(), g.labels, q.video_means(), q.labels, (1, k))
                caption += f": R@1 {100 * recall[1]:.1f}%, R@{k} {100 * recall[k]:.1f}% over all {q.num_videos} queries"
            body.append(_image(name, caption + " (query framed black, right green, wrong red)."))
            click.echo(f"wrote {Path(out) / name}")
    update_index(out, "neighbours", "Nearest neighbours (Fig. S1, S2)", "\n".join(body))


@viz_group.command("curves")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", default="viz", show_default=True, type=click.Path(file_okay=False),
              help="Folder for curves.png and index.md.")
@click.option("--x", "x_axis", type=click.Choice(["epoch", "step"]), default="epoch", show_default=True,
              help="Horizontal axis of the loss curves (epoch: rows averaged per epoch).")
@click.option("--name", default="curves", show_default=True, help="File name (without .png) of the picture.")
@user_errors
def curves_command(runs, out, x_axis, name):
    """Loss per term (intra, sync, async) and linear-probe accuracy of RUNS against epoch (Fig. 4, 5).

    RUNS are run folders or log.csv files (LABEL=PATH names a run); all runs share each panel.

    \b
    Example:
      crisscross viz curves "no async=runs/ks-noasync" CrissCross=runs/ks --out viz
    """
    from crisscross.viz.curves import plot_curves, read_run

    parsed = []
    for r in runs:
        label, _, path = r.rpartition("=") if "=" in r else ("", "", r)
        parsed.append(read_run(path, label or None, x_axis))
    os.makedirs(out, exist_ok=True)
    path, panels = plot_curves(parsed, Path(out) / f"{name}.png", x_axis)
    update_index(out, f"curves-{name}", "Training curves (Fig. 4, 5)",
                 _image(path.name, f"Panels {', '.join(panels)} for runs {', '.join(r.name for r in parsed)}."))
    click.echo(f"wrote {path} ({len(panels)} panels: {', '.join(panels)})")


@viz_group.command("scaling")
@click.argument("reports", nargs=-1, required=True)
@click.option("--size", "sizes", multiple=True, metavar="METHOD=N",
              help="Pretraining videos of a report's method (its table row), when the report does not say: "
              "a number (240000, 240K, 1.8M) or a paper set (kinetics-sound, kinetics400, audioset). Repeatable.")
@click.option("--paper/--no-paper", "with_paper", default=True, show_default=True,
              help="Also draw Table 4's numbers (dashed) for the downstream datasets of the same name.")
@click.option("--out", default="viz", show_default=True, type=click.Path(file_okay=False),
              help="Folder for scaling.png and index.md.")
@click.option("--name", default="scaling", show_default=True, help="File name (without .png) of the picture.")
@user_errors
def scaling_command(reports, sizes, with_paper, out, name):
    """Linear-evaluation top-1 of REPORTS against the size of each one's pretraining set (Fig. 5 right).

    REPORTS are linear-SVM or probe reports of `crisscross eval` (one per pretrained checkpoint and
    downstream set); the size is read from the report (its checkpoint's training shards), or --size.

    \b
    Examples:
      crisscross viz scaling eval/ks/linear-video-UCF101.json eval/k400/linear-video-UCF101.json
      crisscross viz scaling eval/*/linear-*.json --size ks=kinetics-sound --size k400=240K --out viz
    """
    from crisscross.viz.scaling import paper_points, parse_size, plot_scaling, scaling_points

    given = {}
    for item in sizes:
        method, sep, value = item.rpartition("=")
        if not sep or not method:
            raise VizError(f"--size {item!r} must be METHOD=N, e.g. --size k400=240000")
        given[method] = parse_size(value)
    points = scaling_points(reports, given)
    reference = paper_points([p.dataset for p in points]) if with_paper else []
    os.makedirs(out, exist_ok=True)
    path = plot_scaling(points, Path(out) / f"{name}.png", reference)
    rows = "".join(f"| {p.dataset} | {p.method} | {p.size:,} | {100 * p.accuracy:.1f} | {p.source} |\n"
                   for p in sorted(points, key=lambda p: (p.dataset, p.size)))
    table = "| downstream | method | pretraining videos | top-1 (%) | size from |\n|---|---|---|---|---|\n" + rows
    update_index(out, f"scaling-{name}", "Linear evaluation vs. pretraining set size (Fig. 5 right)",
                 _image(path.name, f"Top-1 of {len(points)} report(s) against pretraining videos"
                        f"{'; dashed: the paper (Table 4)' if reference else ''}.") + "\n" + table)
    click.echo(table, nl=False)
    click.echo(f"wrote {path}")
