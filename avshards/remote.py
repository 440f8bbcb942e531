"""Byte access to shards by URL: local paths, ``http(s)://``, ``s3://`` and, through fsspec, ``gs://``,
``az://`` and ``hf://``, in one visible table.

Every scheme offers the same four operations (see :data:`SCHEMES`): read a byte range, open a
sequential stream, tell whether an object exists (and its size), list a prefix. Errors a user can
cause (missing object, missing bucket, wrong credentials) become :class:`ShardAccessError` with one
clear sentence; transient ones (connection refused or reset, 5xx, timeouts) are retried with
exponential back-off by :func:`read_range` and then raised as :class:`TransientError`.

S3 goes through boto3 with one client per process, created on first use and honouring the standard
``AWS_*`` variables, including ``AWS_ENDPOINT_URL`` (so MinIO, Ceph, R2 or moto work as well).
HTTP(S) requests carry the headers of ``AVSHARDS_HTTP_HEADERS`` (e.g. a bearer token). The fsspec
schemes need their package (gcsfs, adlfs, huggingface_hub: the extras ``[gcs]``, ``[azure]``,
``[hf]``) and take credentials the way that package does.
"""

from __future__ import annotations

import http.client
import os
import posixpath
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

RETRIES = 3          # tries after the first one
BACKOFF = 0.5        # seconds before the first retry; doubles each time
TIMEOUT = 60.0       # seconds for a connection or a read to stall


class ShardAccessError(OSError):
    """A shard or manifest that cannot be read for a reason the user must fix (one clear sentence)."""


class NotFound(ShardAccessError):
    """The object (shard, index, manifest) does not exist."""


class TransientError(OSError):
    """A read that failed for a reason that may go away (network, server restart, 5xx)."""


def scheme_of(url: str) -> str:
    """``s3``, ``http``, ``gs`` ... or ``file`` (plain paths and ``file://`` URLs)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def join(base: str, name: str) -> str:
    """``join("s3://b/p/", "x.tar")`` -> ``s3://b/p/x.tar``; plain paths use os.path.join."""
    if scheme_of(base) == "file":
        return os.path.join(_local(base), name)
    return base.rstrip("/") + "/" + name


def _local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


# ---------------------------------------------------------------------------------------- file
def _file_read(url: str, start: int, stop: int | None) -> bytes:
    try:
        with open(_local(url), "rb") as f:
            f.seek(start)
            return f.read() if stop is None else f.read(stop - start)
    except (FileNotFoundError, NotADirectoryError):   # notes.txt/manifest.json: no such file either
        raise NotFound(f"{url} does not exist; check the path.") from None


def _file_stream(url: str, start: int, stop: int | None) -> IO[bytes]:
    try:
        f = open(_local(url), "rb")
        f.seek(start)
        return f
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"{url} does not exist; check the path.") from None


def _file_size(url: str) -> int | None:
    path = _local(url)
    return os.path.getsize(path) if os.path.isfile(path) else None


def _file_list(url: str) -> list[str]:
    path = _local(url)
    if not os.path.exists(path):
        raise NotFound(f"{url} does not exist; check the path.")
    if not os.path.isdir(path):
        raise ShardAccessError(f"{url} is not a folder; give a folder of shards, a .tar or a brace pattern.")
    return sorted(os.path.join(path, n) for n in os.listdir(path))


# ---------------------------------------------------------------------------------------- http
HEADERS_ENV = "AVSHARDS_HTTP_HEADERS"


def http_headers() -> dict[str, str]:
    """Headers for every HTTP(S) request, from ``AVSHARDS_HTTP_HEADERS``: ``Name: value`` lines.

    Read at each request, so DataLoader workers and a changed environment see the current value.
    """
    headers = {}
    for n, line in enumerate(os.environ.get(HEADERS_ENV, "").splitlines(), 1):
        name, sep, value = line.partition(":")
        if not line.strip():
            continue
        if not sep or not name.strip():   # the line itself is not quoted: it may hold a token
            raise ShardAccessError(f"line {n} of {HEADERS_ENV} is not 'Name: value'; write one header per line, "
                                   "e.g. 'Authorization: Bearer TOKEN'.")
        headers[name.strip()] = value.strip()
    return headers


