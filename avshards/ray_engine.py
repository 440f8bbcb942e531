"""``avshards build --engine ray``: one Ray task per shard, for builds larger than one machine.

Each task runs the very function the local process pool runs (:func:`avshards.writer.build_shard`,
or the upload-after-build task of an ``s3://`` output), so a shard's bytes do not depend on the
engine. The driver gathers the :class:`~avshards.writer.ShardResult` of each task as it finishes
(failures included) and feeds the same progress bar, in videos, through a Ray queue.

Ray is optional (``pip install 'crisscross-av[ray]'``) and imported only here, when chosen.
Without ``--ray-address`` a private local instance is started on 127.0.0.1 and stopped at the
end; with one (``auto``, ``HOST:6379`` or ``ray://HOST:10001``) the tasks go to that cluster.
A shard task is idempotent (it writes under a temporary name and renames), so Ray may retry it
on a lost node without harm.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from avshards.errors import BuildError
from avshards.writer import ShardResult, ShardSpec, build_shard

INSTALL_HINT = "--engine ray needs Ray; install it with pip install 'crisscross-av[ray]'."
TASK_RETRIES = 3        # re-runs of a shard whose worker or node died (not of a shard that raised)
LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT = 10.0   # seconds to reach --ray-address before giving up

Task = Callable[..., ShardResult]


def import_ray():
    """The ``ray`` module, or :class:`BuildError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BuildError(INSTALL_HINT) from None
    return ray


def start_local(num_cpus: int | None = None) -> None:
    """Start a private Ray instance on this machine, reachable on 127.0.0.1 only (no dashboard)."""
    ray = import_ray()
    from ray._private import ray_constants

    # Ray swaps 127.0.0.1 for the machine's network address unless its multi-node support is off
    # (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read once at import): turn it off while starting.
    saved, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
                 configure_logging=False, log_to_driver=False)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def connect(address: str | None, num_cpus: int | None) -> bool:
    """Make Ray usable in this process; returns True when this call started an instance.

    An instance already initialised here (e.g. by a test or a notebook) is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None:
        start_local(num_cpus)
        return True
    try:
        _check_reachable(address)
        ray.init(address=address, configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError, OSError) as err:
        raise BuildError(f"cannot connect to the Ray cluster at {address} ({err}); check `ray status` on "
                         "its head node, or leave out --ray-address to use this machine only.") from None
    return True


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast on a HOST:PORT nobody listens on: ray.init itself keeps retrying for many minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        socket.create_connection((host, int(port)), timeout=timeout).close()


def _drain(ticks, bar) -> None:
    """Move the videos finished so far from the Ray queue to the bar (one round trip)."""
    n = ticks.qsize()
    if n:
        bar.update(sum(ticks.get_nowait_batch(n)))


def _call(task: Task, spec: ShardSpec, progress) -> ShardResult:
    # Ray remotes plain functions only; the task itself may be a functools.partial.
    return task(spec, progress)


def _check_visible(spec: ShardSpec, task: Task) -> None:
    """A shard written to a local folder must be visible to the driver (shared folder or one node)."""
    if task is build_shard and not os.path.exists(spec.path):
        raise BuildError(f"{spec.path} was written on another Ray node and is not visible here; give "
                         "--out a folder shared by every node (same path), or an s3:// URL.")


def run_shards(specs: Sequence[ShardSpec], workers: int, show: bool, on_result: Callable[[ShardResult], Any],
               task: Task = build_shard, address: str | None = None) -> None:
    """Run ``task(spec, progress)`` for every spec as one Ray task each; ``on_result`` gets each result.

    Same contract as the local engine (:func:`avshards.build._run_shards`): a tqdm bar counting
    videos, results in completion order, the first exception raised (pending tasks cancelled).
    ``workers`` sizes a local instance (CPUs); a cluster given by ``address`` uses its own.
    """
    from tqdm import tqdm

    if not specs:
        return
    started = connect(address, workers if address is None else None)
    ray = import_ray()
    from ray.util.queue import Queue

    bar = tqdm(total=sum(len(s.videos) for s in specs), unit="video", disable=not show,
               dynamic_ncols=True, desc="build (ray)")
    try:
        ticks = Queue()
        remote_task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_call)
        refs = {remote_task.remote(task, spec, ticks): spec for spec in specs}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=0.2)
                _drain(ticks, bar)
                for ref in done:
                    result = ray.get(ref)      # a task's exception is re-raised here, as its own type
                    _check_visible(refs[ref], task)
                    on_result(result)
            _drain(ticks, bar)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
    finally:
        bar.close()
        if started:
            ray.shutdown()


def runner(address: str | None = None) -> Callable[..., None]:
    """The engine function for ``build`` (fails now, not mid-build, when Ray is missing)."""
    import_ray()

    def run(specs, workers, show, on_result, task=build_shard) -> None:
        run_shards(specs, workers, show, on_result, task, address)
    return run
