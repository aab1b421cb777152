"""Resumable uploads (tus 1.0.0 at /tus/) with real clients nobody here wrote: tuspy and
aiotus from PyPI (pinned in scripts/test, which installs them into its venv; skipped
with the reason where they are missing).

    python3 -m pytest hardening/test_tus.py [--binary PATH]

The servers are the `server` fixture's (conftest.py): on 127.0.0.1, their upload
directories and the files sent in the test's workspace. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading

import pytest

from common import (
    TUS,
    Closed,
    Conn,
    MiB,
    file_sha256,
    make_file,
    request,
    stored,
    tus_create,
    tus_partials,
    tus_patch,
    tus_patch_head,
)

tusclient = pytest.importorskip("tusclient.client")
aiotus = pytest.importorskip("aiotus")
import aiohttp  # noqa: E402  (aiotus's own dependency)
import yarl  # noqa: E402
from tusclient.storage.filestorage import FileStorage  # noqa: E402

# --------------------------------------------------------------------------- tuspy

def test_tuspy_chunked_upload_with_checksums(server, workspace, options) -> None:
    up = server()
    path = make_file(workspace.path("chunked.bin"), 5 * MiB + 12345, random.Random(options.seed))
    client = tusclient.TusClient(up.url("/tus/"))
    uploader = client.uploader(path, chunk_size=MiB, metadata={"filename": "chunked.bin"}, upload_checksum=True)
    uploader.upload()
    assert uploader.offset == os.path.getsize(path)
    assert stored(up.upload_dir) == ["chunked.bin"]
    assert file_sha256(os.path.join(up.upload_dir, "chunked.bin")) == file_sha256(path)
    assert sorted(os.listdir(up.upload_dir)) == ["chunked.bin"], "no reserved name is left"


def test_tuspy_resumes_from_url_storage_after_sigkill(server, workspace, options) -> None:
    up = server()
    path = make_file(workspace.path("resumed.bin"), 12 * MiB, random.Random(options.seed))
    storage = FileStorage(workspace.path("tus-urls.json"))

    def uploader():
        client = tusclient.TusClient(up.url("/tus/"))
        return client.uploader(path, chunk_size=2 * MiB, metadata={"filename": "resumed.bin"},
                               store_url=True, url_storage=storage)

    first = uploader()
    first.upload(stop_at=6 * MiB)
    assert first.offset == 6 * MiB
    url = first.url
    up.kill()
    assert stored(up.upload_dir) == [], "nothing under its name before the last byte"
    assert len(tus_partials(up.upload_dir)) == 1

    up.start(port=up.port)  # same directory, same port: the stored URL still leads to it
    assert tus_partials(up.upload_dir), "the restart's leftover sweep kept the partial"
    second = uploader()
    assert second.url == url, "the URL came from tuspy's storage"
    assert second.offset == 6 * MiB, "tuspy asked the server (HEAD) where to go on"
    second.upload()
    assert file_sha256(os.path.join(up.upload_dir, "resumed.bin")) == file_sha256(path)
    assert tus_partials(up.upload_dir) == []


def test_an_upload_begun_on_one_instance_finishes_on_another(server, workspace, options) -> None:
    shared = workspace.path("shared-up")
    first, second = server(upload_dir=shared, name="first"), server(upload_dir=shared, name="second")
    path = make_file(workspace.path("shared.bin"), 9 * MiB, random.Random(options.seed))
    begun = tusclient.TusClient(first.url("/tus/")).uploader(path, chunk_size=3 * MiB,
                                                             metadata={"filename": "shared.bin"})
    begun.upload(stop_at=3 * MiB)
    other_url = begun.url.replace(f":{first.port}/", f":{second.port}/")
    finished = tusclient.TusClient(second.url("/tus/")).uploader(path, chunk_size=3 * MiB, url=other_url)
    assert finished.offset == 3 * MiB
    finished.upload()
    assert file_sha256(os.path.join(shared, "shared.bin")) == file_sha256(path)
    # Done on both: no reserved name left, and neither instance knows the upload any more.
    assert sorted(os.listdir(shared)) == ["shared.bin"]
    head = request(first.port, "HEAD", "/" + begun.url.split("/", 3)[3], TUS)
    assert head.status == 404


# --------------------------------------------------------------------------- aiotus

def test_aiotus_upload_with_checksum_on_disk(server, workspace, options) -> None:
    up = server()
    path = make_file(workspace.path("aio.bin"), 7 * MiB + 1, random.Random(options.seed))

    async def run():
        with open(path, "rb") as file:
            return await aiotus.upload(up.url("/tus/"), file, {"filename": "résumé aio.bin".encode()},
                                       chunksize=2 * MiB,
                                       config=aiotus.RetryConfiguration(retry_attempts=2, max_retry_period_seconds=0.5))

    location = asyncio.run(run())
    assert location is not None and location.is_absolute()
    assert sorted(os.listdir(up.upload_dir)) == ["résumé aio.bin"]
    assert file_sha256(os.path.join(up.upload_dir, "résumé aio.bin")) == file_sha256(path)


def test_aiotus_reads_metadata_and_resumes_an_upload(server, workspace, options) -> None:
    """aiotus's own pieces: creation, metadata from HEAD, then its resuming upload loop."""
    from aiotus import core, creation
    up = server()
    path = make_file(workspace.path("parts.bin"), 5 * MiB, random.Random(options.seed))
    config = aiotus.RetryConfiguration(retry_attempts=2, max_retry_period_seconds=0.5)

    async def run():
        async with aiohttp.ClientSession() as session:
            with open(path, "rb") as file:
                location = await creation.create(session, yarl.URL(up.url("/tus/")), file,
                                                 {"filename": b"parts.bin", "kind": b"test", "flag": None})
                metadata = await aiotus.metadata(location, client_session=session, config=config)
                # Part of it by hand, then aiotus continues from the server's offset.
                first = file.read(MiB)
                async with session.patch(location, data=first, headers={
                        **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}) as response:
                    assert response.status == 204
                await core.upload_buffer(session, location, file, chunksize=MiB)
                return metadata

    metadata = asyncio.run(run())
    assert metadata == {"filename": b"parts.bin", "kind": b"test", "flag": None}
    assert file_sha256(os.path.join(up.upload_dir, "parts.bin")) == file_sha256(path)


