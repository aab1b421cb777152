"""Faults: a full disk, clients that vanish at every stage, SIGTERM with uploads in
flight, and an upload directory that is removed or made read-only while running.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from common import (
    REPORT,
    Closed,
    Conn,
    KiB,
    MiB,
    Part,
    Server,
    Workspace,
    exception_text,
    file_sha256,
    healthz,
    is_root,
    log,
    multipart_pieces,
    sha256,
    staging_args,
    temp_files,
    upload,
    upload_head,
)

BOTH_STAGINGS = True


def test_disk_full(binary, options, staging):
    disk_full(binary, options, random.Random(options.seed), staging)


def test_vanishing_clients(binary, options, staging):
    vanishing_clients(binary, options, random.Random(options.seed), staging)


def test_sigterm_in_flight(binary, options, staging):
    sigterm_in_flight(binary, options, random.Random(options.seed), staging)


def test_directory_removed(binary, options, staging):
    directory_removed(binary, options, random.Random(options.seed), staging)


@pytest.mark.root("chattr +i")
def test_directory_read_only(binary, options, staging):
    directory_read_only(binary, options, random.Random(options.seed), staging)


@pytest.mark.root("mount")
def test_directory_mounted_over(binary, options, staging):
    directory_mounted_over(binary, options, random.Random(options.seed), staging)


def expected_staging(server: Server, staging: str) -> None:
    """auto stages in unnamed O_TMPFILE files on the filesystems used here (ext4, tmpfs)."""
    mode = server.staging_mode()
    REPORT.check(f"the server stages {'unnamed (O_TMPFILE)' if staging == 'auto' else 'named'} files",
                 mode == ("unnamed" if staging == "auto" else "named"), f"started event says {mode}")


# --------------------------------------------------------------------------- helpers

def json_error(response) -> str | None:
    """The `error` string of a JSON error body, or None."""
    try:
        value = response.json()
    except ValueError:
        return None
    return value.get("error") if isinstance(value, dict) and isinstance(value.get("error"), str) else None


def store(port: int, name: str, data: bytes, chunked: bool = False, timeout: float = 30):
    return upload(port, [Part("file", name, data)], timeout=timeout, use_chunked=chunked)


def server_rx_queue(server_port: int, client_port: int) -> int | None:
    """Bytes the server has not read yet on the connection from `client_port`."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == local and fields[2] == remote:
                    return int(fields[4].split(":")[1], 16)
    except OSError:
        return None
    return None


def wait_drained(server_port: int, conn: Conn, timeout: float = 3) -> bool:
    client_port = conn.sock.getsockname()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_rx_queue(server_port, client_port) == 0:
            return True
        time.sleep(0.01)
    return False


def wait_for_temp(server: Server, timeout: float = 5) -> bool:
    """Waits until an upload in progress has its file open (named or unnamed)."""
    deadline = time.monotonic() + timeout
    while not server.staged_files():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def wait_clean(server: Server, base_fds: int, timeout: float) -> tuple[bool, str, float]:
    """Waits until the server holds no more descriptors than `base_fds` (so no file in
    progress, named or not) and the upload directory has no temporary file."""
    start = time.monotonic()
    while True:
        fds = server.fd_count()
        temps = temp_files(server.upload_dir)
        if fds <= base_fds and not temps:
            return True, f"{fds} descriptors, no temporary file", time.monotonic() - start
        if time.monotonic() - start > timeout:
            return False, (f"{fds} descriptors (start {base_fds}), temporary files {temps[:3]}, "
                           f"open {server.staged_files()[:3]}"), time.monotonic() - start
        time.sleep(0.05)


# --------------------------------------------------------------------------- disk full

