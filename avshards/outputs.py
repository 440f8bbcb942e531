"""Where ``avshards build`` puts its shards: a local folder, or ``s3://bucket/prefix/``.

Both outputs answer the same few questions for :func:`avshards.build.build`, so the build itself
does not care where the shards go:

- ``local``: the folder each shard is written to first (the output itself, or a staging folder);
- ``finished(path)``: is this shard already complete at the destination (resume skips it)?
- ``scan(path)``: the :class:`~avshards.writer.ShardResult` of such a finished shard;
- ``task``: the picklable per-shard function the engine runs (local pool or Ray);
- ``remove_stale(names)``: with ``--overwrite``, drop shards of an earlier, larger build;
- ``publish()``: after manifest.json and failures.jsonl are written to ``local``, deliver them.

For S3 every shard is written to a local staging folder, then its ``.idx`` and finally its
``.tar`` are uploaded (an S3 object appears whole or not at all, so a ``.tar`` there means a
complete shard) and the local copies are removed; at most one shard per worker is on local disk
at a time. A re-run lists the prefix once and skips the shards already there; manifest.json is
uploaded last, after failures.jsonl. Upload tasks run where the engine runs them, so with Ray
each node uploads its own shards (it needs AWS credentials of its own, e.g. an instance role).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field

from avshards import remote
from avshards.errors import BuildError
from avshards.format import FAILURES_NAME, MANIFEST_NAME
from avshards.index import index_path
from avshards.reader import load_index
from avshards.writer import Progress, ShardResult, ShardSpec, build_shard, scan_shard

SCAN_THREADS = 16   # concurrent range reads when a resumed build scans finished shards on S3


@dataclass
class LocalOutput:
    """The shards go straight into a local folder (the build's original behaviour)."""

    local: str

    @property
    def url(self) -> str:
        return self.local

    def finished(self, path: str) -> bool:
        return os.path.exists(path) and os.path.exists(index_path(path))

    def scan(self, path: str) -> ShardResult:
        return scan_shard(path)

    @property
    def task(self):
        return build_shard

    def remove_stale(self, names: set[str]) -> None:
        pass   # build._remove_stale already cleans the local folder

    def publish(self) -> None:
        pass


def default_staging(url: str) -> str:
    """A staging folder named after ``url`` (stable, so a re-run finds a killed run's notes)."""
    slug = hashlib.sha1(url.encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(), "avshards-staging", f"{remote.split_s3(url)[0]}-{slug}")


def _s3_error(url: str, err: OSError) -> OSError:
    if isinstance(err, remote.TransientError):
        return err    # stays transient: the CLI says the store did not answer (exit 3), a re-run resumes
    return BuildError(str(err))


def upload(path: str, url: str) -> None:
    """Upload one file, retrying transient errors; a user's error becomes one :class:`BuildError`
    sentence, a store that kept failing stays a :class:`~avshards.remote.TransientError`."""
    try:
        remote.with_retries(lambda: remote.upload_file(path, url))
    except OSError as err:
        raise _s3_error(url, err) from None


def build_and_upload(spec: ShardSpec, progress: Progress | None = None, *, dest: str) -> ShardResult:
    """Build one shard in the staging folder, upload its ``.idx`` then its ``.tar`` to ``dest``, and
    remove the local copies. Runs wherever the engine runs it (a pool process or a Ray node)."""
    os.makedirs(os.path.dirname(spec.path), exist_ok=True)   # a fresh Ray node has no staging folder yet
    result = build_shard(spec, progress)
    for path in (index_path(spec.path), spec.path):            # the tar last: its presence means complete
        upload(path, remote.join(dest, os.path.basename(path)))
        os.remove(path)
    return result


def scan_remote_shard(url: str) -> ShardResult:
    """:func:`avshards.writer.scan_shard` for a shard in object storage: its index, then only the
    json members, read by byte range (a few kB per clip instead of the whole shard)."""
    index = load_index(url)
    if index is None:
        raise BuildError(f"{url} has no index; run `avshards build` with --overwrite to rebuild it.")

    def meta(sample) -> dict:
        offset, size = sample.members["json"]
        return json.loads(remote.read_range(url, offset, offset + size))

    result = ShardResult(url.rsplit("/", 1)[-1], num_bytes=remote.size(url) or 0)
    with cf.ThreadPoolExecutor(SCAN_THREADS) as pool:
        metas = list(pool.map(meta, index))
    for m in metas:
        result.add_clip(m)
    result.video_indices = sorted({m.get("video_index") for m in metas})
    result.num_videos = len(result.video_indices)
    return result


@dataclass
class S3Output:
    """Shards staged in ``local`` and uploaded under ``url`` (``s3://bucket/prefix/``)."""

    url: str
    local: str
    present: set[str] = field(default_factory=set)   # object names under the prefix when the build began

    def prepare(self) -> None:
        """List the prefix (checking bucket and credentials now) and bring its manifest.json and
        failures.jsonl into the staging folder, where the build's resume checks read them."""
        os.makedirs(self.local, exist_ok=True)
        try:
            self.present = {u.rsplit("/", 1)[-1] for u in remote.list_urls(self.url)}
            for name in (MANIFEST_NAME, FAILURES_NAME):
                path = os.path.join(self.local, name)
                if name in self.present:
                    with open(path, "wb") as f:
                        f.write(remote.read_range(remote.join(self.url, name)))
                elif os.path.exists(path):   # left by an earlier build to this URL, since removed there
                    os.remove(path)
        except OSError as err:
            raise _s3_error(self.url, err) from None

    def _remote(self, path: str) -> str:
        return remote.join(self.url, os.path.basename(path))

    def finished(self, path: str) -> bool:
        name = os.path.basename(path)
        return name in self.present and os.path.basename(index_path(path)) in self.present

    def scan(self, path: str) -> ShardResult:
        try:
            return scan_remote_shard(self._remote(path))
        except OSError as err:
            raise _s3_error(self._remote(path), err) from None

    @property
    def task(self):
        return functools.partial(build_and_upload, dest=self.url)

    def remove_stale(self, names: set[str]) -> None:
        """Delete ``shards-*`` objects of an earlier build that this one does not plan."""
        client, (bucket, prefix) = remote.s3_client(), remote.split_s3(self.url)
        for name in sorted(self.present):
            tar = name[:-4] + ".tar" if name.endswith(".idx") else name
            if name.startswith("shards-") and tar not in names:
                try:
                    client.delete_object(Bucket=bucket, Key=prefix + name)
                except Exception as err:
                    raise BuildError(f"cannot delete the stale shard {self.url}{name} ({err}); "
                                     "check the bucket's permissions or delete it by hand.") from None
        self.present = set()   # --overwrite rebuilds every shard anyway

    def publish(self) -> None:
        """Upload failures.jsonl, then manifest.json: a reader that sees the manifest sees every shard."""
        for name in (FAILURES_NAME, MANIFEST_NAME):
            upload(os.path.join(self.local, name), remote.join(self.url, name))


def open_output(out: str | os.PathLike, staging: str | os.PathLike | None = None) -> LocalOutput | S3Output:
    """The output for ``--out``: a local folder, or ``s3://bucket/prefix/`` staged in ``staging``
    (default: a folder under the system's temporary folder, named after the URL)."""
    out = os.fspath(out)
    scheme = remote.scheme_of(out)
    if scheme == "file":
        return LocalOutput(out[len("file://"):] if out.startswith("file://") else out)
    if scheme != "s3":
        raise BuildError(f"--out {out}: shards can be written to a folder or to s3://bucket/prefix/ only.")
    bucket, _ = remote.split_s3(out)
    if not bucket:
        raise BuildError(f"--out {out} names no bucket; use s3://bucket/prefix/.")
    url = out if out.endswith("/") else out + "/"
    output = S3Output(url, os.fspath(staging) if staging else default_staging(url))
    output.prepare()
    return output