def _http_error(url: str, err: Exception) -> OSError:
    """Classify an urllib error: 4xx, malformed URLs and unknown hosts are the user's to fix, the
    rest (refused or reset connections, timeouts, 5xx) may be transient."""
    host = urllib.parse.urlparse(url).netloc
    if isinstance(err, (http.client.InvalidURL, ValueError)):
        return ShardAccessError(f"{url} is not a valid URL ({err}); percent-encode spaces and other special "
                                "characters (a space is %20).")
    if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code not in (408, 429):
        if err.code == 404:
            return NotFound(f"{url} was not found on the server (HTTP 404); check the URL.")
        if err.code in (401, 403):
            return ShardAccessError(f"{url} was refused by the server (HTTP {err.code} {err.reason}); check the "
                                    f"URL and the credentials in {HEADERS_ENV} (e.g. 'Authorization: Bearer TOKEN').")
        return ShardAccessError(f"{url} was refused by the server (HTTP {err.code} {err.reason}); "
                                "check the URL and its access rights.")
    reason = getattr(err, "reason", err)
    if isinstance(reason, socket.gaierror) and reason.errno == socket.EAI_NONAME:
        return ShardAccessError(f"{url}: the host name in it is not known ({host}); check the URL.")
    if isinstance(reason, ConnectionRefusedError):
        return TransientError(f"{url}: connection refused, nothing listens at {host}")
    if isinstance(reason, TimeoutError):
        return TransientError(f"{url}: no answer from {host} within {TIMEOUT:g} s")
    return TransientError(f"{url}: {reason}")


def _http_open(url: str, start: int = 0, stop: int | None = None, method: str = "GET"):
    headers = http_headers()
    if start or stop is not None:
        headers["Range"] = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers, method=method),
                                      timeout=TIMEOUT)
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise _http_error(url, err) from None


def _check_ranged(url: str, resp, start: int, stop: int | None) -> None:
    """A ranged request must get 206 (or 200 for a range that is the whole object).

    A server that ignores Range answers 200 with the whole object; cutting it ourselves would
    download every shard in full for every sample range, so it is refused in one sentence.
    """
    if not (start or stop is not None) or resp.status == 206:
        return
    length = resp.headers.get("Content-Length")
    if start == 0 and stop is not None and length is not None and int(length) == stop:
        return
    resp.close()
    raise ShardAccessError(f"{url}: the server ignores HTTP Range requests; serve the shards with "
                           "a server that supports them (nginx, S3, ...).")


def _http_read(url: str, start: int, stop: int | None) -> bytes:
    with _http_open(url, start, stop) as resp:
        _check_ranged(url, resp, start, stop)
        try:
            return resp.read()
        except Exception as err:  # reset (OSError) or short body (http.client.IncompleteRead)
            raise TransientError(f"{url}: {err}") from None


def _http_stream(url: str, start: int, stop: int | None) -> IO[bytes]:
    resp = _http_open(url, start, stop)
    _check_ranged(url, resp, start, stop)
    return resp


def _http_size(url: str) -> int | None:
    try:
        with _http_open(url, method="HEAD") as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length is not None else 0
    except NotFound:
        return None


def _http_list(url: str) -> list[str]:
    raise ShardAccessError(f"{url}: an HTTP server gives no listing; put a manifest.json there "
                           "(`avshards build` writes one) or give a brace pattern of the shards.")


# ------------------------------------------------------------------------------------------ s3
_SESSIONS: dict[tuple, object] = {}
_CLIENTS: dict[tuple, object] = {}
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
               "InvalidClientTokenId", "ExpiredToken", "AuthorizationHeaderMalformed"}


def s3_client():
    """The process's boto3 S3 client, created on first use (again after a fork or an AWS_* change).

    The boto3 session (whose parsed service models make a client slow to create) is kept across
    forks, so DataLoader workers get their own client in milliseconds.
    """
    config_env = tuple(os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                                                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                    "AWS_PROFILE", "AWS_DEFAULT_REGION"))
    key = (os.getpid(), config_env)
    if key not in _CLIENTS:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ShardAccessError("s3:// URLs need boto3; pip install 'crisscross-av[s3]'.") from None
        # Our own retry loop decides what is transient; botocore's would hide the cause and the time.
        # (botocore's "max_attempts" counts retries: only "total_max_attempts" 1 turns them off.)
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=TIMEOUT,
                        read_timeout=TIMEOUT, max_pool_connections=16)
        if config_env not in _SESSIONS:
            _SESSIONS.clear()
            _SESSIONS[config_env] = boto3.session.Session()
        _CLIENTS.clear()
        _CLIENTS[key] = _SESSIONS[config_env].client("s3", config=config)
    return _CLIENTS[key]


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def _s3_error(url: str, err: Exception) -> OSError:
    from botocore.exceptions import ClientError, NoCredentialsError, ParamValidationError

    if isinstance(err, ParamValidationError):
        return ShardAccessError(f"{url} is not a valid S3 object URL ({err}); use s3://bucket/prefix/.")
    if isinstance(err, NoCredentialsError):
        return ShardAccessError(f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).")
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        bucket = split_s3(url)[0]
        if code == "NoSuchBucket":
            return ShardAccessError(f"{url}: the bucket '{bucket}' does not exist; check the bucket name "
                                    "(and AWS_ENDPOINT_URL for a non-AWS store).")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{url} does not exist in the bucket; check the prefix.")
        if code in _AUTH_CODES or status in (401, 403):
            return ShardAccessError(f"{url}: access denied ({code}); check AWS_ACCESS_KEY_ID / "
                                    "AWS_SECRET_ACCESS_KEY and the bucket's permissions.")
        if status and status < 500 and code not in ("SlowDown", "RequestTimeout"):
            return ShardAccessError(f"{url}: S3 refused the request ({code}).")
    return TransientError(f"{url}: {err}")


