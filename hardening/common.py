"""Shared pieces of the pytest suites (hardening/, browser/, proxy/): the checks of a
test, the server under test, nginx, a small HTTP/1.1 client over raw sockets,
multipart bodies, tus requests, /proc readings and headless chromium. The fixtures
built on them are in the top-level conftest.py.

Python 3.11 standard library only (Browser imports selenium when one starts). Every
wait has a deadline; every server is started on 127.0.0.1 with --port 0 (a restart may
keep its port) and killed (by its own pid) on the way out.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Sequence

HOST = "127.0.0.1"
TEMP_PREFIX = ".upload-"
MiB = 1 << 20
KiB = 1 << 10


# --------------------------------------------------------------------------- checks

class KnownLimitation(UserWarning):
    """A known limitation of the server or libmicrohttpd: shown in pytest's warnings
    summary, never a failure (hardening/README.md lists them)."""


class Report:
    """The checks of the running test. Each check prints one line (pytest shows a test's
    output when it fails); the conftest resets this object before each test and fails the
    test after it when a check failed, or skips it when it only skipped. Figures are shown
    in pytest's terminal summary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.figures: dict[str, str] = {}
        self.reset("-")

    def reset(self, suite: str) -> None:
        with self._lock:
            self.suite = suite
            self.passed = 0
            self.failures: list[str] = []
            self.skips: list[str] = []

    @property
    def failed(self) -> int:
        return len(self.failures)

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        label = f"{self.suite}: {name}"
        with self._lock:
            if ok:
                self.passed += 1
            else:
                self.failures.append(label + (f" -- {detail}" if detail else ""))
        self._print(f"{'PASS' if ok else 'FAIL'}  {label}" + (f" -- {detail}" if detail else ""))
        return ok

    def skip(self, name: str, reason: str) -> None:
        with self._lock:
            self.skips.append(f"{name}: {reason}")
        self._print(f"SKIP  {self.suite}: {name} -- {reason}")

    def warn(self, name: str, detail: str) -> None:
        """A known limitation: shown, does not fail the test."""
        warnings.warn(KnownLimitation(f"{self.suite}: {name} ({detail})"), stacklevel=2)
        self._print(f"WARN  {self.suite}: {name} -- {detail}")

    def info(self, text: str) -> None:
        self._print(f"      {text}")

    def figure(self, key: str, value: str) -> None:
        with self._lock:
            self.figures[key] = value
        self._print(f"      figure {key}: {value}")


REPORT = Report()


def log(text: str) -> None:
    REPORT.info(text)


# --------------------------------------------------------------------------- processes

_LIVE: dict[int, subprocess.Popen] = {}
# Every server started, in order: the `server` fixture stops and checks the ones a test left.
STARTED: list[Server] = []


def _kill_live() -> None:
    for pid, process in list(_LIVE.items()):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(timeout=5)


atexit.register(_kill_live)


