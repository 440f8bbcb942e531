"""Real servers on 127.0.0.1 for tests and benchmarks: an S3 server (moto) and a Range-capable HTTP server.

Both start on a free port, run in a thread of this process and can be stopped mid-test (to
simulate an outage); the HTTP server can also restart on its port, drop connections half-way
through responses, or be Python's plain ``http.server`` (which ignores Range). The S3 server checks credentials (moto's ``INITIAL_NO_AUTH_ACTION_COUNT=0``)
and comes with a real IAM user whose keys :meth:`S3Server.env` returns, so wrong keys fail as on AWS.

    with S3Server() as s3, HttpServer(folder) as http:
        os.environ.update(s3.env())
        s3.upload_folder(folder, "shards", "k400/")
        ... s3://shards/k400/ ... http.url + "/" ...
"""

from __future__ import annotations

import json
import logging
import os
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REGION = "us-east-1"


class RangeHandler(SimpleHTTPRequestHandler):
    """http.server's file handler plus ``Range: bytes=a-b`` (python's own ignores Range)."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def send_head(self):
        if self.path == "/__requests__":    # how many requests were served (for benchmarks)
            body = json.dumps({"requests": self.server.requests, "ranged": self.server.ranged}).encode()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        self.server.requests += 1
        self.server.ranged += "Range" in self.headers
        if self.server.failures_left > 0:   # a flaky server: answer 503 a few times
            self.server.failures_left -= 1
            self.send_error(HTTPStatus.SERVICE_UNAVAILABLE)
            return None
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        first, _, last = rng.removeprefix("bytes=").partition("-")
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
        if start >= size:
            self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        self._left = stop - start
        return f

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        if self.server.cut_next:             # drop the connection mid-body, once
            left, self.server.cut_next = min(left, self.server.cut_next), 0
            self.close_connection = True
        elif self.server.cut_half and left > 1024:   # drop every long response half-way
            left //= 2
            self.close_connection = True
        while left > 0:
            data = source.read(min(left, 1 << 20))
            if not data:
                break
            outputfile.write(data)
            left -= len(data)
        self._left = None


def reset_faults(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """Give a server what :class:`RangeHandler` reads: no faults armed, request counters at 0."""
    server.daemon_threads = True
    server.failures_left = 0
    server.cut_next = 0
    server.cut_half = False
    server.requests = 0
    server.ranged = 0           # requests with a Range header: sample reads
    return server


class PlainHandler(SimpleHTTPRequestHandler):
    """Python's own file handler, as ``python -m http.server`` runs it: it ignores Range."""

    def log_message(self, *args) -> None:
        pass


class HttpServer:
    """Serve ``folder`` at ``self.url`` (http://127.0.0.1:PORT) until :meth:`stop`.

    ``ranges=False`` serves it with Python's plain ``http.server`` handler, which answers every
    request with the whole file (200), as ``python -m http.server`` does.
    """

    def __init__(self, folder: str | os.PathLike, ranges: bool = True, port: int = 0):
        self.folder, self.ranges = str(folder), ranges
        self._start(port)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _start(self, port: int) -> None:
        cls = RangeHandler if self.ranges else PlainHandler
        handler = lambda *a, **kw: cls(*a, directory=self.folder, **kw)  # noqa: E731
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        reset_faults(self.server)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def restart_in_background(self, down_seconds: float) -> threading.Thread:
        """Stop now (connections refused), serve again on the same port after ``down_seconds``."""
        port = self.server.server_address[1]
        self.stop()

        def later():
            import time

            time.sleep(down_seconds)
            self._start(port)

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        return thread

    def cut_every_response_half_way(self, on: bool = True) -> None:
        """Close the connection of every ranged response of more than 1 kB after half its body."""
        self.server.cut_half = on

    def fail_next(self, n: int) -> None:
        """Answer the next ``n`` requests with HTTP 503 (a transient server error)."""
        self.server.failures_left = n

    def cut_next(self, nbytes: int) -> None:
        """Close the connection of the next ranged response after ``nbytes`` of its body."""
        self.server.cut_next = nbytes

    def stop(self) -> None:
        """Stop serving and close the port: later requests get 'connection refused'."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()

    def __enter__(self) -> "HttpServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class S3Server:
    """moto's S3 protocol server on 127.0.0.1 with authentication on and one IAM user.

    The in-process moto setting that turns authentication on is restored when the last running
    server stops, so in-process ``mock_aws`` tests elsewhere are unaffected afterwards.
    """

    running_servers = 0
    saved_auth_setting = None

    def __init__(self):
        import moto.settings
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.iam.models import iam_backends
        from moto.server import ThreadedMotoServer

        if S3Server.running_servers == 0:
            S3Server.saved_auth_setting = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
        S3Server.running_servers += 1
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0   # check keys from the first request on
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        iam = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
        user = f"tester{port}"
        iam.create_user(REGION, user)
        key = iam.create_access_key(user)
        iam.put_user_policy(user, "all", json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.key_id, self.secret = key.access_key_id, key.secret_access_key
        self.running = True

    def restart_in_background(self, down_seconds: float) -> threading.Thread:
        """Stop now (connections refused), serve again on the same port after ``down_seconds``;
        the buckets survive (moto keeps them in this process)."""
        from moto.server import ThreadedMotoServer

        port = int(self.endpoint.rsplit(":", 1)[1])
        self.server.stop()
        self.server._server.server_close()

        def later():
            import time

            time.sleep(down_seconds)
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self.server.start()

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        return thread

    def env(self, **override: str) -> dict[str, str]:
        """The AWS_* variables that point boto3 at this server with valid keys."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION, **override}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key_id,
                            aws_secret_access_key=self.secret, region_name=REGION)

    def upload_folder(self, folder: str | os.PathLike, bucket: str, prefix: str = "") -> str:
        """Create ``bucket`` (if needed), put every file of ``folder`` under ``prefix``; return the s3 URL."""
        client = self.client()
        if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=bucket)
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                client.upload_file(str(path), bucket, prefix + path.name)
        return f"s3://{bucket}/{prefix}"

    def stop(self) -> None:
        """Stop the server: later requests get 'connection refused'."""
        if self.running:
            self.server.stop()
            self.server._server.server_close()   # moto leaves the socket listening: close it
            self.running = False
            S3Server.running_servers -= 1
            if S3Server.running_servers == 0:
                import moto.settings

                moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = S3Server.saved_auth_setting

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> None:
    """``python tests/servers.py http FOLDER`` or ``... s3``: serve until killed (for benchmarks).

    Prints one JSON line first: {"url": ...} for HTTP, the AWS_* variables for S3.
    """
    import sys
    import time

    if argv[:1] == ["http"]:
        server = HttpServer(argv[1])
        print(json.dumps({"url": server.url}), flush=True)
    elif argv[:1] == ["s3"]:
        server = S3Server()
        print(json.dumps(server.env()), flush=True)
    else:
        sys.exit("usage: servers.py http FOLDER | servers.py s3")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])


