"""The external-source path: clips selected elsewhere (DataLoader workers) in, batches out.

:class:`DaliAugmenter` builds the graph of :mod:`crisscross.data.dali.graph` with one
``external_source`` per input of :mod:`crisscross.data.dali.inputs` and feeds it batches of
:class:`~crisscross.data.dali.inputs.Selection` (``make_train_loader(backend="dali")`` hands it
the torch path's own selections and parameters, so both backends see the same views and resume
alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import nvidia.dali as dali       # ImportError here: the loader turns it into the install hint
import numpy as np
import torch
from nvidia.dali import fn

from crisscross import paper
from crisscross.data.choices import check_choice
from crisscross.data.dali.graph import DEVICES, OUTPUTS, two_view_graph, to_torch
from crisscross.data.dali.inputs import Selection, graph_inputs, input_names
from crisscross.data.params import audio_steps


class DaliAugmenter:
    """Batches of :class:`~crisscross.data.dali.inputs.Selection` in, the trainer's batch dict
    ``{v1, v2, a1, a2}`` out, on ``device`` ("gpu": nvJPEG and the GPU; "cpu": DALI's CPU
    operators). ``augment=False`` applies the evaluation transform (selections without
    parameters). Batches may be smaller than ``batch_size`` (the last one).

    :meth:`start` hands a batch to the pipeline and returns at once (DALI runs it in its own
    threads); :meth:`finish` returns the oldest started batch. Starting batch i + 1 before
    finishing batch i keeps the pipeline busy while batch i trains; one queue slot suffices
    because :meth:`finish` copies the outputs out and releases them at once (as DALI's own
    PyTorch iterator does). Calling the object starts and finishes one batch."""

    def __init__(self, batch_size: int, device: str = "cpu", augment: bool = True,
                 video_frames: int = paper.VIDEO_FRAMES, audio_seconds: float = paper.AUDIO_SECONDS,
                 num_threads: int = 2, device_id: int = 0,
                 video: paper.VideoAugSettings = paper.VIDEO_AUG, audio: paper.AudioAugSettings = paper.AUDIO_AUG):
        check_choice("DALI device", device, DEVICES)
        self.names, self.audio = input_names(video_frames, augment, video, audio), audio
        self.video_frames = video_frames
        self.n_steps = audio_steps(int(audio_seconds * paper.SAMPLE_RATE), audio)
        self.out_device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        self.started = 0                    # batches started and not finished yet

        @dali.pipeline_def(enable_conditionals=True)
        def pipe():
            inputs = {name: fn.external_source(name=name) for name in self.names}
            return two_view_graph(inputs, device, augment, video_frames, video, audio, self.n_steps)

        self.pipe = pipe(batch_size=batch_size, num_threads=num_threads, seed=0, prefetch_queue_depth=1,
                         device_id=device_id if device == "gpu" else None)
        self.pipe.build()

    def feed(self, clips: Sequence[Selection]) -> None:
        """Hand one batch to the pipeline's external sources."""
        inputs = [graph_inputs(c, self.audio, self.n_steps, self.video_frames) for c in clips]
        for name in self.names:
            column = [x[name] for x in inputs]
            # equal-shape inputs go in as one dense [B, ...] array: one copy instead of B
            self.pipe.feed_input(name, column if name.startswith("jpeg") else np.stack(column))

    def start(self, clips: Sequence[Selection]) -> None:
        """Feed a batch and schedule its run; returns without waiting for it."""
        self.feed(clips)
        self.pipe.schedule_run()
        self.started += 1

    def finish(self) -> dict[str, torch.Tensor]:
        """The oldest started batch {v1, v2, a1, a2} on the device (GPU copies queued on torch's
        current stream), its DALI buffers released."""
        if not self.started:
            raise RuntimeError("DaliAugmenter.finish() without a started batch")
        stream = torch.cuda.current_stream(self.out_device) if self.out_device.type == "cuda" else None
        outputs = self.pipe.outputs(cuda_stream=stream) if stream is not None else self.pipe.outputs()
        batch = dict(zip(OUTPUTS, (to_torch(t, self.out_device) for t in outputs)))
        self.pipe.release_outputs()
        self.started -= 1
        return batch

    def __call__(self, clips: Sequence[Selection]) -> dict[str, torch.Tensor]:
        """The batch {v1, v2, a1, a2} on the device."""
        self.start(clips)
        return self.finish()