def raise_nofile(wanted: int | None = None) -> int:
    """Raises this process' soft RLIMIT_NOFILE (to the hard limit, or `wanted`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(hard, max(soft, wanted))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """One upload-server process with its own log files, on a free loopback port."""

    def __init__(self, binary: str, upload_dir: str, args: Sequence[str] = (),
                 env: dict[str, str] | None = None, workdir: str | None = None,
                 name: str = "server") -> None:
        self.binary = binary
        self.upload_dir = upload_dir
        self.args = list(args)
        self.workdir = workdir or os.path.dirname(os.path.abspath(upload_dir))
        self.log_path = os.path.join(self.workdir, f"{name}.stdout.log")
        self.err_path = os.path.join(self.workdir, f"{name}.stderr.log")
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.host = HOST
        self.port = 0
        self.exit_code: int | None = None

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self, timeout: float = 15, port: int = 0) -> Server:
        """Starts the binary on `port` (0: a free one; a restart may ask for its old one)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        # Sanitizer settings reach a sanitized binary.
        for key in ("ASAN_OPTIONS", "TSAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(self.env)
        argv = [self.binary, "--host", HOST, "--port", str(port), "--upload-dir", self.upload_dir] + self.args
        # A restart appends to the same log: its own `started` event is the one after these.
        earlier = len(self.events("started"))
        out = open(self.log_path, "ab")
        err = open(self.err_path, "ab")
        self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                        cwd=self.workdir, env=env, close_fds=True)
        out.close()
        err.close()
        _LIVE[self.process.pid] = self.process
        STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events("started")[earlier:]:
                self.port = int(event["port"])
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} at start: {self.stderr()[-2000:]}")
            time.sleep(0.02)
        raise RuntimeError(f"server did not log 'started' within {timeout}s: {self.stderr()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr(self) -> str:
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.log_lines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if not isinstance(value, dict):
                continue
            if name is None or value.get("event") == name:
                out.append(value)
        return out

    def access_log(self) -> list[dict]:
        return [e for e in self.events() if "method" in e and "event" not in e]

    # ---- /proc readings

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def socket_count(self) -> int:
        count = 0
        base = f"/proc/{self.pid}/fd"
        for name in os.listdir(base):
            with contextlib.suppress(OSError):
                if os.readlink(f"{base}/{name}").startswith("socket:"):
                    count += 1
        return count

    def fd_targets(self) -> list[str]:
        base = f"/proc/{self.pid}/fd"
        out = []
        for name in os.listdir(base):
            with contextlib.suppress(OSError):
                out.append(os.readlink(f"{base}/{name}"))
        return sorted(out)

    def staged_files(self) -> list[str]:
        """Descriptors the server holds on files being received: unnamed (O_TMPFILE,
        shown as "(deleted)") or named temporary files in the upload directory."""
        directory = os.path.realpath(self.upload_dir)
        out = []
        for target in self.fd_targets():
            if target.startswith(directory + "/") and (target.endswith("(deleted)") or TEMP_PREFIX in target):
                out.append(target)
        return out

    def staging_mode(self) -> str:
        """'unnamed' or 'named', as the started event says."""
        for event in self.events("started"):
            return "unnamed" if "O_TMPFILE" in str(event.get("staging", "")) else "named"
        return "?"

    def status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return -1

    def rss_kib(self) -> int:
        return self.status_kib("VmRSS")

    def wait_fds(self, target: int, timeout: float) -> tuple[bool, int, float]:
        """Waits until the descriptor count is at most `target`; (ok, last count, seconds)."""
        start = time.monotonic()
        count = self.fd_count()
        while count > target and time.monotonic() - start < timeout:
            time.sleep(0.05)
            count = self.fd_count()
        return count <= target, count, time.monotonic() - start

    def metric(self, name: str, timeout: float = 3) -> float | None:
        try:
            response = request(self.port, "GET", "/metrics", timeout=timeout)
        except OSError:
            return None
        for line in response.body.decode("utf-8", "replace").splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                with contextlib.suppress(ValueError):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def wait_in_flight_zero(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.metric("upload_server_uploads_in_flight") == 0:
                return True
            time.sleep(0.1)
        return False

    # ---- lifecycle

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None
        try:
            self.exit_code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        _LIVE.pop(self.process.pid, None)
        return self.exit_code

    def kill(self) -> int | None:
        """SIGKILL (a crash: nothing is cleaned up); returns the exit code."""
        self.signal(signal.SIGKILL)
        return self.wait(10)

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            code = self.wait(timeout)
            if code is None:
                self.signal(signal.SIGKILL)
                self.wait(5)
                return None
            return code
        self.exit_code = self.process.returncode
        _LIVE.pop(self.process.pid, None)
        return self.exit_code

    def crash_text(self) -> str:
        """Why the process died, if it did."""
        if self.process is None or self.process.poll() is None:
            return ""
        code = self.process.returncode
        what = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exit {code}"
        return f"{what}; stderr tail: {self.stderr()[-1500:]!r}"


# --------------------------------------------------------------------------- nginx

NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    log_format upstream_status '$status $upstream_status $request_length';
    access_log {prefix}/access.log upstream_status;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{http}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Nginx:
    """Debian's nginx in the foreground (daemon off) with its own prefix, temp folders,
    logs and pid file; `http` is the content of its http block (it may `include` files
    written into the prefix). `port` is a free loopback port for its `listen`."""

    def __init__(self, prefix: str, http: str = "", connections: int = 1024) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        os.makedirs(os.path.join(prefix, "client_body"), exist_ok=True)
        self.conf = os.path.join(prefix, "nginx.conf")
        self.http = http
        self.connections = connections

    def write(self, name: str, text: str) -> str:
        """A file in the prefix (for an `include`)."""
        path = os.path.join(self.prefix, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def argv(self, *extra: str) -> list[str]:
        user = "user root;" if os.geteuid() == 0 else ""
        with open(self.conf, "w") as f:
            f.write(NGINX_MAIN.format(prefix=self.prefix, http=self.http, user=user, connections=self.connections))
        return ["nginx", "-e", os.path.join(self.prefix, "error.log"), "-c", self.conf, "-p", self.prefix + "/", *extra]

    def config_test(self) -> tuple[bool, str]:
        result = subprocess.run(self.argv("-t"), capture_output=True, text=True)
        return result.returncode == 0, (result.stdout + result.stderr).strip()

    def start(self, timeout: float = 10) -> Nginx:
        err = open(os.path.join(self.prefix, "stderr.log"), "ab")
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        _LIVE[self.process.pid] = self.process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self.errors()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=1):
                return self
            time.sleep(0.02)
        raise RuntimeError(f"nginx did not listen within {timeout} s: {self.errors()}")

    def workers(self) -> list[int]:
        assert self.process is not None
        pids = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        pids.append(int(name))
        return pids

    def holds_body_file(self) -> bool:
        """A worker has a request body file open (nginx unlinks it at once, so only
        the descriptor shows it)."""
        folder = os.path.join(self.prefix, "client_body") + "/"
        for pid in self.workers():
            with contextlib.suppress(OSError):
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder):
                            return True
        return False

    def _lines(self, name: str) -> list[str]:
        with contextlib.suppress(OSError), open(os.path.join(self.prefix, name), errors="replace") as f:
            return f.read().splitlines()
        return []

    def errors(self) -> str:
        return "\n".join(self._lines("error.log"))[-1500:]

    def access_log(self) -> list[str]:
        return self._lines("access.log")

    def error_log(self) -> list[str]:
        return self._lines("error.log")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # nginx: fast shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None:
            _LIVE.pop(self.process.pid, None)


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- HTTP

@dataclasses.dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Closed(Exception):
    """The server closed the connection before a complete response."""


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), (parts[2] if len(parts) > 2 else ""), headers