# --- servers that record what they were asked, and answer chosen statuses (appended for issue 19) ---
import http.client  # noqa: E402  (imports of the helpers below, kept with them)
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from http.server import BaseHTTPRequestHandler  # noqa: E402


@dataclass(frozen=True)
class Request:
    """One request as a server saw it: method, path, Range header (or None), arrival (monotonic s)."""
    method: str
    path: str
    range: str | None
    at: float


class ScriptedHandler(RangeHandler):
    """RangeHandler that logs every request and answers the statuses scripted on its server first."""

    def send_head(self):
        server = self.server
        with server.lock:
            server.log.append(Request(self.command, self.path, self.headers.get("Range"), time.monotonic()))
            status = server.answers.pop(0) if server.answers else server.always
        if status is None:
            return super().send_head()
        self.send_error(status)
        return None


class ScriptedHttpServer(HttpServer):
    """An :class:`HttpServer` that records each request (:attr:`log`) and can answer statuses first.

        with ScriptedHttpServer(folder) as server:
            server.answer_next(429, 429)     # the next two requests get 429, then files are served
            server.answer_always(403)        # every request gets 403
    """

    def _start(self, port: int) -> None:
        super()._start(port)
        handler = lambda *a, **kw: ScriptedHandler(*a, directory=self.folder, **kw)  # noqa: E731
        self.server.RequestHandlerClass = handler      # before any request: the test has not sent one yet
        self.server.lock, self.server.log = threading.Lock(), []
        self.server.answers, self.server.always = [], None

    @property
    def log(self) -> list[Request]:
        return list(self.server.log)

    def answer_next(self, *statuses: int) -> None:
        self.server.answers = list(statuses)

    def answer_always(self, status: int | None) -> None:
        self.server.always = status


SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce '
             b'your request rate.</Message><RequestId>proxy</RequestId></Error>')
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "expect"}


class ProxyHandler(BaseHTTPRequestHandler):
    """Forward each request to the server at ``self.server.upstream`` unchanged (the Host header
    too, so S3 signatures stay valid), after logging it; answer scripted throttling first."""

    protocol_version = "HTTP/1.1"        # keep-alive and 100-continue, as S3 clients expect

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""                    # forwarded as it came: chunk framing and trailers included
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return raw
                raw += self.rfile.read(size + 2)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        server = self.server
        body = self._body()
        with server.lock:
            server.log.append(Request(self.command, self.path, self.headers.get("Range"), time.monotonic()))
            throttle = server.slow_down_left > 0 and self.command in server.slow_down_methods
            server.slow_down_left -= throttle
        if throttle:
            self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(SLOW_DOWN)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(SLOW_DOWN)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP - {"transfer-encoding"}}
        if "Transfer-Encoding" not in self.headers:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*server.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            length = resp.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream`` (e.g. an :class:`S3Server`'s endpoint)
    that records every request (:attr:`log`) and can answer S3 throttling (``503 SlowDown``).

        with S3Server() as s3, RecordingProxy(s3.endpoint) as proxy:
            os.environ.update(s3.env(AWS_ENDPOINT_URL=proxy.url))
            proxy.slow_down(2)               # the next two requests get 503 SlowDown
    """

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), ProxyHandler)
        self.server.daemon_threads = True
        self.server.upstream = (host, int(port))
        self.server.lock, self.server.log = threading.Lock(), []
        self.server.slow_down_left, self.server.slow_down_methods = 0, set()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def log(self) -> list[Request]:
        return list(self.server.log)

    def clear(self) -> None:
        with self.server.lock:
            self.server.log.clear()

    def slow_down(self, n: int, methods: tuple[str, ...] = ("GET", "HEAD", "PUT", "POST", "DELETE")) -> None:
        """Answer the next ``n`` requests of ``methods`` with S3's ``503 SlowDown`` (forever: a large n)."""
        with self.server.lock:
            self.server.slow_down_left, self.server.slow_down_methods = n, set(methods)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def __enter__(self) -> "RecordingProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