def _s3_call(url: str, fn: Callable, **kw):
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(url)
    try:
        return fn(Bucket=bucket, Key=key, **kw)
    except (ClientError, BotoCoreError, OSError) as err:
        raise _s3_error(url, err) from None


def _s3_read(url: str, start: int, stop: int | None) -> bytes:
    kw = {"Range": f"bytes={start}-" + ("" if stop is None else str(stop - 1))} if start or stop else {}
    body = _s3_call(url, s3_client().get_object, **kw)["Body"]
    try:
        return body.read()
    except Exception as err:  # botocore wraps resets mid-body in several types
        raise TransientError(f"{url}: {err}") from None


def _s3_stream(url: str, start: int, stop: int | None) -> IO[bytes]:
    kw = {"Range": f"bytes={start}-" + ("" if stop is None else str(stop - 1))} if start or stop else {}
    return _s3_call(url, s3_client().get_object, **kw)["Body"]


def _s3_size(url: str) -> int | None:
    try:
        return _s3_call(url, s3_client().head_object)["ContentLength"]
    except NotFound:
        return None


def _s3_list(url: str) -> list[str]:
    bucket, prefix = split_s3(url)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    paginator = s3_client().get_paginator("list_objects_v2")
    out = []
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            out += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
    except Exception as err:
        raise _s3_error(url, err) from None
    return sorted(out)


# -------------------------------------------------------------------------------------- fsspec
# Package and extra of each fsspec scheme (memory:// is fsspec's own in-process store, for tests).
FSSPEC_PACKAGES = {"gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"),
                   "abfs": ("adlfs", "azure"), "hf": ("huggingface_hub", "hf"), "memory": ("fsspec", "cloud")}


def _fs(url: str):
    """(fsspec filesystem, path) for ``url``; one clear sentence when the scheme's package is missing."""
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError:
        package, extra = FSSPEC_PACKAGES.get(scheme_of(url), ("fsspec", "cloud"))
        raise ShardAccessError(f"{scheme_of(url)}:// URLs need {package}; pip install "
                               f"'crisscross-av[{extra}]'.") from None


