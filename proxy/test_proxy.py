"""nginx in front of the server, with the very configuration the README recommends
(deploy/nginx/upload-server.conf, only its upstream address and listen port replaced),
Debian's nginx on loopback.

    python3 -m pytest proxy [--binary PATH] [--proxy-size-mib N] [--proxy-rounds N]

  - nginx -t accepts the configuration;
  - against a recording upstream: nginx passes the request on before the body is
    complete (proxy_request_buffering off), over HTTP/1.1 keep-alive, with
    X-Forwarded-For (client's chain plus its address), X-Forwarded-Proto, X-Real-IP
    and Host; with no upstream at all, the client gets JSON;
  - against the real server: a 1 GiB upload (--proxy-size-mib) streams through: 200,
    the stored file has the sent sha256, nginx's resident memory stays small and it
    writes no temporary file;
  - the 413 through nginx, attacked: 64 MiB bodies over a 1 MiB --max-upload-size,
    --proxy-rounds times each (curl -T, a raw client streaming at full speed with
    Content-Length, and chunked): every answer must be the server's JSON 413, never
    nginx's 502/503. The server answers on the headers and stops reading; nginx is
    still sending the body, and must get the answer before a reset.
Skipped without nginx (apt-get install nginx-light).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import common
from common import HOST, Closed, Conn, MiB, Server, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "deploy", "nginx", "upload-server.conf")
UPSTREAM_LINE = "server 127.0.0.1:9000;"
LISTEN_LINE = "listen 80;"
SERVER_LIMIT_MIB = 1025          # --max-upload-size: a 1 GiB file plus its multipart framing fits
NGINX_RSS_LIMIT_MIB = 32         # "stays small": nginx must not hold the body
ATTACK_LIMIT = "1MiB"            # --max-upload-size of the 413 attack
ATTACK_SIZE = 64 * MiB           # the body sent at it
UNAVAILABLE = "the upload service is unavailable"   # nginx's own JSON (error_page) in the tested file


def proxy(make_nginx, upstream_port: int, name: str = "nginx") -> common.Nginx:
    """deploy/nginx/upload-server.conf in front of 127.0.0.1:upstream_port (not started)."""
    nginx = make_nginx(http="    include {prefix}/upload-server.conf;", name=name)
    nginx.http = nginx.http.replace("{prefix}", nginx.prefix)
    with open(CONF) as f:
        tested = f.read()
    for line in (UPSTREAM_LINE, LISTEN_LINE):
        assert tested.count(line) == 1, f"{CONF} must hold '{line}' exactly once (it is replaced here)"
    tested = tested.replace(UPSTREAM_LINE, f"server {HOST}:{upstream_port};")
    tested = tested.replace(LISTEN_LINE, f"listen {HOST}:{nginx.port};")
    nginx.write("upload-server.conf", tested)
    return nginx


# --------------------------------------------------------------------------- recording upstream

class Recorder:
    """An upstream that records each request's head (and when it came) and
    answers 200 once the body is in."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[tuple[float, str]] = []
        self.bodies: list[int] = []
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections.append(conn)
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ValueError):
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                text = head.decode("latin-1")
                self.heads.append((time.monotonic(), text))
                length = 0
                for line in text.split("\r\n")[1:]:
                    key, _, value = line.partition(":")
                    if key.strip().lower() == "content-length":
                        length = int(value)
                while len(buffer) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                self.bodies.append(length)
                buffer = buffer[length:]
                body = b'{"recorded":true}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        """Gone: no listener, and nginx's kept-alive connections closed."""
        # shutdown, not only close: it wakes the accept() blocked in the thread,
        # which would otherwise keep the socket listening.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


# --------------------------------------------------------------------------- nginx alone

@pytest.fixture
def recorder():
    one = Recorder()
    yield one
    one.close()


def test_config_accepted(nginx):
    ok, output = proxy(nginx, 9000).config_test()
    assert ok, output


def test_streams_before_the_body_is_complete(nginx, recorder):
    front = proxy(nginx, recorder.port).start()
    total, first = 2 * MiB, 64 * 1024
    with Conn(front.port, timeout=10) as conn:
        conn.send(f"POST /upload HTTP/1.1\r\nHost: uploads.example\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {total}\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n".encode(), b"x" * first)
        deadline = time.monotonic() + 5
        while not recorder.heads and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.heads, f"nothing reached the upstream after {first} of {total} bytes " \
                               "(proxy_request_buffering off?)"
        conn.send(b"x" * (total - first))
        response = conn.read_response(10)
    assert (response.status, recorder.bodies) == (200, [total])

    head = recorder.heads[0][1]
    got = {"request line": head.split("\r\n")[0],
           "Host": header(head, "Host"),
           "X-Forwarded-For": header(head, "X-Forwarded-For"),
           "X-Forwarded-Proto": header(head, "X-Forwarded-Proto"),
           "X-Real-IP": header(head, "X-Real-IP"),
           "Connection": header(head, "Connection")}
    assert got == {"request line": "POST /upload HTTP/1.1",
                   "Host": "uploads.example",
                   "X-Forwarded-For": f"203.0.113.7, {HOST}",
                   "X-Forwarded-Proto": "http",
                   "X-Real-IP": HOST,
                   "Connection": None}


def test_no_upstream_is_json(nginx, recorder):
    front = proxy(nginx, recorder.port).start()
    recorder.close()
    response = common.request(front.port, "GET", "/healthz", timeout=10)
    assert response.status == 503
    assert response.headers.get("content-type") == "application/json"
    assert "error" in response.json()


# --------------------------------------------------------------------------- the real server

def stream_upload(nginx: common.Nginx, server: Server, size: int, name: str):
    """Streams one file of `size` bytes through nginx while sampling it: the
    response, the sent sha256, seconds, peak RSS (KiB) of nginx's workers and
    of the server, and whether nginx wrote a temporary body file."""
    boundary = "proxy-test-boundary-4f1e"
    head = common.part_head(common.Part(filename=name), boundary)
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + size + len(tail)
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    peaks = {"nginx": 0, "server": 0}
    temp_seen = False
    sending = True

    def sample() -> None:
        nonlocal temp_seen
        while sending:
            peaks["nginx"] = max(peaks["nginx"], sum(rss_kib(pid) for pid in nginx.workers()))
            peaks["server"] = max(peaks["server"], rss_kib(server.pid))
            temp_seen = temp_seen or nginx.holds_body_file()
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.monotonic()
    try:
        with Conn(nginx.port, timeout=120) as conn:
            conn.send(common.upload_head(nginx.port, length, boundary), head)
            sent = 0
            index = 0
            while sent < size:
                # Every MiB differs (its index up front): a reordered or repeated block changes the sum.
                block[:8] = index.to_bytes(8, "little")
                piece = block[:min(MiB, size - sent)]
                digest.update(piece)
                conn.send(piece)
                sent += len(piece)
                index += 1
            conn.send(tail)
            response = conn.read_response(300)
    finally:
        sending = False
        sampler.join()
    return response, digest.hexdigest(), time.monotonic() - start, peaks, temp_seen


@pytest.mark.slow
def test_large_upload_streams_through(server, nginx, options):
    upstream = server(["--max-upload-size", f"{SERVER_LIMIT_MIB}MiB"])
    front = proxy(nginx, upstream.port).start()
    response = common.request(front.port, "GET", "/healthz", timeout=10)
    assert response.status == 200, response.body[:200]

    size_mib = options.proxy_size_mib
    size = size_mib * MiB
    name = "proxied.bin"
    idle_nginx = sum(rss_kib(pid) for pid in front.workers())
    response, sent_sha, seconds, peaks, temp_seen = stream_upload(front, upstream, size, name)
    print(f"{size_mib} MiB in {seconds:.1f} s ({size_mib / seconds:.0f} MiB/s) through nginx; "
          f"server peak RSS {peaks['server'] / 1024:.1f} MiB, nginx {peaks['nginx'] / 1024:.1f} MiB "
          f"(idle {idle_nginx / 1024:.1f} MiB)")
    assert response.status == 200, response.body[:300]
    assert response.json().get("files") == [{"name": name, "size": size}]
    stored = os.path.join(upstream.upload_dir, name)
    assert common.file_sha256(stored) == sent_sha
    assert 0 < peaks["nginx"] < NGINX_RSS_LIMIT_MIB * 1024, f"nginx's workers peaked at {peaks['nginx']} KiB"
    assert not temp_seen, "nginx wrote a temporary file for the body"


# --------------------------------------------------------------------------- the 413 through nginx, attacked

@pytest.fixture
def limited(server, nginx, workspace):
    """The server with a 1 MiB limit behind the tested file, and a 64 MiB file to send."""
    upstream = server(["--max-upload-size", ATTACK_LIMIT])
    front = proxy(nginx, upstream.port).start()
    big = workspace.path("64mib.bin")
    with open(big, "wb") as f:
        f.truncate(ATTACK_SIZE)
    return upstream, front, big


def with_curl(front: common.Nginx, path: str, number: int) -> tuple[int | None, bytes, str]:
    """curl -T: a PUT of the 64 MiB file, as a user would send it."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60",
                           "-T", path, f"http://{HOST}:{front.port}/upload/attack-{number}.bin"],
                          capture_output=True, check=False)
    body, _, code = done.stdout.rpartition(b"\n")
    return (int(code) if code.strip().isdigit() else None), body, done.stderr.decode(errors="replace").strip()