def disk_full(binary: str, options, rng: random.Random, staging: str) -> None:
    ws = Workspace("faults-disk", keep=options.keep)
    mount_point, why = ws.mount_tmpfs("tmpfs", "8m")
    if mount_point is None:
        REPORT.skip("disk full", why)
        ws.cleanup()
        return
    up = os.path.join(mount_point, "up")
    server = Server(binary, up, ["--timeout", "10"] + staging_args(staging), workdir=ws.root, name="disk")
    try:
        server.start()
        expected_staging(server, staging)
        port = server.port
        base_fds = server.fd_count()
        a, b = rng.randbytes(1 * MiB), rng.randbytes(2 * MiB)
        ra, rb = store(port, "a.bin", a), store(port, "b.bin", b)
        REPORT.check("disk full: files that fit are stored", ra.status == 200 and rb.status == 200,
                     f"{ra.status}, {rb.status}")

        def intact() -> bool:
            try:
                return file_sha256(os.path.join(up, "a.bin")) == sha256(a) and \
                    file_sha256(os.path.join(up, "b.bin")) == sha256(b)
            except OSError:
                return False

        def free_bytes() -> int:
            stat = os.statvfs(up)
            return stat.f_bavail * stat.f_frsize

        big = rng.randbytes(8 * MiB)
        for label, chunked in (("Content-Length", False), ("chunked", True)):
            free_before = free_bytes()
            response = store(port, "big.bin", big, chunked=chunked)
            error = json_error(response)
            REPORT.check(f"disk full: a {label} upload that does not fit is 507 with a JSON reason",
                         response.status == 507 and bool(error), f"{response.status} {response.body[:120]!r}")
            deadline = time.monotonic() + 3
            while (server.staged_files() or free_bytes() < free_before) and time.monotonic() < deadline:
                time.sleep(0.05)
            REPORT.check(f"disk full: no temporary or partial file after the 507, its space is free again ({label})",
                         not temp_files(up) and not server.staged_files() and free_bytes() >= free_before
                         and not os.path.exists(os.path.join(up, "big.bin")),
                         f"directory {sorted(os.listdir(up))}, open {server.staged_files()}, "
                         f"free {free_bytes() // KiB} KiB (before {free_before // KiB} KiB)")

        small = rng.randbytes(100 * KiB)
        response = upload(port, [Part("file", "c-small.bin", small), Part("file", "c-big.bin", big)], timeout=30)
        REPORT.check("disk full: a request whose second file does not fit stores neither",
                     response.status == 507 and not os.path.exists(os.path.join(up, "c-small.bin"))
                     and not temp_files(up), f"{response.status}, directory {sorted(os.listdir(up))}")
        REPORT.check("disk full: the files stored before are intact", intact())

        statvfs = os.statvfs(up)
        free = statvfs.f_bavail * statvfs.f_frsize
        filler = rng.randbytes(max(0, free - 256 * KiB))
        rf = store(port, "filler.bin", filler)
        d = rng.randbytes(1 * MiB)
        rd_full = store(port, "d.bin", d)
        os.remove(os.path.join(up, "filler.bin"))
        rd_freed = store(port, "d.bin", d)
        REPORT.check("disk full: uploads succeed again once space is freed",
                     rf.status == 200 and rd_full.status == 507 and rd_freed.status == 200
                     and file_sha256(os.path.join(up, "d.bin")) == sha256(d),
                     f"filler {len(filler) // KiB} KiB -> {rf.status}; 1 MiB while full -> {rd_full.status}; "
                     f"after freeing -> {rd_freed.status}")
        REPORT.check("disk full: the files stored before are still intact", intact())
        REPORT.check("disk full: no upload left in flight", server.wait_in_flight_zero(3))
        ok, detail, _ = wait_clean(server, base_fds, 3)
        REPORT.check("disk full: descriptors back to the start value, no temporary file", ok, detail)
        REPORT.check("disk full: server alive and healthy", server.alive() and healthz(port)[0], server.crash_text())
    finally:
        code = server.stop()
        REPORT.check("disk full: server exits 0 on SIGTERM", code == 0, f"exit {code}")
        ws.cleanup()


# --------------------------------------------------------------------------- vanishing clients

BOUNDARY = "vanish-boundary-3c9e"


