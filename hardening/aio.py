"""asyncio helpers for the suites that hold many connections at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from common import HOST, Closed, Response, _parse_head


async def open_conn(port: int, timeout: float = 10):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, limit=1 << 20), timeout)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def read_response(reader: asyncio.StreamReader, timeout: float) -> Response:
    async def read() -> Response:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as error:
                raise Closed(f"closed after {len(error.partial)} bytes of response head") from None
            status, reason, headers = _parse_head(head[:-4])
            if 100 <= status < 200:
                continue
            break
        length = int(headers.get("content-length", "0"))
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise Closed("closed inside the response body") from None
        return Response(status, reason, headers, body, head)
    return await asyncio.wait_for(read(), timeout)


async def outcome(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> str:
    """`answered STATUS` or `closed (Error)`, then drops the connection."""
    try:
        response = await read_response(reader, timeout)
        text = f"answered {response.status}"
    except Exception as error:  # noqa: BLE001
        text = f"closed ({type(error).__name__})"
    abort(writer)
    return text


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> str:
    """'eof' | 'reset' | 'timeout' | 'data'."""
    try:
        data = await asyncio.wait_for(reader.read(65536), timeout)
    except TimeoutError:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    return "data" if data else "eof"


def abort(writer: asyncio.StreamWriter, rst: bool = False) -> None:
    sock = writer.get_extra_info("socket")
    if rst and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.close()


async def healthz_poller(port: int, stop: asyncio.Event, interval: float = 0.1, timeout: float = 1.0) -> dict:
    """GET /healthz every `interval` on its own keep-alive connection (reopened if closed);
    returns counts and the worst latency."""
    stats = {"polls": 0, "failures": 0, "max_latency": 0.0, "errors": [], "reconnects": 0}
    reader = writer = None
    while not stop.is_set():
        start = time.monotonic()
        try:
            if writer is None:
                reader, writer = await open_conn(port, timeout)
                stats["reconnects"] += 1
            writer.write(f"GET /healthz HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            await writer.drain()
            remaining = max(0.05, timeout - (time.monotonic() - start))
            response = await read_response(reader, remaining)
            ok = response.status == 200
            if not ok:
                stats["errors"].append(f"status {response.status}")
        except (TimeoutError, OSError, Closed, ValueError) as error:
            ok = False
            if writer is not None:
                abort(writer)
            reader = writer = None
            # A keep-alive connection closed between two polls is not a failure of the
            # server to answer: retry once on a fresh connection within the same second.
            if isinstance(error, Closed) and time.monotonic() - start < timeout / 2:
                continue
            stats["errors"].append(f"{type(error).__name__}: {error}")
        latency = time.monotonic() - start
        stats["polls"] += 1
        stats["max_latency"] = max(stats["max_latency"], latency)
        if not ok or latency > timeout:
            stats["failures"] += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - latency))
    if writer is not None:
        abort(writer)
    return stats