class Conn:
    """A blocking HTTP/1.1 connection that can be kept alive."""

    def __init__(self, port: int, timeout: float = 10, host: str = HOST) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.timeout = timeout

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def reset(self) -> None:
        """Closes with RST (SO_LINGER 0)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, *pieces) -> None:
        for piece in pieces:
            self.sock.sendall(piece)

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("response deadline")
        self.sock.settimeout(remaining)
        data = self.sock.recv(256 * KiB)
        if not data:
            return False
        self.buffer += data
        return True

    def read_response(self, timeout: float | None = None, skip_informational: bool = True,
                      to_head: bool = False) -> Response:
        """The next response; `to_head`: the answer to a HEAD request (no body, whatever its headers say)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill(deadline):
                    raise Closed(f"closed after {len(self.buffer)} bytes of response head")
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status, reason, headers = _parse_head(head)
            if 100 <= status < 200 and skip_informational:
                continue
            break
        if to_head or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(self.buffer) < length:
                if not self._fill(deadline):
                    raise Closed("closed inside the response body")
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buffer:
                    if not self._fill(deadline):
                        raise Closed("closed inside a chunked response")
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                while len(self.buffer) < size + 2:
                    if not self._fill(deadline):
                        raise Closed("closed inside a chunk")
                body += self.buffer[:size]
                self.buffer = self.buffer[size + 2:]
                if size == 0:
                    break
        else:
            while self._fill(deadline):
                pass
            body, self.buffer = self.buffer, b""
        return Response(status, reason, headers, body, head)

    def wait_closed(self, timeout: float) -> tuple[str, float]:
        """Reads until EOF/RST; returns ('eof'|'reset'|'timeout'|'data', seconds)."""
        start = time.monotonic()
        deadline = start + timeout
        got_data = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ("data" if got_data else "timeout"), time.monotonic() - start
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return ("data" if got_data else "timeout"), time.monotonic() - start
            except ConnectionResetError:
                return "reset", time.monotonic() - start
            if not data:
                return "eof", time.monotonic() - start
            got_data = True


