"""Learning sanity check: does a short CrissCross pretraining learn what sound and picture share?

A generated audio-visual set whose two modalities share only a hidden class k:
- picture: a disc of colour k moving over a random background with a random distractor square;
- sound: a tone of pitch k in random noise with a random distractor tone.
Everything else (backgrounds, distractors, motion, noise) is drawn independently per modality,
so the only thing the cross-modal terms can agree on is k. After a short CPU pretraining on
unlabelled clips, a logistic-regression probe on frozen pooled backbone features should predict k
clearly better than the same probe on a randomly initialised model.

    .venv/bin/python tools/sanity_check.py --out /tmp/sanity --steps 24 --probe-clips 48

prints a table (random init vs pretrained, video / audio probe accuracy) and writes it to
OUT/result.json. docs/training.md records a run.
"""

from __future__ import annotations

import colorsys
import io
import json
import time
from pathlib import Path

import click
import numpy as np
import torch
import webdataset as wds
from PIL import Image, ImageDraw

from avshards.format import FPS, MANIFEST_NAME, SAMPLE_RATE, encode_sample
from avshards.reader import open_shards

SIZE = 128          # frame side: the avshards default short side
SECONDS = 4.0       # long enough for the "mild" views (audio 2 s + 1 s)


def render_video(k: int, classes: int, rng: np.random.Generator) -> tuple[bytes, list[int]]:
    """JPEG stream of a disc of hue k/classes moving over a random background, plus a distractor."""
    n = int(SECONDS * FPS)
    background = rng.integers(0, 256, 3)
    texture = np.clip(background + rng.normal(0, 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(k / classes, 1.0, 1.0))
    distractor = tuple(int(c) for c in rng.integers(0, 256, 3))
    pos = rng.uniform(20, SIZE - 20, (2, 2))          # disc, square
    vel = rng.uniform(-3, 3, (2, 2))
    parts, offsets, at = [], [], 0
    for _ in range(n):
        img = Image.fromarray(texture)
        draw = ImageDraw.Draw(img)
        (x, y), (u, v) = pos
        draw.rectangle([u - 14, v - 14, u + 14, v + 14], fill=distractor)
        draw.ellipse([x - 18, y - 18, x + 18, y + 18], fill=colour)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        parts.append(buf.getvalue())
        offsets.append(at)
        at += len(parts[-1])
        pos += vel
        bounce = (pos < 18) | (pos > SIZE - 18)
        vel[bounce] *= -1
        pos = np.clip(pos, 18, SIZE - 18)
    offsets.append(at)
    return b"".join(parts), offsets


def render_audio(k: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """int16 tone of pitch k (log-spaced 300 Hz .. 2.4 kHz) in random noise with a distractor tone."""
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 300 * 8 ** (k / max(1, classes - 1))
    other = rng.uniform(200, 3000)
    wave = (0.25 * np.sin(2 * np.pi * pitch * t + rng.uniform(0, 6.3))
            + rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * other * t)
            + rng.uniform(0.02, 0.15) * rng.standard_normal(t.size))
    return (np.clip(wave, -1, 1) * 32767).astype(np.int16)


def make_set(out: Path, clips: int, classes: int, seed: int, per_shard: int = 16) -> Path:
    """Write ``clips`` clips (classes balanced) as avshards shards with a manifest; return ``out``."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, clips, per_shard):
        path = out / f"shards-{s // per_shard:06d}.tar"
        with wds.TarWriter(str(path), mtime=0) as sink:
            for i in range(s, min(clips, s + per_shard)):
                k = i % classes
                stream, offsets = render_video(k, classes, rng)
                meta = {"source": f"synthetic/{seed}/{i}", "segment": [0.0, SECONDS], "label": str(k),
                        "split": "train", "width": SIZE, "height": SIZE}
                sink.write(encode_sample(f"clip{i:06d}", meta, stream, offsets, render_audio(k, classes, rng)))
        shards.append({"name": path.name, "num_samples": min(clips, s + per_shard) - s})
    (out / MANIFEST_NAME).write_text(json.dumps({"shards": shards, "num_samples": clips,
                                                 "labels": [str(k) for k in range(classes)]}))
    return out


@torch.no_grad()
def features(model, shards: Path, batch: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled (average, as pretrained) backbone features of each clip's first 8 frames and 2 s of
    audio, with the evaluation transforms; returns (video, audio, labels)."""
    from crisscross import paper
    from crisscross.data.augment import eval_audio, eval_video_batch

    model.eval()
    clips = list(open_shards(str(shards)))
    xv, xa = [], []
    for i in range(0, len(clips), batch):
        part = clips[i:i + batch]
        frames = [torch.from_numpy(c.frames(range(paper.VIDEO_FRAMES))) for c in part]
        waves = torch.stack([torch.from_numpy(c.audio(0, int(paper.AUDIO_SECONDS * paper.SAMPLE_RATE)))
                             for c in part])
        xv.append(model.video_backbone(eval_video_batch(frames)).numpy())
        xa.append(model.audio_backbone(eval_audio(waves)).numpy())
    return np.concatenate(xv), np.concatenate(xa), np.array([int(c.label) for c in clips])


def probe(train: tuple, test: tuple) -> dict[str, float]:
    """Logistic-regression accuracy on standardised frozen features, per modality."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    result = {}
    for i, name in enumerate(("video", "audio")):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        clf.fit(train[i], train[2])
        result[name] = float((clf.predict(test[i]) == test[2]).mean())
    return result


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("/tmp/crisscross-sanity"),
              show_default=True, help="Working folder: data sets, the run, result.json.")
@click.option("--classes", default=4, show_default=True, help="Hidden classes shared by sound and picture.")
@click.option("--pretrain-clips", default=64, show_default=True, help="Unlabelled clips to pretrain on.")
@click.option("--probe-clips", default=48, show_default=True, help="Labelled clips for each of probe train / test.")
@click.option("--terms", default="intra,sync,async", show_default=True,
              help="Loss terms (comma-separated groups or pairs); the default is the full CrissCross loss.")
@click.option("--steps", default=24, show_default=True, help="Pretraining steps.")
@click.option("--batch-size", default=8, show_default=True, help="Pretraining batch.")
@click.option("--lr", default=1e-3, show_default=True, help="Backbone LR (predictor 10x).")
@click.option("--workers", default=1, show_default=True, help="Loader workers.")
@click.option("--seed", default=0, show_default=True, help="Seed of data and training.")
@click.option("--model", type=click.Choice(["paper", "tiny"]), default="paper", show_default=True,
              help="Network size (crisscross.models.SIZES); the random-init row uses the same one.")
def main(out: Path, classes: int, pretrain_clips: int, probe_clips: int, terms: str, steps: int, batch_size: int,
         lr: float, workers: int, seed: int, model: str) -> None:
    """Pretrain briefly on a generated set, then compare linear-probe accuracy with random init."""
    from crisscross.config import preset_config
    from crisscross.models import build_crisscross
    from crisscross.train import train

    started = time.perf_counter()
    sets = {name: out / name for name in ("pretrain", "probe-train", "probe-test")}
    for i, (name, path) in enumerate(sets.items()):
        if not (path / MANIFEST_NAME).exists():
            make_set(path, pretrain_clips if name == "pretrain" else probe_clips, classes, seed + 1000 * i)
    torch.manual_seed(seed)
    random_model = build_crisscross(model)
    rows = {"random init": probe(features(random_model, sets["probe-train"]),
                                 features(random_model, sets["probe-test"]))}
    config = preset_config("tiny-cpu", shards=str(sets["pretrain"]), out=str(out / "run"), steps=steps,
                           batch_size=batch_size, lr=lr, model=model, workers=workers, seed=seed,
                           epoch_size=pretrain_clips, warmup_epochs=0.0, checkpoint_every=10_000,
                           terms=tuple(terms.split(",")))
    result = train(config)
    from crisscross.export import load_model

    trained = load_model(result.checkpoint)
    rows["pretrained"] = probe(features(trained, sets["probe-train"]), features(trained, sets["probe-test"]))
    chance = 1 / classes
    click.echo(f"{'':12s}  video probe  audio probe   (chance {chance:.2f}, {probe_clips} test clips)")
    for name, r in rows.items():
        click.echo(f"{name:12s}  {r['video']:11.3f}  {r['audio']:11.3f}")
    summary = {"rows": rows, "chance": chance, "model": model, "terms": terms, "steps": steps,
               "batch_size": batch_size, "lr": lr,
               "pretrain_clips": pretrain_clips, "probe_clips": probe_clips, "classes": classes,
               "final_loss": result.loss, "seconds": time.perf_counter() - started}
    (out / "result.json").write_text(json.dumps(summary, indent=2))
    click.echo(result.summary())


if __name__ == "__main__":
    main()