def _status(err: Exception) -> int | None:
    """The HTTP status an fsspec backend's error carries (gcsfs ``code``, azure / hf ``status_code``)."""
    for holder in (err, getattr(err, "response", None)):
        for attr in ("status_code", "status", "code"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value
    return None


def _fs_error(url: str, err: Exception) -> OSError:
    """The same classification as HTTP and S3: missing, refused, or (else) transient."""
    status = _status(err)
    if isinstance(err, FileNotFoundError) or status == 404:
        return NotFound(f"{url} does not exist; check the path.")
    if isinstance(err, PermissionError) or status in (401, 403):
        return ShardAccessError(f"{url}: access denied ({err}); check the credentials that "
                                f"{FSSPEC_PACKAGES.get(scheme_of(url), ('fsspec',))[0]} uses for {scheme_of(url)}://.")
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return ShardAccessError(f"{url}: the store refused the request (HTTP {status}: {err}).")
    if isinstance(err, ValueError):
        return ShardAccessError(f"{url} is not a valid {scheme_of(url)}:// URL ({err}).")
    return TransientError(f"{url}: {err}")


def _fs_call(url: str, operation: Callable):
    fs, path = _fs(url)
    try:
        return operation(fs, path)
    except Exception as err:  # each backend (gcsfs, adlfs, huggingface_hub, aiohttp) raises its own types
        raise _fs_error(url, err) from None


def _fs_read(url: str, start: int, stop: int | None) -> bytes:
    return _fs_call(url, lambda fs, path: fs.cat_file(path, start=start, end=stop))


def _fs_stream(url: str, start: int, stop: int | None) -> IO[bytes]:
    def opened(fs, path):
        f = fs.open(path, "rb")
        f.seek(start)
        return f
    return _fs_call(url, opened)


def _fs_size(url: str) -> int | None:
    def size(fs, path):
        info = fs.info(path)
        return None if info.get("type") == "directory" else int(info["size"])
    try:
        return _fs_call(url, size)
    except NotFound:
        return None


def _fs_list(url: str) -> list[str]:
    entries = _fs_call(url, lambda fs, path: fs.ls(path, detail=True))
    return sorted(join(url, posixpath.basename(e["name"].rstrip("/"))) for e in entries if e.get("type") == "file")


# ---------------------------------------------------------------------------------------- table
@dataclass(frozen=True)
class Scheme:
    """What a URL scheme must provide. ``read(url, start, stop)`` reads bytes ``[start, stop)``."""
    read: Callable[[str, int, int | None], bytes]
    stream: Callable[[str, int, int | None], IO[bytes]]   # a stream of bytes [start, stop)
    size: Callable[[str], int | None]          # None when the object does not exist
    list: Callable[[str], list[str]]


FSSPEC = Scheme(_fs_read, _fs_stream, _fs_size, _fs_list)
SCHEMES: dict[str, Scheme] = {
    "file": Scheme(_file_read, _file_stream, _file_size, _file_list),
    "http": Scheme(_http_read, _http_stream, _http_size, _http_list),
    "https": Scheme(_http_read, _http_stream, _http_size, _http_list),
    "s3": Scheme(_s3_read, _s3_stream, _s3_size, _s3_list),
    **{name: FSSPEC for name in FSSPEC_PACKAGES},
}


def scheme(url: str) -> Scheme:
    """The :class:`Scheme` handling ``url``; one clear sentence for an unknown scheme."""
    name = scheme_of(url)
    if name not in SCHEMES:
        raise ShardAccessError(f"{url}: unknown URL scheme '{name}://'; use a path, http(s)://, s3://, gs://, "
                               "az:// or hf://.")
    return SCHEMES[name]


def with_retries(fn: Callable[[], object], retries: int = RETRIES, backoff: float = BACKOFF):
    """Call ``fn``; on :class:`TransientError` sleep ``backoff * 2**i`` and retry, ``retries`` times."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except TransientError:
            if attempt == retries:
                raise
            time.sleep(backoff * 2 ** attempt)


def read_range(url: str, start: int = 0, stop: int | None = None, retries: int = RETRIES,
               backoff: float = BACKOFF) -> bytes:
    """Bytes ``[start, stop)`` of ``url`` (to the end when ``stop`` is None), retrying transient errors.

    One request per call (HTTP Range, S3 GetObject Range, or a file seek). The result is shorter
    than asked when the object is shorter (a truncated shard).
    """
    return with_retries(lambda: scheme(url).read(url, start, stop), retries, backoff)


def open_stream(url: str, start: int = 0, stop: int | None = None, retries: int = RETRIES,
                backoff: float = BACKOFF) -> IO[bytes]:
    """A sequential binary stream of bytes ``[start, stop)`` of the object (close it when done).

    One request; the body arrives as it is read, so memory stays small whatever the range.
    """
    return with_retries(lambda: scheme(url).stream(url, start, stop), retries, backoff)


class ResumingStream:
    """Bytes ``[start, stop)`` of ``url`` read sequentially, surviving broken connections.

    One request serves the whole range; when it fails mid-body (connection reset, server
    restart, a response that ends early) the rest is requested again from the byte where it
    stopped, so nothing is read twice or lost. ``retries`` bounds the failures in a row without
    a byte of progress (sleeping ``backoff * 2**i`` before each new try); then
    :class:`TransientError` is raised. ``requests`` counts the requests made. A local file that
    ends early is truncated, not transient: its short read is returned at once.
    """

    def __init__(self, url: str, start: int = 0, stop: int | None = None, retries: int = RETRIES,
                 backoff: float = BACKOFF):
        self.url, self.pos, self.stop = url, start, stop
        self.retries, self.backoff = retries, backoff
        self.requests, self.resumed = 0, 0
        self._body: IO[bytes] | None = None
        self._failures = 0
        self._open()

    def _open(self) -> None:
        while True:
            try:
                self.requests += 1
                self._body = scheme(self.url).stream(self.url, self.pos, self.stop)
                return
            except TransientError:
                self._failed()

    def _failed(self) -> None:
        """Count a failure without progress; sleep before the next try, or give up."""
        self._failures += 1
        if self._failures > self.retries:
            raise TransientError(f"{self.url}: {self.retries} retries at byte {self.pos} failed") from None
        time.sleep(self.backoff * 2 ** (self._failures - 1))

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes (fewer only where the object or the range ends)."""
        parts: list[bytes] = []
        left = n if self.stop is None else min(n, self.stop - self.pos)
        while left > 0:
            try:
                data = self._body.read(left)
                if not data and (self.stop is None or scheme_of(self.url) == "file"):
                    break                          # the end of the object (or a truncated file)
                if not data:
                    raise TransientError("the response ended early")
            except Exception as err:  # urllib and botocore raise several types for a reset mid-body
                if isinstance(err, ShardAccessError):
                    raise
                self.close()
                self._failed()
                self.resumed += 1
                self._open()
                continue
            parts.append(data)
            self.pos += len(data)
            left -= len(data)
            self._failures = 0
        return b"".join(parts)

    def close(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # closing a broken connection may raise; it is gone either way
                pass
            self._body = None


def read_exact(stream: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes from ``stream`` (fewer only at its end); a broken connection is transient."""
    parts, left = [], n
    try:
        while left > 0:
            data = stream.read(left)
            if not data:
                break
            parts.append(data)
            left -= len(data)
    except Exception as err:  # urllib and botocore raise several types for a reset mid-body
        raise TransientError(f"read failed mid-stream: {err}") from None
    if left > 0 and getattr(stream, "length", None):
        # urllib returns a short read, not an error, when the server closes before Content-Length
        raise TransientError(f"the connection closed {stream.length} bytes before the end of the response")
    return b"".join(parts)


def size(url: str, retries: int = RETRIES, backoff: float = BACKOFF) -> int | None:
    """Size of the object in bytes, or None when it does not exist (errors still raise)."""
    return with_retries(lambda: scheme(url).size(url), retries, backoff)


def exists(url: str) -> bool:
    """Whether the object at ``url`` (path, http(s):// or s3://) exists.

    Raises :class:`ShardAccessError` when the answer cannot be known (wrong credentials, missing
    bucket), so a caller never mistakes "access denied" for "absent".
    """
    return size(url) is not None


def list_urls(url: str) -> list[str]:
    """The objects directly under a folder or ``s3://bucket/prefix/`` (sorted URLs; not for HTTP)."""
    return with_retries(lambda: scheme(url).list(url))


# --------------------------------------------------------------------------------------- upload
def upload_file(local_path: str, url: str) -> None:
    """Upload one local file to ``s3://bucket/key`` (multipart for large files), replacing it.

    Use :func:`exists` first to skip objects already there. Raises :class:`ShardAccessError`
    for missing bucket or wrong credentials.
    """
    if scheme_of(url) != "s3":
        raise ShardAccessError(f"{url}: uploads go to s3://bucket/prefix/ URLs only.")
    bucket, key = split_s3(url)
    try:
        s3_client().upload_file(local_path, bucket, key)
    except Exception as err:
        while err.__context__ is not None and "ClientError" not in type(err).__name__:
            err = err.__context__   # boto3's S3UploadFailedError hides the ClientError that says why
        raise _s3_error(url, err) from None


def _upload_order(paths: list[str]) -> list[str]:
    # Shards and indexes first, the manifest last: a reader that sees the manifest sees every shard.
    return sorted(paths, key=lambda p: (os.path.basename(p) == "manifest.json", p))


def upload(local: str, url: str, skip_existing: bool = True,
           progress: Callable[[str, bool], None] | None = None) -> tuple[list[str], list[str]]:
    """Upload a shard folder (its files, not sub-folders) or one file under ``s3://bucket/prefix/``.

    Objects already there with the same size are skipped when ``skip_existing``, so a re-run only
    sends what is missing. Returns (uploaded URLs, skipped URLs); ``progress(url, skipped)`` is
    called after each file.
    """
    if os.path.isdir(local):
        files = [os.path.join(local, n) for n in os.listdir(local)
                 if os.path.isfile(os.path.join(local, n)) and not n.startswith(".")]
    elif os.path.isfile(local):
        files = [local]
    else:
        raise ShardAccessError(f"{local} does not exist; give a shard folder or a file to upload.")
    uploaded, skipped = [], []
    for path in _upload_order(files):
        dest = join(url, os.path.basename(path)) if url.endswith("/") or os.path.isdir(local) else url
        skip = skip_existing and size(dest) == os.path.getsize(path)
        if not skip:
            with_retries(lambda: upload_file(path, dest))
        (skipped if skip else uploaded).append(dest)
        if progress:
            progress(dest, skip)
    return uploaded, skipped