def request_head(port: int, method: str, path: str, headers: dict[str, str] | None = None,
                 length: int | None = None, host: str = HOST) -> bytes:
    """A request's head; `length` is its Content-Length (None: no body)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    for key, value in (headers or {}).items():
        head += f"{key}: {value}\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode("latin-1")


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes = b"", timeout: float = 10, host: str = HOST) -> Response:
    with Conn(port, timeout=timeout, host=host) as conn:
        length = len(body) if body or method in ("POST", "PUT") else None
        conn.send(request_head(port, method, path, headers, length, host), body)
        return conn.read_response(timeout, to_head=method == "HEAD")


def healthz(port: int, timeout: float = 1.0) -> tuple[bool, float, str]:
    start = time.monotonic()
    try:
        response = request(port, "GET", "/healthz", timeout=timeout)
        return response.status == 200, time.monotonic() - start, str(response.status)
    except (OSError, Closed, ValueError) as error:
        return False, time.monotonic() - start, f"{type(error).__name__}: {error}"


# --------------------------------------------------------------------------- tus

TUS = {"Tus-Resumable": "1.0.0"}
TUS_PREFIX = ".upload-tus-"   # an incomplete upload: .upload-tus-<id> (its bytes) and .upload-tus-<id>.info


def tus_create(port: int, length: int, name: str, host: str = HOST, timeout: float = 10) -> tuple[Response, str]:
    """POST /tus/ for an upload of `length` bytes stored as `name`: (the answer, the
    path of its Location, "" without one)."""
    response = request(port, "POST", "/tus/", {**TUS, "Upload-Length": str(length),
                                               "Upload-Metadata": "filename " + base64.b64encode(name.encode()).decode()},
                       timeout=timeout, host=host)
    location = response.headers.get("location", "")
    return response, "/" + location.split("/", 3)[3] if location.count("/") >= 3 else ""


def tus_patch_head(port: int, path: str, offset: int, length: int, host: str = HOST) -> bytes:
    """The head of a PATCH of `length` bytes at `offset` (for a body sent piece by piece)."""
    return request_head(port, "PATCH", path, {**TUS, "Upload-Offset": str(offset),
                                              "Content-Type": "application/offset+octet-stream"}, length, host)


def tus_patch(port: int, path: str, offset: int, data: bytes, host: str = HOST, timeout: float = 30) -> Response:
    with Conn(port, timeout=timeout, host=host) as conn:
        conn.send(tus_patch_head(port, path, offset, len(data), host), data)
        return conn.read_response(timeout)


def tus_offset(response: Response) -> int | None:
    value = response.headers.get("upload-offset")
    return int(value) if value is not None and value.isdigit() else None


def tus_partials(directory: str) -> list[str]:
    """The data files of the incomplete uploads in `directory` (not their .info)."""
    return sorted(n for n in os.listdir(directory) if n.startswith(TUS_PREFIX) and not n.endswith(".info"))


# --------------------------------------------------------------------------- multipart

@dataclasses.dataclass
class Part:
    name: str = "file"
    filename: str | None = "file.bin"
    data: bytes | memoryview = b""
    content_type: str | None = "application/octet-stream"


def part_head(part: Part, boundary: str) -> bytes:
    disposition = f'form-data; name="{part.name}"'
    if part.filename is not None:
        disposition += f'; filename="{part.filename}"'
    text = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if part.content_type:
        text += f"Content-Type: {part.content_type}\r\n"
    return (text + "\r\n").encode("utf-8")


def multipart_pieces(parts: Sequence[Part], boundary: str) -> list[bytes | memoryview]:
    """The body as a list of pieces (data is not copied)."""
    pieces: list[bytes | memoryview] = []
    for index, part in enumerate(parts):
        head = part_head(part, boundary)
        pieces.append(head if index == 0 else b"\r\n" + head)
        pieces.append(part.data)
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    return pieces


def upload_head(port: int, length: int | None, boundary: str, extra: dict[str, str] | None = None,
                path: str = "/upload") -> bytes:
    text = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    text += f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
    if length is None:
        text += "Transfer-Encoding: chunked\r\n"
    else:
        text += f"Content-Length: {length}\r\n"
    for key, value in (extra or {}).items():
        text += f"{key}: {value}\r\n"
    return (text + "\r\n").encode("latin-1")


def chunked(pieces: Iterable[bytes | memoryview], chunk: int = 64 * KiB) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    for piece in pieces:
        view = memoryview(piece)
        for offset in range(0, len(view), chunk):
            segment = view[offset:offset + chunk]
            out += [b"%x\r\n" % len(segment), segment, b"\r\n"]
    out.append(b"0\r\n\r\n")
    return out


def upload_request(port: int, parts: Sequence[Part], boundary: str = "hardening-boundary-7d1f",
                   use_chunked: bool = False, extra: dict[str, str] | None = None) -> list[bytes | memoryview]:
    body = multipart_pieces(parts, boundary)
    if use_chunked:
        return [upload_head(port, None, boundary, extra)] + chunked(body)
    length = sum(len(p) for p in body)
    return [upload_head(port, length, boundary, extra)] + body


def upload(port: int, parts: Sequence[Part], timeout: float = 30, **kwargs) -> Response:
    with Conn(port, timeout=timeout) as conn:
        try:
            conn.send(*upload_request(port, parts, **kwargs))
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer at once (an error found in the headers) and close
            # without reading the body: its answer is still there to read.
            pass
        return conn.read_response(timeout)


# --------------------------------------------------------------------------- files

def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(MiB)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def stored(directory: str) -> list[str]:
    """The names of the stored files in `directory` (not the reserved `.upload-` names)."""
    return sorted(n for n in os.listdir(directory) if not n.startswith(TEMP_PREFIX))


def temp_files(directory: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX))
    except FileNotFoundError:
        return []


def random_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def make_file(path: str, size: int, rng: random.Random) -> str:
    """A file of `size` random bytes (written 4 MiB at a time); its path."""
    with open(path, "wb") as f:
        left = size
        while left:
            block = min(left, 4 * MiB)
            f.write(rng.randbytes(block))
            left -= block
    return path


def wait_for(condition, timeout: float, step: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether `condition()` came true within `timeout` seconds (exceptions in `ignore` count as false)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return True
        except ignore:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


class Workspace:
    """A fresh temporary root for one suite, removed at the end."""

    def __init__(self, label: str, keep: bool = False) -> None:
        base = os.environ.get("HARDEN_TMP") or tempfile.gettempdir()
        self.root = tempfile.mkdtemp(prefix=f"harden-{label}-", dir=base)
        self.keep = keep
        self.mounts: list[str] = []

    def path(self, *names: str) -> str:
        return os.path.join(self.root, *names)

    def mount_tmpfs(self, name: str, size: str) -> tuple[str | None, str]:
        """A tmpfs of `size` (`8m`, `1g`) on a new folder, unmounted at cleanup:
        (its path, ""), or (None, why not) without root or where mount fails."""
        if os.geteuid() != 0:
            return None, "needs root to mount a tmpfs"
        mount_point = self.path(name)
        os.makedirs(mount_point)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", mount_point],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return None, f"cannot mount a tmpfs here: {result.stderr.strip()}"
        self.mounts.append(mount_point)
        return mount_point, ""

    def cleanup(self) -> None:
        for mount in reversed(self.mounts):
            subprocess.run(["umount", "-l", mount], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not self.keep:
            # Undo a read-only flag or bind mount left by a failed step first.
            subprocess.run(["chattr", "-R", "-i", self.root], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            shutil.rmtree(self.root, ignore_errors=True)


def tree_snapshot(root: str, exclude: str | Sequence[str]) -> set[str]:
    """Every path under `root` except the subtrees `exclude`."""
    out: set[str] = set()
    excluded = {os.path.abspath(p) for p in ([exclude] if isinstance(exclude, str) else exclude)}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.abspath(os.path.join(dirpath, d)) not in excluded]
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def staging_args(staging: str) -> list[str]:
    """Server flags for a staging mode: 'auto' (the default: O_TMPFILE where possible) or 'named'."""
    return [] if staging == "auto" else ["--staging", staging]


def stagings(options, both_default: bool) -> list[str]:
    """The staging modes a suite runs: --staging auto|named|both (both: auto and named
    for the suites that check clean-up, auto for the others)."""
    chosen = getattr(options, "staging", "both")
    if chosen == "both":
        return ["auto", "named"] if both_default else ["auto"]
    return [chosen]


def is_root() -> bool:
    return os.geteuid() == 0


def fmt_mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def exception_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# --------------------------------------------------------------------------- headless chromium

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

# Every file row of the upload page, as the tests read it.
ROWS_JS = """
return Array.from(document.querySelectorAll('#files .file')).map((li) => ({
  name: li.querySelector('.file-name').textContent,
  state: li.dataset.state,
  status: li.querySelector('.file-status').textContent,
  storedName: li.dataset.storedName || null,
  storedSize: li.dataset.storedSize === undefined ? null : Number(li.dataset.storedSize),
  value: li.querySelector('progress').value,
  max: li.querySelector('progress').max,
  cancellable: li.querySelector('button.cancel') !== null,
}));
"""
FINAL = ("done", "error", "cancelled")


def browser_missing() -> str | None:
    """Why no Browser can start here (selenium, chromium or chromedriver missing), or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; scripts/test does for its browser stage)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"no {path} (apt-get install {package})"
    return None


