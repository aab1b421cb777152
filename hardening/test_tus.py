"""Resumable uploads (tus 1.0.0 at /tus/) with real clients nobody here wrote:
tuspy and aiotus from PyPI (pinned in hardening/requirements-tus.txt).

    pip install -r hardening/requirements-tus.txt
    python3 -m pytest hardening/test_tus.py

Self-contained: its fixture starts the release binary (UPLOAD_SERVER_BIN, else
.build/release/upload-server, built under /tmp/swift-build.lock when missing)
on 127.0.0.1 with a temporary upload directory, and kills it by its own pid.
Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest

tusclient = pytest.importorskip("tusclient.client")
aiotus = pytest.importorskip("aiotus")
import aiohttp  # noqa: E402  (aiotus's own dependency)
import yarl  # noqa: E402
from tusclient.storage.filestorage import FileStorage  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MiB = 1 << 20


def _binary() -> str:
    explicit = os.environ.get("UPLOAD_SERVER_BIN")
    if explicit:
        return explicit
    path = ROOT / ".build" / "release" / "upload-server"
    if not path.exists():
        subprocess.run(["flock", "-w", "3600", "/tmp/swift-build.lock", str(ROOT / "scripts" / "swift"),
                        "build", "-c", "release"], cwd=ROOT, check=True, timeout=3600)
    return str(path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Server:
    """One upload-server process on a directory and port; restartable on both."""

    def __init__(self, directory: pathlib.Path, port: int | None = None, extra: list[str] | None = None) -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.extra = extra or []
        self.process: subprocess.Popen[bytes] | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/tus/"

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [_binary(), "--host", HOST, "--port", str(self.port), "--upload-dir", str(self.directory)] + self.extra,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = self.output = []
        process = self.process

        def read() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                lines.append(raw.decode("utf-8", "replace"))

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any('"event":"started"' in line for line in lines):
                return self
            if process.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError("server did not start: " + "".join(lines))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def stored(self) -> list[str]:
        return sorted(name for name in os.listdir(self.directory) if not name.startswith(".upload-"))

    def partials(self) -> list[str]:
        return sorted(name for name in os.listdir(self.directory)
                      if name.startswith(".upload-tus-") and not name.endswith(".info"))


@pytest.fixture
def upload_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "upload"
    directory.mkdir()
    return directory


@pytest.fixture
def servers(upload_dir: pathlib.Path):
    """Makes servers on `upload_dir` (several may share it); all stopped at the end."""
    started: list[Server] = []

    def make(port: int | None = None, extra: list[str] | None = None) -> Server:
        server = Server(upload_dir, port, extra).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.fixture
def server(servers) -> Server:
    return servers()


def _random_file(tmp_path: pathlib.Path, name: str, size: int) -> tuple[pathlib.Path, str]:
    path = tmp_path / name
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _request(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


# --------------------------------------------------------------------------- tuspy

def test_tuspy_chunked_upload_with_checksums(server: Server, tmp_path: pathlib.Path) -> None:
    path, digest = _random_file(tmp_path, "chunked.bin", 5 * MiB + 12345)
    client = tusclient.TusClient(server.url)
    uploader = client.uploader(str(path), chunk_size=MiB, metadata={"filename": "chunked.bin"}, upload_checksum=True)
    uploader.upload()
    assert uploader.offset == path.stat().st_size
    assert server.stored() == ["chunked.bin"]
    assert _sha256(server.directory / "chunked.bin") == digest
    assert sorted(os.listdir(server.directory)) == ["chunked.bin"], "no reserved name is left"


def test_tuspy_resumes_from_url_storage_after_sigkill(servers, tmp_path: pathlib.Path) -> None:
    server = servers()
    path, digest = _random_file(tmp_path, "resumed.bin", 12 * MiB)
    storage = FileStorage(str(tmp_path / "tus-urls.json"))

    def uploader():
        client = tusclient.TusClient(server.url)
        return client.uploader(str(path), chunk_size=2 * MiB, metadata={"filename": "resumed.bin"},
                               store_url=True, url_storage=storage)

    first = uploader()
    first.upload(stop_at=6 * MiB)
    assert first.offset == 6 * MiB
    url = first.url
    server.stop(signal.SIGKILL)
    assert server.stored() == [], "nothing under its name before the last byte"
    assert len(server.partials()) == 1

    server.start()  # same directory, same port: the stored URL still leads to it
    assert server.partials(), "the restart's leftover sweep kept the partial"
    second = uploader()
    assert second.url == url, "the URL came from tuspy's storage"
    assert second.offset == 6 * MiB, "tuspy asked the server (HEAD) where to go on"
    second.upload()
    assert _sha256(server.directory / "resumed.bin") == digest
    assert server.partials() == []


def test_an_upload_begun_on_one_instance_finishes_on_another(servers, tmp_path: pathlib.Path) -> None:
    first, second = servers(), servers()
    path, digest = _random_file(tmp_path, "shared.bin", 9 * MiB)
    begun = tusclient.TusClient(first.url).uploader(str(path), chunk_size=3 * MiB, metadata={"filename": "shared.bin"})
    begun.upload(stop_at=3 * MiB)
    other_url = begun.url.replace(f":{first.port}/", f":{second.port}/")
    finished = tusclient.TusClient(second.url).uploader(str(path), chunk_size=3 * MiB, url=other_url)
    assert finished.offset == 3 * MiB
    finished.upload()
    assert _sha256(second.directory / "shared.bin") == digest
    # Done on both: no reserved name left, and neither instance knows the upload any more.
    assert sorted(os.listdir(first.directory)) == ["shared.bin"]
    head = _request(first.port, "HEAD", "/" + begun.url.split("/", 3)[3], {"Tus-Resumable": "1.0.0"})
    assert head.status == 404


# --------------------------------------------------------------------------- aiotus

def test_aiotus_upload_with_checksum_on_disk(server: Server, tmp_path: pathlib.Path) -> None:
    path, digest = _random_file(tmp_path, "aio.bin", 7 * MiB + 1)

    async def run():
        with open(path, "rb") as file:
            return await aiotus.upload(server.url, file, {"filename": "résumé aio.bin".encode()}, chunksize=2 * MiB,
                                       config=aiotus.RetryConfiguration(retry_attempts=2, max_retry_period_seconds=0.5))

    location = asyncio.run(run())
    assert location is not None and location.is_absolute()
    assert sorted(os.listdir(server.directory)) == ["résumé aio.bin"]
    assert _sha256(server.directory / "résumé aio.bin") == digest


def test_aiotus_reads_metadata_and_resumes_an_upload(server: Server, tmp_path: pathlib.Path) -> None:
    """aiotus's own pieces: creation, metadata from HEAD, then its resuming upload loop."""
    from aiotus import core, creation
    path, digest = _random_file(tmp_path, "parts.bin", 5 * MiB)
    config = aiotus.RetryConfiguration(retry_attempts=2, max_retry_period_seconds=0.5)

    async def run():
        async with aiohttp.ClientSession() as session:
            with open(path, "rb") as file:
                location = await creation.create(session, yarl.URL(server.url), file,
                                                 {"filename": b"parts.bin", "kind": b"test", "flag": None})
                metadata = await aiotus.metadata(location, client_session=session, config=config)
                # Part of it by hand, then aiotus continues from the server's offset.
                first = file.read(MiB)
                async with session.patch(location, data=first, headers={
                        "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                        "Content-Type": "application/offset+octet-stream"}) as response:
                    assert response.status == 204
                await core.upload_buffer(session, location, file, chunksize=MiB)
                return metadata

    metadata = asyncio.run(run())
    assert metadata == {"filename": b"parts.bin", "kind": b"test", "flag": None}
    assert _sha256(server.directory / "parts.bin") == digest


def test_aiotus_gives_up_on_a_file_over_the_limit(server: Server, tmp_path: pathlib.Path) -> None:
    """A file over --max-upload-size is refused at creation (413), so the client gives up."""
    server.stop()
    server.extra = ["--max-upload-size", "1MiB"]
    server.start()
    path, _ = _random_file(tmp_path, "big.bin", 2 * MiB)

    async def run():
        with open(path, "rb") as file:
            return await aiotus.upload(server.url, file, {"filename": b"big.bin"},
                                       config=aiotus.RetryConfiguration(retry_attempts=1, max_retry_period_seconds=0.1))

    assert asyncio.run(run()) is None
    assert server.stored() == [] and server.partials() == []


# --------------------------------------------------------------------------- concurrency

def test_two_concurrent_patches_never_interleave(server: Server) -> None:
    size = 64 * MiB
    created = _request(server.port, "POST", "/tus/", {
        "Tus-Resumable": "1.0.0", "Upload-Length": str(size),
        "Upload-Metadata": "filename " + base64.b64encode(b"race.bin").decode()})
    assert created.status == 201
    path = "/" + created.getheader("Location").split("/", 3)[3]
    bodies = [bytes([0xAA]) * size, bytes([0x55]) * size]
    barrier = threading.Barrier(2)
    statuses: list[int] = [0, 0]

    def patch(index: int) -> None:
        connection = http.client.HTTPConnection(HOST, server.port, timeout=60)
        connection.putrequest("PATCH", path)
        for name, value in {"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": str(size),
                            "Content-Type": "application/offset+octet-stream"}.items():
            connection.putheader(name, value)
        connection.endheaders()
        barrier.wait(timeout=10)
        try:
            view = memoryview(bodies[index])
            for start in range(0, size, MiB):
                connection.send(view[start:start + MiB])
        except OSError:
            pass  # refused early: the server answered and closed
        try:
            response = connection.getresponse()
            response.read()
            statuses[index] = response.status
        except (OSError, http.client.HTTPException):
            statuses[index] = -1
        connection.close()

    threads = [threading.Thread(target=patch, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # One writes it all; the other is refused (409), or cut off if the refusal
    # came while it was still sending.
    assert sorted(statuses) in ([-1, 204], [204, 409]), statuses
    winner = bodies[statuses.index(204)]
    stored = (server.directory / "race.bin").read_bytes()
    assert stored == winner, "the file is one request's bytes, never a mix"


def test_options_and_json_errors(server: Server) -> None:
    options = _request(server.port, "OPTIONS", "/tus/", {})
    assert options.status == 204
    assert options.getheader("Tus-Version") == "1.0.0"
    assert "checksum" in options.getheader("Tus-Extension")
    missing = http.client.HTTPConnection(HOST, server.port, timeout=10)
    missing.request("HEAD", "/tus/0123456789abcdef0123456789abcdef", headers={})
    assert missing.getresponse().status == 412
    wrong = http.client.HTTPConnection(HOST, server.port, timeout=10)
    wrong.request("PATCH", "/tus/0123456789abcdef0123456789abcdef", body=b"x",
                  headers={"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    response = wrong.getresponse()
    assert response.status == 404
    assert "error" in json.loads(response.read())
