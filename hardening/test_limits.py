"""What one client can hold is bounded.

A request stalled after many files keeps neither disk space reserved ahead nor a
block buffer for the files it finished: on a tmpfs of its own, the space in use
stays close to the bytes sent. Files in progress have a descriptor budget taken
from RLIMIT_NOFILE: past it an upload is answered 503 at once (never a hang), and
/healthz and later uploads are served again as soon as the budget is free.
"""

from __future__ import annotations

import os
import time

from common import (
    REPORT,
    Conn,
    KiB,
    MiB,
    Part,
    Server,
    Workspace,
    multipart_pieces,
    request,
    upload,
    upload_head,
)

STALLED_CONNECTIONS = 2
PARTS = 50
PART_SIZE = 1100 * KiB   # past the size where space is reserved ahead of the bytes
BUDGET_NOFILE = 400
RESERVATION_STEP = 8 * MiB  # StagedFile.reservationStep


def test_stalled_parts(binary, options):
    stalled_parts(binary, options)


def test_descriptor_budget(binary, options):
    descriptor_budget(binary, options)


def used_bytes(path: str) -> int:
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def stalled_parts(binary: str, options) -> None:
    ws = Workspace("limits", keep=options.keep)
    mount_point, why = ws.mount_tmpfs("tmpfs", "1g")
    if mount_point is None:
        REPORT.skip("stalled parts", why)
        ws.cleanup()
        return
    server = Server(binary, os.path.join(mount_point, "up"), ["--timeout", "30"], workdir=ws.root, name="stalled")
    connections: list[Conn] = []
    try:
        server.start()
        base_used, base_rss = used_bytes(mount_point), server.rss_kib()
        boundary = "limits-boundary-91c2"
        data = os.urandom(PART_SIZE)
        parts = [Part(filename=f"p{index}.bin", data=data) for index in range(PARTS)]
        body = multipart_pieces(parts, boundary)
        # Everything but the closing boundary: each request stalls with all of
        # its files finished but the last.
        length = sum(len(piece) for piece in body)
        sent = 0
        for _ in range(STALLED_CONNECTIONS):
            conn = Conn(server.port, timeout=30)
            conn.send(upload_head(server.port, length, boundary), *body[:-1])
            sent += length - len(body[-1])
            connections.append(conn)
        deadline = time.monotonic() + 10
        while len(server.staged_files()) < STALLED_CONNECTIONS * PARTS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        held = used_bytes(mount_point) - base_used
        rss_growth = server.rss_kib() - base_rss
        REPORT.figure("stalled parts", f"{STALLED_CONNECTIONS} requests x {PARTS} files of {PART_SIZE // KiB} KiB: "
                      f"{sent / MiB:.0f} MiB sent, {held / MiB:.0f} MiB of disk held, RSS +{rss_growth / 1024:.1f} MiB")
        # Only the file each request is still writing may have space reserved ahead.
        allowed = sent * 1.05 + STALLED_CONNECTIONS * RESERVATION_STEP + 4 * MiB
        REPORT.check("stalled requests hold the staged files' bytes, no reserved space beyond them",
                     held <= allowed, f"{held / MiB:.1f} MiB held for {sent / MiB:.1f} MiB sent (at most {allowed / MiB:.0f})")
        REPORT.check("stalled requests hold no block buffer per finished file",
                     rss_growth < STALLED_CONNECTIONS * 2 * 1024, f"RSS +{rss_growth} KiB")
        for conn in connections:
            conn.reset()
        connections.clear()
        deadline = time.monotonic() + 5
        while server.staged_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        REPORT.check("their space is free once they are gone",
                     not server.staged_files() and used_bytes(mount_point) - base_used < 1 * MiB,
                     f"{(used_bytes(mount_point) - base_used) / MiB:.1f} MiB still used")
    finally:
        for conn in connections:
            conn.close()
        server.stop()
        ws.cleanup()


def descriptor_budget(binary: str, options) -> None:
    """A server whose RLIMIT_NOFILE is small: the connection limit is lowered to
    leave room for files in progress, and requests that would take the last
    descriptors are refused with 503 instead."""
    ws = Workspace("budget", keep=options.keep)
    # prlimit sets the limit and execs the server: the same process.
    wrapper = ws.path("limited-server")
    with open(wrapper, "w") as script:
        script.write(f'#!/bin/sh\nexec prlimit --nofile={BUDGET_NOFILE}:{BUDGET_NOFILE} -- "{binary}" "$@"\n')
    os.chmod(wrapper, 0o755)
    server = Server(wrapper, ws.path("up"), ["--timeout", "30", "--connections-per-address", "0"], name="budget")
    connections: list[Conn] = []
    try:
        server.start()
        started = server.events("started")[0]
        budget = int(started["staged_files_limit"])
        REPORT.check("the connection limit leaves room for files in progress",
                     int(started["connection_limit"]) + budget <= BUDGET_NOFILE and server.events("connection_limit_lowered"),
                     f"connections {started['connection_limit']}, files in progress {budget}, RLIMIT_NOFILE {BUDGET_NOFILE}")
        boundary = "budget-boundary-2b7e"
        per_request = 20
        parts = [Part(filename=f"b{index}.bin", data=b"x" * 100) for index in range(per_request)]
        body = multipart_pieces(parts, boundary)
        length = sum(len(piece) for piece in body)
        requests_to_fill = budget // per_request
        for _ in range(requests_to_fill):
            conn = Conn(server.port, timeout=30)
            conn.send(upload_head(server.port, length, boundary), *body[:-1])
            connections.append(conn)
        deadline = time.monotonic() + 10
        while len(server.staged_files()) < requests_to_fill * per_request and time.monotonic() < deadline:
            time.sleep(0.05)
        started_at = time.monotonic()
        refused = upload(server.port, parts, timeout=5)
        elapsed = time.monotonic() - started_at
        REPORT.check("an upload past the budget is answered 503 with a JSON reason, at once",
                     refused.status == 503 and b'"error"' in refused.body and elapsed < 2,
                     f"{refused.status} in {elapsed:.2f}s with {len(server.staged_files())} files in progress")
        health = request(server.port, "GET", "/healthz")
        REPORT.check("/healthz is served meanwhile", health.status == 200, str(health.status))
        for conn in connections:
            conn.reset()
        connections.clear()
        deadline = time.monotonic() + 5
        while server.staged_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        again = upload(server.port, parts, timeout=10)
        REPORT.check("uploads work again once the stalled requests are gone", again.status == 200, str(again.status))
        REPORT.figure("descriptor budget", f"RLIMIT_NOFILE {BUDGET_NOFILE}: connections {started['connection_limit']}, "
                      f"files in progress {budget}; past it 503 in {elapsed * 1000:.0f} ms")
    finally:
        for conn in connections:
            conn.close()
        server.stop()
        ws.cleanup()