def streamed(front: common.Nginx, number: int, chunked: bool) -> tuple[int | None, bytes, str]:
    """A multipart POST streamed at full speed (Content-Length or chunked) while the
    answer is read on another thread, as a browser does."""
    boundary = "proxy-attack-boundary"
    head = common.part_head(common.Part(filename=f"attack-{number}.bin"), boundary)
    tail = f"\r\n--{boundary}--\r\n".encode()
    block = b"z" * MiB
    sock = socket.create_connection((HOST, front.port), timeout=30)
    answer: dict = {}

    def read() -> None:
        conn = Conn.__new__(Conn)
        conn.sock, conn.buffer, conn.timeout = sock, b"", 30
        try:
            answer["response"] = conn.read_response(30)
        except (OSError, Closed, ValueError) as error:
            answer["error"] = f"{type(error).__name__}: {error}"

    reader = threading.Thread(target=read)
    reader.start()
    error = ""
    try:
        if chunked:
            sock.sendall(common.upload_head(front.port, None, boundary))
            for piece in [head] + [block] * (ATTACK_SIZE // MiB) + [tail]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(common.upload_head(front.port, len(head) + ATTACK_SIZE + len(tail), boundary) + head)
            for _ in range(ATTACK_SIZE // MiB):
                sock.sendall(block)
            sock.sendall(tail)
    except OSError as sending:  # the answer may have come and the connection gone: read it
        error = f"sending stopped: {type(sending).__name__}"
    reader.join(40)
    with contextlib.suppress(OSError):
        sock.close()
    response = answer.get("response")
    if response is None:
        return None, b"", f"{answer.get('error', 'no answer')}; {error}"
    return response.status, response.body, error


@pytest.mark.parametrize("client", ["curl", "content-length", "chunked"])
def test_413_through_nginx(limited, options, client):
    """Every one of the rounds must be the server's JSON 413 (its error text, not
    nginx's 502/503). Counts what came instead."""
    upstream, front, big = limited
    rounds = options.proxy_rounds
    outcomes: dict[str, int] = {}
    bad: list[str] = []
    for number in range(rounds):
        if client == "curl":
            status, body, detail = with_curl(front, big, number)
        else:
            status, body, detail = streamed(front, number, chunked=client == "chunked")
        text = body.decode("utf-8", "replace").strip()
        ours = status == 413 and text.startswith("{") and "error" in text and UNAVAILABLE not in text
        key = "413 JSON" if ours else f"{status} {text[:60]}" if status else f"no answer ({detail[:60]})"
        outcomes[key] = outcomes.get(key, 0) + 1
        if not ours:
            bad.append(f"round {number}: {status} {text[:120]!r} {detail}")
    print(f"{client}: {outcomes}")
    assert not bad, (f"{len(bad)} of {rounds} rounds ({ATTACK_SIZE // MiB} MiB over {ATTACK_LIMIT} through "
                     f"nginx, {client}) were not the server's JSON 413: {outcomes}\n"
                     + "\n".join(bad[:5]) + f"\nnginx errors: {front.errors()[-800:]}")


# --------------------------------------------------------------------------- many clients behind one proxy

def test_concurrent_puts_through_nginx_with_default_flags(server, nginx):
    """200 PUTs at once through nginx: every upstream connection comes from nginx's
    one address, and the server's default connection policy must not refuse them
    (a fixed per-address cap turned 72 of 200 into 502)."""
    upstream = server()
    front = proxy(nginx, upstream.port).start()
    count = 200
    bodies = [os.urandom(16 * 1024 + number) for number in range(count)]
    sockets = []
    for number, body in enumerate(bodies):
        sock = socket.create_connection((HOST, front.port), timeout=30)
        sock.sendall(f"PUT /upload/put-{number}.bin HTTP/1.1\r\nHost: {HOST}:{front.port}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[:1024])
        sockets.append(sock)
    statuses: dict[int | None, int] = {}
    for number, sock in enumerate(sockets):
        sock.sendall(bodies[number][1024:])
    for sock in sockets:
        conn = Conn.__new__(Conn)
        conn.sock, conn.buffer, conn.timeout = sock, b"", 30
        try:
            status = conn.read_response(30).status
        except (OSError, Closed, ValueError):
            status = None
        statuses[status] = statuses.get(status, 0) + 1
        sock.close()
    assert statuses == {201: count}, f"status: count {statuses}; nginx errors: {front.errors()[-600:]}"
    for number, body in enumerate(bodies):
        with open(os.path.join(upstream.upload_dir, f"put-{number}.bin"), "rb") as f:
            assert f.read() == body, f"put-{number}.bin"
