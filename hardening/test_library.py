"""Regression tests for our libmicrohttpd patches (patches/libmicrohttpd).

Each check fails against the unpatched library:
  - nested boundary leak (0001): five bodies that make the post-processor re-declare a
    32,000-byte nested boundary 300 times each leave at most 2 MiB behind;
  - idle keep-alive memory (0002): 3,000 connections, each idle after one small
    upload, cost at most 32 MiB above the idle server;
  - aborted upload released (0003): a client whose last bytes and FIN arrive together
    has its connection (and its staged file) released within 1 s, as client_aborted;
  - library answers (0004-0006): a 200 KB header line, a bad chunk-size line, an
    absurd Content-Length and Transfer-Encoding: identity are answered within 1 s with
    the right status, one status line and a JSON body; the access log records each
    with that status (the application's side of the error-response hook);
  - lingering close (0009): a client still sending the body after an early answer
    (the server's 413 for Content-Length, its 401, a library 400) reads the whole
    answer and then a clean end of stream, not a reset.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

from common import (
    HOST,
    REPORT,
    Conn,
    KiB,
    MiB,
    Part,
    Server,
    Workspace,
    fmt_mib,
    log,
    multipart_pieces,
    raise_nofile,
    upload_head,
    upload_request,
)

LEAK_BOUNDARY = b"n" * 32_000
LEAK_CYCLES = 300
LEAK_REQUESTS = 5
LEAK_SLACK_MIB = 2
IDLE_CONNECTIONS = 3000
IDLE_SLACK_MIB = 32
ABORTED_UPLOADS = 5
ANSWER_SECONDS = 1.0


def test_nested_boundary_leak(binary, workspace):
    nested_boundary_leak(binary, workspace)


def test_idle_keep_alive_memory(binary, workspace):
    idle_keep_alive_memory(binary, workspace)


def test_aborted_upload_released(binary, workspace):
    aborted_upload_released(binary, workspace)


def test_library_answers(binary, workspace):
    library_answers(binary, workspace)


def test_lingering_close(binary, workspace):
    lingering_close(binary, workspace)


def start(binary: str, ws: Workspace, name: str, args: list[str] | None = None) -> Server:
    return Server(binary, ws.path(f"{name}-up"), args or [], name=name).start()


# --------------------------------------------------------------------------- 0001

def nested_body(outer: bytes, redeclare: bool) -> bytes:
    """An outer part of type multipart/mixed whose nested section's last part declares
    multipart/mixed with the same boundary again (when `redeclare`); the next outer
    part has no headers, so the post-processor takes the stale declaration: one cycle."""
    nested = LEAK_BOUNDARY
    declaration = b"Content-Type: multipart/mixed; boundary=" + nested + b"\r\n"
    section = b"--" + nested + b"\r\n" + (declaration if redeclare else b"") + b"\r\nx\r\n--" + nested + b"--\r\n"
    first = b"--" + outer + b'\r\nContent-Disposition: form-data; name="x"\r\n' + declaration + b"\r\n" + section
    cycle = b"--" + outer + b"\r\n\r\n" + section
    return first + cycle * (LEAK_CYCLES - 1) + b"--" + outer + b"--\r\n"


def nested_boundary_leak(binary: str, ws: Workspace) -> None:
    outer = b"library-outer"
    server = start(binary, ws, "leak", ["--max-upload-size", "64MiB"])
    try:
        def send(body: bytes) -> int:
            with Conn(server.port, timeout=30) as conn:
                conn.send(upload_head(server.port, len(body), outer.decode()), body)
                return conn.read_response().status

        # The same parse without the re-declaration first: what a request costs for good
        # (arenas, buffers) is in the baseline.
        warm = send(nested_body(outer, redeclare=False))
        before = server.rss_kib()
        body = nested_body(outer, redeclare=True)
        statuses = [send(body) for _ in range(LEAK_REQUESTS)]
        after = server.rss_kib()
        grown = (after - before) / 1024
        REPORT.figure("nested boundary leak", f"{fmt_mib(before)} -> {fmt_mib(after)} after {LEAK_REQUESTS} bodies "
                                              f"of {len(body) / MiB:.1f} MiB")
        REPORT.check(f"nested boundary leak: {LEAK_REQUESTS} bodies leave at most {LEAK_SLACK_MIB} MiB",
                     grown <= LEAK_SLACK_MIB and server.alive(),
                     f"RSS grew {grown:.1f} MiB; answers {warm} then {statuses}")
    finally:
        server.stop()


# --------------------------------------------------------------------------- 0002

def idle_keep_alive_memory(binary: str, ws: Workspace) -> None:
    limit = raise_nofile()
    if limit < IDLE_CONNECTIONS + 100:
        REPORT.check("idle keep-alive memory: client can open enough descriptors", False,
                     f"RLIMIT_NOFILE {limit} < {IDLE_CONNECTIONS + 100}")
        return
    # Every client is 127.0.0.1, as behind a reverse proxy: no per-address limit.
    server = start(binary, ws, "idle", ["--connection-limit", str(IDLE_CONNECTIONS + 100),
                                        "--connections-per-address", "0"])
    conns: list[Conn] = []
    try:
        def upload_and_stay(index: int) -> int:
            conn = Conn(server.port, timeout=10)
            conns.append(conn)
            conn.send(*upload_request(server.port, [Part("file", f"idle-{index}.bin", b"i" * KiB)]))
            return conn.read_response().status

        upload_and_stay(-1)
        conns.pop().close()
        before = server.rss_kib()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(upload_and_stay, range(IDLE_CONNECTIONS)))
        time.sleep(0.2)
        after = server.rss_kib()
        held = server.socket_count() - 1  # the listening socket
        grown = (after - before) / 1024
        REPORT.figure("idle keep-alive memory", f"{fmt_mib(before)} idle -> {fmt_mib(after)} with "
                                                f"{held} idle keep-alive connections")
        ok_answers = statuses.count(200)
        REPORT.check(f"idle keep-alive memory: {IDLE_CONNECTIONS} connections after one upload each cost at most "
                     f"{IDLE_SLACK_MIB} MiB",
                     grown <= IDLE_SLACK_MIB and ok_answers == IDLE_CONNECTIONS and held >= IDLE_CONNECTIONS,
                     f"RSS grew {grown:.1f} MiB; {ok_answers} of {IDLE_CONNECTIONS} answered 200, {held} held")
    finally:
        for conn in conns:
            conn.close()
        server.stop()


# --------------------------------------------------------------------------- 0003

def aborted_upload_released(binary: str, ws: Workspace) -> None:
    server = start(binary, ws, "abort")
    try:
        base_sockets = server.socket_count()
        boundary = "library-abort"
        body = b"".join(bytes(p) for p in multipart_pieces([Part("file", "cut.bin", b"c" * 100_000)], boundary))
        seconds = []
        for _ in range(ABORTED_UPLOADS):
            sock = socket.create_connection((HOST, server.port), timeout=5)
            sock.sendall(upload_head(server.port, len(body), boundary) + body[:50_000])
            time.sleep(0.2)  # the server has read that and waits for the rest of the body
            # Corked, the last bytes wait for the FIN and leave in one segment with it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            sock.sendall(body[50_000:60_000])
            sock.shutdown(socket.SHUT_WR)
            sock.close()
            t0 = time.monotonic()
            while ((server.socket_count() > base_sockets or server.staged_files())
                   and time.monotonic() - t0 < ANSWER_SECONDS + 0.5):
                time.sleep(0.02)
            seconds.append(time.monotonic() - t0)
        time.sleep(0.1)
        reasons = [e.get("reason") for e in server.events("upload_abandoned")]
        REPORT.figure("aborted upload released", "after " + ", ".join(f"{s:.2f}" for s in seconds) + " s")
        REPORT.check(f"aborted upload released: last bytes with the FIN, connection and staged file gone within "
                     f"{ANSWER_SECONDS:g} s", max(seconds) <= ANSWER_SECONDS,
                     "seconds " + ", ".join(f"{s:.2f}" for s in seconds))
        REPORT.check("aborted upload released: logged as client_aborted",
                     reasons.count("client_aborted") == ABORTED_UPLOADS, f"upload_abandoned reasons {reasons}")
    finally:
        server.stop()


# --------------------------------------------------------------------------- 0004-0006

def exchange(port: int, data: bytes, timeout: float) -> tuple[bytes, float]:
    """Sends `data` (the server may stop reading early) and reads until the server closes."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    t0 = time.monotonic()
    received = b""
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while time.monotonic() - t0 < timeout:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - t0)))
            chunk = sock.recv(64 * KiB)
            if not chunk:
                break
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return received, time.monotonic() - t0