def vanish_prefixes(port: int, name: str, chunked: bool, rng: random.Random) -> dict[str, bytes]:
    """For every stage, the bytes a client sends before it vanishes."""
    data1, data2 = rng.randbytes(64 * KiB), rng.randbytes(64 * KiB)
    p1 = Part("file", name + "-1.bin", data1)
    p2 = Part("file", name + "-2.bin", data2)
    body = b"".join(bytes(p) for p in multipart_pieces([p1, p2], BOUNDARY))
    head = upload_head(port, None if chunked else len(body), BOUNDARY)
    i_data1 = body.index(data1)
    i_delim = i_data1 + len(data1)
    i_head2 = body.index(b"Content-Disposition", i_delim)
    i_data2 = body.index(data2)
    i_close = i_data2 + len(data2)
    cuts = {
        "after-headers": 0,
        "mid-part-headers": i_data1 - 40,
        "mid-part": i_data1 + len(data1) // 2,
        "end-of-first-part": i_delim,
        "between-parts": i_head2,
        "mid-second-part": i_data2 + len(data2) // 3,
        "before-closing-boundary": i_close,
        "inside-closing-boundary": i_close + 6,
    }
    out = {"mid-headers": head[:len(head) // 2]}
    for stage, cut in cuts.items():
        if not chunked:
            out[stage] = head + body[:cut]
        elif cut == 0:
            out[stage] = head
        else:
            out[stage] = head + b"%x\r\n" % cut + body[:cut] + b"\r\n"
    if chunked:
        out["mid-chunk"] = head + b"%x\r\n" % len(body) + body[:len(body) // 2]
        out["before-last-chunk"] = head + b"%x\r\n" % len(body) + body + b"\r\n"
    return out


def vanishing_clients(binary: str, options, rng: random.Random, staging: str) -> None:
    ws = Workspace("faults-vanish", keep=options.keep)
    up = ws.path("up")
    idle_timeout = 3
    server = Server(binary, up, ["--timeout", str(idle_timeout)] + staging_args(staging), workdir=ws.root, name="vanish")
    try:
        server.start()
        port = server.port
        base_fds = server.fd_count()
        cases = 0
        slowest = 0.0
        # 1. Each client stops at a stage, waits until the server has read every byte it
        # sent, then goes: FIN (close) or RST (SO_LINGER 0). Resources must be released
        # at once (within 2 s), not at the idle timeout.
        for framing in ("content-length", "chunked"):
            for mode in ("fin", "rst"):
                problems = []
                for stage in vanish_prefixes(port, "x", framing == "chunked", rng):
                    name = f"vanish-{framing}-{mode}-{stage}"
                    prefix = vanish_prefixes(port, name, framing == "chunked", rng)[stage]
                    conn = Conn(port, timeout=5)
                    conn.send(prefix)
                    drained = wait_drained(port, conn)
                    if mode == "rst":
                        conn.reset()
                    else:
                        conn.close()
                    ok, detail, seconds = wait_clean(server, base_fds, 2.0)
                    slowest = max(slowest, seconds)
                    left = [n for n in os.listdir(up) if n.startswith(name)]
                    cases += 1
                    if not drained:
                        problems.append(f"{stage}: the server did not read the bytes sent")
                    if not ok or left:
                        problems.append(f"{stage}: {detail}; files {left}")
                REPORT.check(f"vanish ({framing}, {mode.upper()}) at every stage: no file, no temporary file, "
                             f"no descriptor kept", not problems, "; ".join(problems[:4]))
        REPORT.figure("vanish cases", f"{cases} (released within {slowest:.2f}s at worst)")

        # 2. Clients that close right after their last byte, all at once. libmicrohttpd
        # may read the last data and the FIN in one go and notice the close only at the
        # idle timeout: resources must still be released by then.
        t_batch = time.monotonic()
        marker = len(server.access_log())
        conns = []
        for framing in ("content-length", "chunked"):
            for mode in ("fin", "rst"):
                for stage, prefix in vanish_prefixes(port, f"now-{framing}-{mode}", framing == "chunked", rng).items():
                    conn = Conn(port, timeout=5)
                    conn.send(prefix)
                    conns.append((conn, mode))
        for conn, mode in conns:
            if mode == "rst":
                conn.reset()
            else:
                conn.close()
        ok, detail, seconds = wait_clean(server, base_fds, idle_timeout + 3)
        left = [n for n in os.listdir(up) if n.startswith("now-")]
        REPORT.check(f"{len(conns)} clients closing right after sending: all released by the idle timeout",
                     ok and not left, f"{detail}; after {seconds:.1f}s; files {left[:3]}")
        late = [e for e in server.access_log()[marker:] if e.get("ended") == "timed_out"]
        if late:
            REPORT.warn("a FIN right after the last bytes is noticed only at the idle timeout",
                        f"{len(late)} of {len(conns)} connections held until the {idle_timeout}s timeout "
                        f"(all released after {seconds:.1f}s); libmicrohttpd 0.9.75 epoll, see hardening/README.md")
        REPORT.check("vanish: no upload left in flight", server.wait_in_flight_zero(3))
        abandoned = server.events("upload_abandoned")
        REPORT.check("vanish: every abandoned upload logged upload_abandoned", len(abandoned) > 0,
                     f"{len(abandoned)} upload_abandoned events")
        REPORT.check("vanish: server alive and healthy", server.alive() and healthz(port)[0], server.crash_text())
        log(f"batch of immediate closes took {time.monotonic() - t_batch:.1f}s")
    finally:
        code = server.stop()
        REPORT.check("vanish: server exits 0 on SIGTERM", code == 0, f"exit {code}")
        ws.cleanup()


# --------------------------------------------------------------------------- SIGTERM

def sigterm_in_flight(binary: str, options, rng: random.Random, staging: str) -> None:
    ws = Workspace("faults-sigterm", keep=options.keep)
    up = ws.path("up")
    grace = 3
    server = Server(binary, up, ["--timeout", "30", "--shutdown-grace", str(grace)] + staging_args(staging), workdir=ws.root, name="sigterm")
    results: dict[str, tuple] = {}
    try:
        server.start()
        port = server.port
        size = 2 * MiB
        quick = [f"quick-{i:02d}.bin" for i in range(10)]
        stalled = [f"stalled-{i:02d}.bin" for i in range(10)]
        datas = {name: rng.randbytes(size) for name in quick + stalled}
        signalled = threading.Event()
        connected = threading.Barrier(len(datas) + 1, timeout=20)

        def client(name: str) -> None:
            boundary = "sigterm-" + name
            body = b"".join(bytes(p) for p in multipart_pieces([Part("file", name, datas[name])], boundary))
            half = len(body) // 2
            try:
                conn = Conn(port, timeout=30)
                conn.send(upload_head(port, len(body), boundary), body[:half])
            except OSError as error:
                results[name] = ("connect", exception_text(error))
                connected.abort()
                return
            try:
                connected.wait()
            except threading.BrokenBarrierError:
                conn.close()
                return
            if name.startswith("quick"):
                signalled.wait(10)
                time.sleep(0.3)
                try:
                    conn.send(body[half:])
                    response = conn.read_response(grace + 5)
                    results[name] = ("response", response.status, response.body[:200])
                except (OSError, Closed) as error:
                    results[name] = ("error", exception_text(error))
            else:
                how, seconds = conn.wait_closed(grace + 8)
                results[name] = ("closed", how, seconds)
            conn.close()

        threads = [threading.Thread(target=client, args=(name,), daemon=True) for name in datas]
        for thread in threads:
            thread.start()
        connected.wait()
        deadline = time.monotonic() + 5
        in_flight = server.metric("upload_server_uploads_in_flight")
        while in_flight != len(datas) and time.monotonic() < deadline:
            time.sleep(0.05)
            in_flight = server.metric("upload_server_uploads_in_flight")
        REPORT.check(f"sigterm: {len(datas)} uploads in flight before the signal", in_flight == len(datas),
                     f"uploads_in_flight {in_flight}")

        t_signal = time.monotonic()
        server.signal(signal.SIGTERM)
        signalled.set()
        time.sleep(0.5)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            refused = False
        except OSError:
            refused = True
        code = server.wait(grace + 5)
        exit_seconds = time.monotonic() - t_signal
        if code is None:
            server.signal(signal.SIGKILL)
            server.wait(5)
        for thread in threads:
            thread.join(grace + 10)

        REPORT.check("sigterm: new connections are refused after the signal", refused)
        REPORT.check(f"sigterm: exits 0 within the grace period ({grace}s + 1.5s)",
                     code == 0 and exit_seconds <= grace + 1.5, f"exit {code} after {exit_seconds:.2f}s")
        bad_quick = []
        for name in quick:
            result = results.get(name)
            path = os.path.join(up, name)
            if not result or result[0] != "response" or result[1] != 200 or not os.path.exists(path) \
                    or file_sha256(path) != sha256(datas[name]):
                bad_quick.append(f"{name}: {result}")
        REPORT.check("sigterm: uploads that finish within the grace are stored (200, same sha256)", not bad_quick,
                     "; ".join(bad_quick[:3]))
        bad_stalled = []
        for name in stalled:
            result = results.get(name)
            if os.path.exists(os.path.join(up, name)) or not result or result[0] != "closed" \
                    or result[1] not in ("eof", "reset"):
                bad_stalled.append(f"{name}: {result}")
        REPORT.check("sigterm: stalled uploads are cut off and leave no trace", not bad_stalled,
                     "; ".join(bad_stalled[:3]))
        REPORT.check("sigterm: no temporary file after the exit", not temp_files(up), str(temp_files(up)[:3]))
        stopped = server.events("stopped")
        REPORT.check("sigterm: the stopped event counts the cut-off uploads",
                     bool(stopped) and stopped[-1].get("uploads_cut_off") == len(stalled), str(stopped[-1:]))
    finally:
        server.stop()
        ws.cleanup()

    # An idle server (one keep-alive connection open) stops at once.
    ws = Workspace("faults-sigterm-idle", keep=options.keep)
    server = Server(binary, ws.path("up"), ["--shutdown-grace", "10"], workdir=ws.root, name="idle")
    try:
        server.start()
        conn = Conn(server.port)
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.read_response(2)
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        code = server.wait(12)
        seconds = time.monotonic() - t0
        conn.close()
        REPORT.check("sigterm: a server with no upload in flight exits 0 at once (< 1 s)",
                     code == 0 and seconds < 1.0, f"exit {code} after {seconds:.2f}s with grace 10s")
    finally:
        server.stop()
        ws.cleanup()


# --------------------------------------------------------------------------- directory removed / read-only

def _error_answer(response) -> bool:
    return response.status in (500, 507) and bool(json_error(response))


def directory_removed(binary: str, options, rng: random.Random, staging: str) -> None:
    # Two servers, so that the mid-upload case does not depend on the first one.
    for mid_upload in (False, True):
        label = "removed mid-upload" if mid_upload else "removed directory"
        ws = Workspace("faults-rmdir", keep=options.keep)
        up = ws.path("up")
        server = Server(binary, up, ["--timeout", "10"] + staging_args(staging), workdir=ws.root, name="rmdir")
        try:
            server.start()
            port = server.port
            base_fds = server.fd_count()
            base_targets = server.fd_targets()
            data = rng.randbytes(256 * KiB)
            r0 = store(port, "before.bin", data)
            if not mid_upload:
                shutil.rmtree(up)
                r1 = store(port, "while-removed.bin", data)
                REPORT.check(f"{label}: an upload gets 500/507 with a JSON reason", _error_answer(r1),
                             f"{r1.status} {r1.body[:160]!r}")
            else:
                boundary = "rmdir-mid"
                body = b"".join(bytes(p) for p in multipart_pieces([Part("file", "mid.bin", data)], boundary))
                conn = Conn(port, timeout=10)
                conn.send(upload_head(port, len(body), boundary), body[:len(body) // 2])
                wait_drained(port, conn)
                had_temp = wait_for_temp(server)
                shutil.rmtree(up)
                conn.send(body[len(body) // 2:])
                try:
                    r3 = conn.read_response(10)
                    ok3, detail3 = _error_answer(r3), f"{r3.status} {r3.body[:160]!r}"
                except (OSError, Closed) as error:
                    ok3, detail3 = False, exception_text(error)
                conn.close()
                REPORT.check(f"{label}: the upload gets 500/507 with a JSON reason", ok3 and had_temp,
                             detail3 + ("" if had_temp else "; no file in progress was seen before the removal"))
            REPORT.check(f"{label}: server alive and /healthz 200", server.alive() and healthz(port)[0],
                         server.crash_text())
            os.makedirs(up)
            r2 = store(port, "after.bin", data)
            REPORT.check(f"{label}: uploads work again once it is recreated",
                         r0.status == 200 and r2.status == 200
                         and file_sha256(os.path.join(up, "after.bin")) == sha256(data),
                         f"before {r0.status}, after {r2.status} {r2.body[:120]!r}")
            REPORT.check(f"{label}: nothing else in the recreated directory", sorted(os.listdir(up)) == ["after.bin"]
                         or r2.status != 200, str(sorted(os.listdir(up))[:5]))
            ok, detail, _ = wait_clean(server, base_fds, 3)
            extra = sorted(set(server.fd_targets()) - set(base_targets))
            REPORT.check(f"{label}: descriptors back to the start value", ok,
                         detail + (f"; new: {extra}" if extra else ""))
            REPORT.check(f"{label}: no upload left in flight", server.wait_in_flight_zero(3))
            failures = server.events("upload_dir_unavailable") + server.events("upload_failed")
            REPORT.check(f"{label}: the failure is logged", len(failures) >= 1, f"{len(failures)} events")
        finally:
            code = server.stop()
            REPORT.check(f"{label}: server exits 0 on SIGTERM", code == 0, f"exit {code}")
            ws.cleanup()


def chattr_immutable(path: str, on: bool) -> str:
    """chattr +i / -i: no entry of the directory can be created, renamed or removed,
    even by root and through descriptors opened before. '' or the error."""
    result = subprocess.run(["chattr", "+i" if on else "-i", path], capture_output=True, text=True)
    return "" if result.returncode == 0 else (result.stderr.strip() or f"chattr exit {result.returncode}")


def directory_read_only(binary: str, options, rng: random.Random, staging: str) -> None:
    if not is_root():
        REPORT.skip("read-only directory", "needs root for chattr +i")
        return
    ws = Workspace("faults-ro", keep=options.keep)
    up = ws.path("up")
    server = Server(binary, up, ["--timeout", "10"] + staging_args(staging), workdir=ws.root, name="ro")
    immutable = False
    try:
        server.start()
        port = server.port
        base_fds = server.fd_count()
        data = rng.randbytes(256 * KiB)
        error = chattr_immutable(up, True)
        if error:
            REPORT.skip("read-only directory", f"chattr +i does not work here: {error}")
            return
        immutable = True
        r1 = store(port, "while-ro.bin", data)
        REPORT.check("read-only directory (chattr +i): an upload gets 500/507 with a JSON reason",
                     _error_answer(r1) and not os.path.exists(os.path.join(up, "while-ro.bin")),
                     f"{r1.status} {r1.body[:160]!r}")
        REPORT.check("read-only directory: server alive and /healthz 200", server.alive() and healthz(port)[0],
                     server.crash_text())
        chattr_immutable(up, False)
        immutable = False
        r2 = store(port, "after-ro.bin", data)
        REPORT.check("read-only directory: uploads work again once it is writable",
                     r2.status == 200 and file_sha256(os.path.join(up, "after-ro.bin")) == sha256(data),
                     f"{r2.status}")

        # Made read-only while an upload is being received (its file in progress
        # exists): it either completes with the right bytes or leaves nothing once the
        # directory is writable again.
        boundary = "ro-mid"
        body = b"".join(bytes(p) for p in multipart_pieces([Part("file", "mid.bin", data)], boundary))
        conn = Conn(port, timeout=10)
        conn.send(upload_head(port, len(body), boundary), body[:len(body) // 2])
        wait_drained(port, conn)
        had_temp = wait_for_temp(server)
        chattr_immutable(up, True)
        immutable = True
        conn.send(body[len(body) // 2:])
        try:
            r3 = conn.read_response(10)
            status, detail3 = r3.status, f"{r3.status} {r3.body[:160]!r}"
            answered = r3.status == 200 or _error_answer(r3)
        except (OSError, Closed) as error:
            status, detail3, answered = None, exception_text(error), False
        conn.close()
        chattr_immutable(up, False)
        immutable = False
        REPORT.check("read-only mid-upload: a clear answer (200 or 500/507 with a JSON reason)",
                     answered and had_temp, detail3)
        r4 = store(port, "after-ro-mid.bin", data)
        REPORT.check("read-only mid-upload: uploads work again once it is writable", r4.status == 200, f"{r4.status}")
        # A temporary file that could not be removed while the directory was
        # read-only is removed when the server next uses the directory.
        mid = os.path.join(up, "mid.bin")
        if status == 200:
            outcome_ok = os.path.exists(mid) and file_sha256(mid) == sha256(data) and not temp_files(up)
        else:
            outcome_ok = not os.path.exists(mid) and not temp_files(up)
        REPORT.check("read-only mid-upload: stored intact, or nothing left after the next upload",
                     outcome_ok, f"answer {status}; directory {sorted(os.listdir(up))}")
        ok, count, _ = server.wait_fds(base_fds, 3)
        REPORT.check("read-only directory: descriptors back to the start value", ok, f"{base_fds} -> {count}")
    finally:
        if immutable:
            chattr_immutable(up, False)
        code = server.stop()
        REPORT.check("read-only directory: server exits 0 on SIGTERM", code == 0, f"exit {code}")
        if server.process is not None:
            REPORT.check("read-only directory: no temporary file after the stop", not temp_files(up),
                         str(temp_files(up)))
        ws.cleanup()


def directory_mounted_over(binary: str, options, rng: random.Random, staging: str) -> None:
    """Another filesystem mounted on the upload directory's path while the server runs
    (a volume mounted late, a read-only remount): the path is what operators look at,
    so a 200 must mean the file is there, and a read-only filesystem there must give a
    clear error, not a file stored out of sight beneath the mount."""
    if not is_root():
        REPORT.skip("filesystem mounted over the directory", "needs root to mount")
        return
    ws = Workspace("faults-mount", keep=options.keep)
    up = ws.path("up")
    server = Server(binary, up, ["--timeout", "10"] + staging_args(staging), workdir=ws.root, name="mount")
    mounted = False
    try:
        server.start()
        port = server.port
        data = rng.randbytes(64 * KiB)
        for options_text, label in (("ro,size=1m", "a read-only filesystem"), ("size=8m", "a writable filesystem")):
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", options_text, "tmpfs", up],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                REPORT.skip(f"{label} mounted over the directory", f"mount: {result.stderr.strip()}")
                continue
            mounted = True
            name = f"mounted-{options_text.split(',')[0]}.bin"
            response = store(port, name, data)
            visible = os.path.exists(os.path.join(up, name))
            # Lazy: the server holds the directory open, a plain umount would be "busy".
            subprocess.run(["umount", "-l", up], capture_output=True)
            mounted = False
            hidden = os.path.exists(os.path.join(up, name))
            if options_text.startswith("ro"):
                REPORT.check(f"{label} mounted over the directory: an upload gets 500/507 with a JSON reason",
                             _error_answer(response) and not hidden,
                             f"{response.status} {response.body[:120]!r}"
                             + ("; stored in the directory hidden under the mount" if hidden else ""))
            else:
                REPORT.check(f"{label} mounted over the directory: a 200 means the file is at the path",
                             response.status != 200 or visible,
                             f"{response.status}; visible at the path while mounted: {visible}; "
                             f"in the directory hidden under the mount: {hidden}")
        r = store(port, "after-umount.bin", data)
        REPORT.check("mounted over: uploads work again once unmounted", r.status == 200
                     and os.path.exists(os.path.join(up, "after-umount.bin")), f"{r.status}")
        REPORT.check("mounted over: server alive", server.alive(), server.crash_text())
    finally:
        if mounted:
            subprocess.run(["umount", "-l", up], capture_output=True)
        code = server.stop()
        REPORT.check("mounted over: server exits 0 on SIGTERM", code == 0, f"exit {code}")
        ws.cleanup()
