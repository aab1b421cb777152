"""The upload page's resumable uploads (files over 8 MiB go up with tus, docs/resumable.md)
in headless chromium: a server killed mid-upload and restarted ("Connection lost, resuming…"),
a reload that resumes from localStorage, and Cancel that ends the upload on the server.

    python3 -m pytest browser/test_tus_page.py [--binary PATH]

The server is the `server` fixture's and the browser the `browser` fixture's (conftest.py,
as for test_page.py; skipped with the reason without selenium, chromium or chromedriver).
Every wait has a deadline.
"""

from __future__ import annotations

import os
import random

from common import Browser, MiB, Server, file_sha256, make_file, tus_partials

try:
    from selenium.webdriver.common.by import By
except ImportError:  # still collected: the browser fixture skips
    pass


def partial_size(server: Server) -> int:
    """The size of the server's one incomplete upload (-1: none)."""
    sizes = [os.path.getsize(os.path.join(server.upload_dir, name)) for name in tus_partials(server.upload_dir)]
    return sizes[0] if sizes else -1


def patched(entries: list[dict]) -> int:
    """The bytes the PATCH requests of these access-log lines brought."""
    return sum(entry.get("bytes", 0) for entry in entries if entry["method"] == "PATCH")


def test_a_lost_connection_resumes_where_the_server_stopped(server, browser: Browser, workspace, options) -> None:
    up = server()
    path = make_file(workspace.path("flaky.bin"), 24 * MiB, random.Random(options.seed))
    browser.driver.get(up.url("/"))
    browser.throttle(4 * MiB)
    browser.pick(path)
    assert browser.wait_for(lambda: partial_size(up) >= 4 * MiB, 20), "the upload got going"
    up.kill()
    kept = partial_size(up)
    assert browser.wait_for(lambda: browser.last_row().get("status") == "Connection lost, resuming\u2026", 10), \
        browser.last_row()
    assert browser.last_row().get("state") == "retrying"
    before = len(up.access_log())
    up.start(port=up.port)  # same directory, same port
    browser.throttle(None)
    assert browser.wait_for(lambda: browser.last_row().get("state") == "done", 60), browser.last_row()
    assert browser.last_row()["storedName"] == "flaky.bin"
    assert file_sha256(os.path.join(up.upload_dir, "flaky.bin")) == file_sha256(path)
    assert sorted(os.listdir(up.upload_dir)) == ["flaky.bin"]
    # The restarted server got only what it did not have.
    sent = patched(up.access_log()[before:])
    assert sent == 24 * MiB - kept, (sent, kept)


def test_a_reload_resumes_the_same_file(server, browser: Browser, workspace, options) -> None:
    up = server()
    path = make_file(workspace.path("reloaded.bin"), 20 * MiB, random.Random(options.seed))
    browser.driver.get(up.url("/"))
    browser.throttle(4 * MiB)
    browser.pick(path)
    assert browser.wait_for(lambda: partial_size(up) >= 4 * MiB, 20)
    browser.driver.get(up.url("/"))  # the upload's request ends with the page
    assert browser.wait_for(lambda: any(e.get("ended") for e in up.access_log() if e["method"] == "PATCH"), 10)
    kept = partial_size(up)
    assert 0 < kept < 20 * MiB
    browser.throttle(None)
    before = len(up.access_log())
    browser.pick(path)
    assert browser.wait_for(lambda: browser.last_row().get("state") == "done", 60), browser.last_row()
    assert file_sha256(os.path.join(up.upload_dir, "reloaded.bin")) == file_sha256(path)
    after = up.access_log()[before:]
    assert not any(e["method"] == "POST" for e in after), "no new upload: the stored URL was used"
    assert patched(after) == 20 * MiB - kept


def test_cancel_ends_the_upload_on_the_server(server, browser: Browser, workspace, options) -> None:
    up = server()
    path = make_file(workspace.path("cancelled.bin"), 16 * MiB, random.Random(options.seed))
    browser.driver.get(up.url("/"))
    browser.throttle(2 * MiB)
    browser.pick(path)
    assert browser.wait_for(lambda: partial_size(up) > 0, 20)
    browser.driver.find_element(By.CSS_SELECTOR, "#files .file button.cancel").click()
    assert browser.wait_for(lambda: browser.last_row().get("state") == "cancelled", 10), browser.last_row()
    assert browser.wait_for(lambda: os.listdir(up.upload_dir) == [], 10), os.listdir(up.upload_dir)
    assert any(e["method"] == "DELETE" and e.get("status") == 204 for e in up.access_log())
    assert browser.driver.execute_script(
        "return Object.keys(localStorage).filter((k) => k.startsWith('upload-tus:'))") == []