class Browser:
    """One headless chromium (selenium) with the performance log on (every request it
    makes). Loopback only: any other host name fails to resolve, background networking is off."""

    def __init__(self, scripts: bool = True) -> None:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        self._transient = (WebDriverException,)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=900,760", "--no-first-run", "--no-default-browser-check",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-default-apps", "--disable-extensions", "--lang=en-US",
                     # Any host name but loopback fails to resolve: nothing leaves the machine.
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
            options.add_argument(flag)
        if not scripts:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        # Selenium is given both paths; it must not look for (or download) a browser.
        os.environ["SE_OFFLINE"] = "true"
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        self.requests: list[str] = []  # every URL the browser asked for
        self.console: list[str] = []

    def quit(self) -> None:
        self.driver.quit()

    def drain_logs(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        self.console += [entry["message"] for entry in self.driver.get_log("browser")]

    def throttle(self, bytes_per_second: int | None) -> None:
        """Limits the upload rate (None: no limit), as DevTools' network throttling does."""
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second if bytes_per_second else -1})

    def rows(self) -> list[dict]:
        return self.driver.execute_script(ROWS_JS)

    def last_row(self) -> dict:
        rows = self.rows()
        return rows[-1] if rows else {}

    def pick(self, *paths: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, "file-input").send_keys("\n".join(paths))

    def wait_for(self, condition, timeout: float) -> bool:
        """common.wait_for, a tab between two documents (a form was sent) counting as false."""
        return wait_for(condition, timeout, ignore=self._transient)

    def wait_rows(self, first: int, count: int, timeout: float, states=FINAL) -> list[dict]:
        """Rows first..first+count once they all are in one of `states` (or as they are at the deadline)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows()[first:first + count]
            if (len(rows) == count and all(r["state"] in states for r in rows)) or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def wait_row(self, index: int, timeout: float, states=FINAL) -> dict:
        rows = self.wait_rows(index, 1, timeout, states)
        return rows[0] if rows else {}
