"""DALI's own shard reader feeding the graph: ``readers.webdataset`` -> ``fn.python_function`` ->
:func:`crisscross.data.dali.graph.two_view_graph`.

The reader reads each clip's json, mjpeg and wav members from local or s3:// shards (with their
``.idx`` files). :class:`ViewSelector`, the python_function, picks the two views and their
parameters with the torch path's own :class:`crisscross.data.selection.PrepareClip` (same
per-clip generator of seed, epoch and key) and cuts the frames out: the frames are one mjpeg
member whose offsets are in the json, which no DALI operator can parse (docs/dali.md has the
format change that would make this native, and measures what the Python step costs).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import nvidia.dali as dali
import numpy as np
import torch
from nvidia.dali import fn

from avshards.format import AVClip
from avshards.index import index_path
from crisscross import paper
from crisscross.data.choices import check_choice, check_mode
from crisscross.data.dali.graph import DEVICES, OUTPUTS, two_view_graph, to_torch
from crisscross.data.dali.inputs import from_prepared, graph_inputs, input_names
from crisscross.data.params import audio_steps
from crisscross.data.selection import PrepareClip


@dataclass
class ViewSelector:
    """``fn.python_function`` body: one clip's json, mjpeg and wav bytes and the epoch -> the
    graph's inputs (in the order of ``names``), then the clip's key as bytes."""

    prepare: PrepareClip
    names: Sequence[str]

    def __call__(self, meta: np.ndarray, mjpeg: np.ndarray, wav: np.ndarray, epoch: np.ndarray) -> tuple:
        info = json.loads(meta.tobytes())
        clip = AVClip.from_sample({"__key__": info["key"], "json": info, "mjpeg": memoryview(mjpeg),
                                   "wav": memoryview(wav)})
        item = self.prepare.draw(clip, int(epoch), visit=int(epoch))   # an epoch is one pass over the data
        if item is None:   # the reader already skips clips without a wav member
            raise ValueError(f"clip {clip.key!r} has no frames or no audio samples; rebuild its shard "
                             "with avshards build")
        s = self.prepare.audio_settings
        inputs = graph_inputs(from_prepared(item), s, audio_steps(self.prepare.audio_samples, s),
                              self.prepare.video_frames)
        return (*(inputs[n] for n in self.names), np.frombuffer(clip.key.encode(), np.uint8))


class DaliShardLoader:
    """Two-view batches ``{v1, v2, a1, a2, keys}`` straight from local or s3:// shards with
    ``readers.webdataset`` and their ``.idx`` files, with exact resume.

    Each of ``world_size`` ranks reads its part (sharded by sample index, padded to equal parts);
    every rank yields the same number of full batches per epoch (the reader's padded last batch
    of an epoch is run and not yielded, so every epoch starts on a fresh batch). Clips without
    audio are skipped. A clip's windows and parameters in epoch ``e`` are those of the
    external-source path (``make_train_loader``) for the same seed: :class:`ViewSelector` runs its
    :class:`~crisscross.data.selection.PrepareClip`. :meth:`state_dict` / :meth:`load_state_dict`
    save and restore the position (DALI's pipeline checkpoint plus the epoch and batch).
    """

    def __init__(self, urls: Sequence[str], batch_size: int, mode: str = "mild", device: str = "cpu",
                 augment: bool = True, rank: int = 0, world_size: int = 1, seed: int = 0, num_threads: int = 2,
                 device_id: int = 0, shuffle: bool = True, video_frames: int = paper.VIDEO_FRAMES,
                 audio_seconds: float = paper.AUDIO_SECONDS, video: paper.VideoAugSettings = paper.VIDEO_AUG,
                 audio: paper.AudioAugSettings = paper.AUDIO_AUG):
        check_mode(mode)
        check_choice("DALI device", device, DEVICES)
        prepare = PrepareClip(mode, seed, 0, video_frames, int(round(audio_seconds * paper.SAMPLE_RATE)), video, audio)
        names = input_names(video_frames, augment, video, audio)
        selector = ViewSelector(prepare, names)
        n_steps = audio_steps(prepare.audio_samples, audio)

        @dali.pipeline_def(enable_conditionals=True, enable_checkpointing=True)
        def pipe():
            meta, mjpeg, wav = fn.readers.webdataset(
                paths=list(urls), index_paths=[index_path(u) for u in urls], ext=["json", "mjpeg", "wav"],
                missing_component_behavior="skip", shard_id=rank, num_shards=world_size,
                random_shuffle=shuffle, initial_fill=max(64, 4 * batch_size), pad_last_batch=True,
                seed=seed, name="reader")
            picked = fn.python_function(meta, mjpeg, wav, fn.external_source(name="epoch"), function=selector,
                                        num_outputs=len(names) + 1)
            views = two_view_graph(dict(zip(names, picked)), device, augment, video_frames, video, audio, n_steps)
            return (*views, picked[-1])

        def start(checkpoint: bytes | None):
            # prefetch_queue_depth=1: the epoch fed before a run is the one its clips are drawn in
            p = pipe(batch_size=batch_size, num_threads=num_threads, seed=seed, prefetch_queue_depth=1,
                     device_id=device_id if device == "gpu" else None, checkpoint=checkpoint)
            p.build()
            return p

        self._start, self.batch_size = start, batch_size
        self.pipe = start(None)
        self.out_device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        self.samples_per_rank = self.pipe.epoch_size("reader") // world_size     # padded: equal on every rank
        self.num_batches = self.samples_per_rank // batch_size
        self.runs_per_epoch = -(-self.samples_per_rank // batch_size)
        self.epoch, self.position = 0, 0           # batches of this epoch delivered

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The rest of the current epoch (all of it unless resumed mid-epoch)."""
        while self.position < self.num_batches:
            batch = self._run()
            self.position += 1
            yield batch
        for _ in range(self.runs_per_epoch - self.num_batches):
            self._run()                            # the padded tail of the reader's epoch
        self.epoch, self.position = self.epoch + 1, 0

    def _run(self) -> dict[str, Any]:
        self.pipe.feed_input("epoch", np.full(self.batch_size, self.epoch, np.int64))
        *views, keys = self.pipe.run()
        batch: dict[str, Any] = dict(zip(OUTPUTS, (to_torch(t, self.out_device) for t in views)))
        batch["keys"] = [keys.at(i).tobytes().decode() for i in range(len(keys))]
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The position after the last batch delivered, as plain data (json-safe)."""
        return {"epoch": self.epoch, "position": self.position,
                "dali": base64.b64encode(self.pipe.checkpoint()).decode("ascii")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue right after the last batch delivered when ``state`` was taken (same shards,
        batch size, ranks and seed)."""
        self.pipe = self._start(base64.b64decode(state["dali"]))
        self.epoch, self.position = state["epoch"], state["position"]
