"""What the benchmark scripts in tools/ share: CPU time, process-tree memory, and writing one
tool's section of docs/benchmarks.md without touching the others', counting the ops a block launches."""

from __future__ import annotations

import resource
import threading
from pathlib import Path

import psutil
from torch.utils._python_dispatch import TorchDispatchMode


def cpu_seconds() -> float:
    """CPU time of this process and of all its descendants: those that have exited and been reaped,
    and those still running with what they reaped themselves (persistent DataLoader workers live on
    after an epoch, so their time would be missed until the loader is gone; the reaped ones are
    read first, so a process reaped in between is at worst missed, never counted twice)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
        except psutil.Error:            # exited meanwhile
            continue
        live += t.user + t.system + t.children_user + t.children_system
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


def tree_memory() -> tuple[int, int, int]:
    """(summed RSS in bytes, number of processes, RSS of this process alone) of this process and
    its children (pages shared after fork count twice)."""
    me, total, count = psutil.Process(), 0, 0
    own = me.memory_info().rss
    for p in me.children(recursive=True):
        try:
            total, count = total + p.memory_info().rss, count + 1
        except psutil.Error:
            pass
    return total + own, count + 1, own


def tree_rss() -> int:
    """Summed RSS in bytes of this process and its children."""
    return tree_memory()[0]


class PeakRSS:
    """Samples :func:`tree_rss` every 50 ms in a thread; ``.peak`` in bytes."""

    def __enter__(self) -> "PeakRSS":
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, tree_rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_section(path: Path, section: str, text: str) -> None:
    """Replace (or append) the section headed ``section`` of the markdown file ``path`` with ``text``
    (which starts with that heading), leaving the other sections as they are."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(section)
    if start < 0:
        path.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    nxt = old.find("\n## ", start + len(section))
    path.write_text(old[:start] + text + ("" if nxt < 0 else "\n" + old[nxt + 1:]))


class OpCount(TorchDispatchMode):
    """Counts the computing aten ops (kernel launches on a GPU) dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not func.is_view
        return func(*args, **(kwargs or {}))