def answer_problems(raw: bytes, status: int) -> list[str]:
    """What is wrong with a complete answer `raw` that should be `status` with a JSON error."""
    if b"\r\n\r\n" not in raw:
        return [f"no complete answer ({len(raw)} bytes: {raw[:60]!r})"]
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    problems = []
    status_lines = sum(1 for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1."))
    if status_lines != 1:
        problems.append(f"{status_lines} status lines")
    if not lines[0].startswith(f"HTTP/1.1 {status} "):
        problems.append(f"status line {lines[0]!r}")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    if headers.get("content-type") != "application/json":
        problems.append(f"Content-Type {headers.get('content-type')!r}")
    length = int(headers.get("content-length", "-1"))
    try:
        value = json.loads(body[:length] if length >= 0 else body)
        if not (isinstance(value, dict) and isinstance(value.get("error"), str) and value["error"]):
            problems.append(f"body {body[:80]!r} is not {{\"error\": \"...\"}}")
    except ValueError:
        problems.append(f"body {body[:80]!r} is not JSON")
    return problems


def library_answers(binary: str, ws: Workspace) -> None:
    server = start(binary, ws, "answers")
    try:
        port = server.port
        boundary = "library-answers"
        head = (f"POST /upload HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n")
        body = b"".join(bytes(p) for p in multipart_pieces([Part("file", "te.bin", b"identity")], boundary))
        cases = [
            ("a 200 KB header line", 431, (head + "X-Large: " + "a" * 200_000 + "\r\n\r\n").encode()),
            ("a bad chunk-size line", 400, (head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n").encode()),
            ("an absurd Content-Length", 413, (head + "Content-Length: 99999999999999999999999\r\n\r\n").encode()),
            ("Transfer-Encoding: identity", 501,
             (head + "Transfer-Encoding: identity\r\n\r\n").encode() + body),
        ]
        for name, status, data in cases:
            logged_before = len(server.access_log())
            raw, seconds = exchange(port, data, ANSWER_SECONDS + 2)
            problems = answer_problems(raw, status)
            if seconds > ANSWER_SECONDS:
                problems.append(f"answered and closed after {seconds:.2f} s")
            REPORT.check(f"library answers {name}: {status}, JSON, one status line, within {ANSWER_SECONDS:g} s",
                         not problems, "; ".join(problems))
            deadline = time.monotonic() + 1
            logged = server.access_log()[logged_before:]
            while not logged and time.monotonic() < deadline:
                time.sleep(0.02)
                logged = server.access_log()[logged_before:]
            REPORT.check(f"library answers {name}: access log records status {status}",
                         [entry.get("status") for entry in logged] == [status],
                         f"access log lines {logged}")
        log(f"{len(cases)} requests the library answers itself; server alive: {server.alive()}")
    finally:
        server.stop()


# --------------------------------------------------------------------------- 0009

def answered_then_sent(port: int, head: bytes) -> tuple[bytes, str]:
    """Sends `head` and 64 KiB of body, then 64 KiB more twice, 0.3 s apart (the
    server has answered and let go of the connection by then), as a peer streaming
    a body does; then ends its side and reads. Returns what was read and how the
    exchange ended: "end", or the error of a send or read (a reset: nginx fails
    there and answers 502 instead of relaying the answer)."""
    piece = b"z" * (64 * KiB)
    received = b""
    with socket.create_connection((HOST, port), timeout=3) as sock:
        try:
            sock.sendall(head + piece)
            for _ in range(2):
                time.sleep(0.3)
                sock.sendall(piece)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(64 * KiB):
                received += chunk
            return received, "end"
        except OSError as error:
            return received, type(error).__name__


def lingering_close(binary: str, ws: Workspace) -> None:
    token = "library-linger-token"
    server = start(binary, ws, "linger", ["--max-upload-size", "1MiB", "--token", token])
    try:
        port = server.port
        head = f"PUT /upload/linger.bin HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: {64 * MiB}\r\n"
        cases = [
            ("the server's 413 for a Content-Length over --max-upload-size", 413,
             head + f"Authorization: Bearer {token}\r\n\r\n"),
            ("the server's 401", 401, head + "\r\n"),
            ("a library 400 for a bad chunk-size line", 400,
             f"PUT /upload/linger.bin HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
             "Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ]
        for name, status, request in cases:
            raw, ending = answered_then_sent(port, request.encode())
            problems = answer_problems(raw, status)
            if ending != "end":
                problems.append(f"the stream ended with {ending}")
            REPORT.check(f"lingering close: {name} reaches a client still sending, then a clean end",
                         not problems, "; ".join(problems))
    finally:
        server.stop()
