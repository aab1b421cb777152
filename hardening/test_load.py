"""Load: many simultaneous connections, most of them idle, some uploading.

1,000 connections at once (800 idle, 200 uploading a 1 MiB file each): every upload
is stored with the right bytes, the idle connections are closed by the idle timeout
(not earlier, not much later), /healthz answers within a second throughout (polled
every 100 ms on its own connection), and the server ends with the descriptors it
started with.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import aio
from common import (
    REPORT,
    MiB,
    Part,
    Server,
    Workspace,
    file_sha256,
    fmt_mib,
    log,
    multipart_pieces,
    raise_nofile,
    sha256,
    staging_args,
    stagings,
    temp_files,
    upload_head,
)


def test_load(binary, options):
    asyncio.run(_run(binary, options))


async def _run(binary: str, options) -> None:
    idle_count = options.load_idle
    upload_count = options.load_uploads
    size = options.load_size
    timeout = options.load_timeout
    total = idle_count + upload_count
    limit = raise_nofile()
    log(f"client RLIMIT_NOFILE soft limit {limit}; {idle_count} idle + {upload_count} uploading "
        f"({size // 1024} KiB each), server --timeout {timeout}")
    if limit < total + 100:
        REPORT.check("client can open enough descriptors", False, f"RLIMIT_NOFILE {limit} < {total + 100}")
        return

    ws = Workspace("load", keep=options.keep)
    # Every client is 127.0.0.1, as behind a reverse proxy: no per-address limit.
    server = Server(binary, ws.path("up"), ["--timeout", str(timeout), "--connection-limit", str(max(4096, total * 2)), "--connections-per-address", "0"]
                    + staging_args(stagings(options, False)[0]))
    try:
        server.start()
        base_fds = server.fd_count()
        base_sockets = server.socket_count()
        rng = random.Random(options.seed)
        datas = [rng.randbytes(size) for _ in range(upload_count)]
        expected = {f"load-{i:04d}.bin": sha256(d) for i, d in enumerate(datas)}

        # Server-side sampling of open sockets, on a thread so that readlink()s of a
        # thousand descriptors do not delay the event loop (and the health poller).
        sampling = threading.Event()
        peak = {"sockets": 0}

        def sampler() -> None:
            while not sampling.is_set():
                try:
                    peak["sockets"] = max(peak["sockets"], server.socket_count())
                except OSError:
                    pass
                time.sleep(0.1)

        sampler_thread = threading.Thread(target=sampler, daemon=True)
        sampler_thread.start()

        stop = asyncio.Event()
        poller = asyncio.create_task(aio.healthz_poller(server.port, stop, interval=0.1, timeout=1.0))
        await asyncio.sleep(0.3)

        open_now = {"n": 0, "peak": 0}

        def opened() -> None:
            open_now["n"] += 1
            open_now["peak"] = max(open_now["peak"], open_now["n"])

        def closed() -> None:
            open_now["n"] -= 1

        # 1. The idle connections, in batches so that the listen backlog never overflows.
        idle: list[tuple] = []
        connect_errors: list[str] = []

        async def connect_idle(index: int):
            try:
                reader, writer = await aio.open_conn(server.port, 10)
            except (TimeoutError, OSError) as error:
                connect_errors.append(f"idle {index}: {type(error).__name__}: {error}")
                return None
            opened()
            return (reader, writer, time.monotonic())

        t0 = time.monotonic()
        for start in range(0, idle_count, 100):
            batch = await asyncio.gather(*(connect_idle(i) for i in range(start, min(idle_count, start + 100))))
            idle += [c for c in batch if c is not None]
        log(f"{len(idle)} idle connections open after {time.monotonic() - t0:.2f}s")

        async def watch_idle(reader, writer, connected_at):
            how = await aio.wait_closed(reader, timeout + 8)
            closed()
            seconds = time.monotonic() - connected_at
            aio.abort(writer)
            return how, seconds

        idle_watchers = [asyncio.create_task(watch_idle(*c)) for c in idle]

        # 2. The uploads: 1 MiB each, in 64 KiB pieces with short pauses so that they
        # are all in progress together, alongside the idle connections.
        piece = 64 * 1024
        pause = 0.05

        async def do_upload(index: int):
            name = f"load-{index:04d}.bin"
            boundary = f"load-boundary-{index:04d}"
            body = multipart_pieces([Part("file", name, datas[index])], boundary)
            length = sum(len(p) for p in body)
            started = time.monotonic()
            try:
                reader, writer = await aio.open_conn(server.port, 10)
            except (TimeoutError, OSError) as error:
                return index, None, f"connect: {type(error).__name__}: {error}", 0.0
            opened()
            try:
                writer.write(upload_head(server.port, length, boundary))
                for p in body:
                    view = memoryview(p)
                    for offset in range(0, len(view), piece):
                        writer.write(view[offset:offset + piece])
                        await writer.drain()
                        if len(view) > piece:
                            await asyncio.sleep(pause)
                await writer.drain()
                response = await aio.read_response(reader, 30)
                return index, response, "", time.monotonic() - started
            except Exception as error:  # noqa: BLE001 - every failure is reported
                return index, None, f"{type(error).__name__}: {error}", time.monotonic() - started
            finally:
                closed()
                aio.abort(writer)

        uploads = [asyncio.create_task(do_upload(i)) for i in range(upload_count)]
        results = await asyncio.gather(*uploads)
        upload_seconds = max((r[3] for r in results), default=0.0)
        idle_results = await asyncio.gather(*idle_watchers)
        stop.set()
        stats = await poller
        sampling.set()
        sampler_thread.join(2)

        # ---- checks
        REPORT.check("client opened every connection", not connect_errors and len(idle) == idle_count,
                     "; ".join(connect_errors[:3]) or f"{len(idle)} idle")
        held_server = peak["sockets"] - base_sockets
        REPORT.figure("connections held", f"{open_now['peak']} at once (client side); server held {held_server} "
                                          f"client sockets at its peak")
        REPORT.check(f"{total} connections open at once", open_now["peak"] >= total and held_server >= total,
                     f"client peak {open_now['peak']}, server peak {held_server} sockets beyond its own {base_sockets}")

        bad = [(i, r, e) for i, r, e, _ in results if r is None or r.status != 200]
        REPORT.check(f"all {upload_count} uploads answered 200", not bad,
                     f"{len(bad)} failed, first: {bad[0][2] or (bad[0][1].status, bad[0][1].body[:200])}" if bad
                     else f"slowest {upload_seconds:.2f}s")
        up = server.upload_dir
        mismatched = []
        for name, digest in expected.items():
            path = os.path.join(up, name)
            if not os.path.exists(path) or file_sha256(path) != digest:
                mismatched.append(name)
        REPORT.check("every stored file has the uploaded sha256", not mismatched,
                     f"{len(mismatched)} missing or different, e.g. {mismatched[:3]}" if mismatched
                     else f"{len(expected)} files, {len(expected) * size // MiB} MiB")

        hows = {}
        for how, _ in idle_results:
            hows[how] = hows.get(how, 0) + 1
        times = sorted(s for _, s in idle_results)
        closed_ok = all(how in ("eof", "reset") for how, _ in idle_results)
        early = [s for how, s in idle_results if s < timeout - 0.5]
        late = [s for how, s in idle_results if s > timeout + 3]
        summary = (f"{hows}; closed after {times[0]:.2f}..{times[-1]:.2f}s (timeout {timeout}s)" if times
                   else "no idle connections")
        REPORT.check("idle connections closed by the idle timeout", closed_ok and not early and not late, summary)
        REPORT.check("/healthz answered within 1 s throughout", stats["failures"] == 0 and stats["polls"] > 10,
                     f"{stats['polls']} polls, {stats['failures']} failed, worst {stats['max_latency'] * 1000:.0f} ms"
                     + (f", errors {stats['errors'][:3]}" if stats["errors"] else ""))
        REPORT.figure("load healthz worst latency", f"{stats['max_latency'] * 1000:.0f} ms over {stats['polls']} polls")
        REPORT.check("server alive", server.alive(), server.crash_text())
        ok, count, _ = server.wait_fds(base_fds, 5)
        REPORT.check("descriptors back to the start value", ok, f"{base_fds} -> {count}")
        REPORT.check("no temporary file left, no staged file open", not temp_files(up) and not server.staged_files(),
                     str(temp_files(up)[:5] + server.staged_files()[:5]))
        REPORT.figure("load server memory", f"{fmt_mib(server.rss_kib())} RSS, peak {fmt_mib(server.status_kib('VmHWM'))}")
    finally:
        code = server.stop()
        REPORT.check("server exits 0 on SIGTERM", code == 0, f"exit {code}")
        ws.cleanup()