def test_aiotus_gives_up_on_a_file_over_the_limit(server, workspace, options) -> None:
    """A file over --max-upload-size is refused at creation (413), so the client gives up."""
    up = server(["--max-upload-size", "1MiB"])
    path = make_file(workspace.path("big.bin"), 2 * MiB, random.Random(options.seed))

    async def run():
        with open(path, "rb") as file:
            return await aiotus.upload(up.url("/tus/"), file, {"filename": b"big.bin"},
                                       config=aiotus.RetryConfiguration(retry_attempts=1, max_retry_period_seconds=0.1))

    assert asyncio.run(run()) is None
    assert stored(up.upload_dir) == [] and tus_partials(up.upload_dir) == []


# --------------------------------------------------------------------------- concurrency

def test_two_concurrent_patches_never_interleave(server) -> None:
    up = server()
    size = 64 * MiB
    created, path = tus_create(up.port, size, "race.bin")
    assert created.status == 201
    bodies = [bytes([0xAA]) * size, bytes([0x55]) * size]
    barrier = threading.Barrier(2)
    statuses: list[int] = [0, 0]

    def patch(index: int) -> None:
        with Conn(up.port, timeout=60) as conn:
            conn.send(tus_patch_head(up.port, path, 0, size))
            barrier.wait(timeout=10)
            try:
                view = memoryview(bodies[index])
                for start in range(0, size, MiB):
                    conn.send(view[start:start + MiB])
            except OSError:
                pass  # refused early: the server answered and closed
            try:
                statuses[index] = conn.read_response(60).status
            except (OSError, Closed, ValueError):
                statuses[index] = -1

    threads = [threading.Thread(target=patch, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # One writes it all; the other is refused (409), or cut off if the refusal
    # came while it was still sending.
    assert sorted(statuses) in ([-1, 204], [204, 409]), statuses
    winner = bodies[statuses.index(204)]
    with open(os.path.join(up.upload_dir, "race.bin"), "rb") as f:
        assert f.read() == winner, "the file is one request's bytes, never a mix"


def test_options_and_json_errors(server) -> None:
    up = server()
    answer = request(up.port, "OPTIONS", "/tus/")
    assert answer.status == 204
    assert answer.headers.get("tus-version") == "1.0.0"
    assert "checksum" in answer.headers.get("tus-extension", "")
    assert request(up.port, "HEAD", "/tus/0123456789abcdef0123456789abcdef").status == 412
    response = tus_patch(up.port, "/tus/0123456789abcdef0123456789abcdef", 0, b"x")
    assert response.status == 404
    assert "error" in response.json()
