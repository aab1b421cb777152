"""The upload page's resumable uploads (files over 8 MiB go up with tus, docs/resumable.md)
in headless chromium: a server killed mid-upload and restarted ("Connection lost, resuming…"),
a reload that resumes from localStorage, and Cancel that ends the upload on the server.

    python3 -m pytest browser/test_tus_page.py     # with selenium (browser/run's venv) and chromium

Self-contained: starts the release binary (UPLOAD_SERVER_BIN, else .build/release/upload-server)
on 127.0.0.1 with a temporary upload directory and kills it by its own pid. Every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MiB = 1 << 20
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("chromium and chromedriver are needed", allow_module_level=True)

ROWS_JS = """
return Array.from(document.querySelectorAll('#files .file')).map((li) => ({
  name: li.querySelector('.file-name').textContent,
  state: li.dataset.state,
  status: li.querySelector('.file-status').textContent,
  storedName: li.dataset.storedName || null,
  value: li.querySelector('progress').value,
}));
"""


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
    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []

    def start(self) -> "Server":
        self.process = subprocess.Popen([_binary(), "--host", HOST, "--port", str(self.port),
                                         "--upload-dir", str(self.directory)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = self.lines = []
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

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def access(self) -> list[dict]:
        entries = []
        for line in list(self.lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "method" in entry:
                entries.append(entry)
        return entries

    def partial_size(self) -> int:
        sizes = [os.path.getsize(self.directory / name) for name in os.listdir(self.directory)
                 if name.startswith(".upload-tus-") and not name.endswith(".info")]
        return sizes[0] if sizes else -1


@pytest.fixture
def server(tmp_path: pathlib.Path):
    directory = tmp_path / "upload"
    directory.mkdir()
    running = Server(directory).start()
    yield running
    running.kill()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-background-networking", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _throttle(driver, bytes_per_second: int | None) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": bytes_per_second if bytes_per_second else -1})


def _wait(condition, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def _file(tmp_path: pathlib.Path, name: str, size: int) -> tuple[pathlib.Path, str]:
    path = tmp_path / name
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _row(driver) -> dict:
    rows = driver.execute_script(ROWS_JS)
    return rows[-1] if rows else {}


def test_a_lost_connection_resumes_where_the_server_stopped(server: Server, browser, tmp_path: pathlib.Path) -> None:
    path, digest = _file(tmp_path, "flaky.bin", 24 * MiB)
    browser.get(f"http://{HOST}:{server.port}/")
    _throttle(browser, 4 * MiB)
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    assert _wait(lambda: server.partial_size() >= 4 * MiB, 20), "the upload got going"
    server.kill()
    kept = server.partial_size()
    assert _wait(lambda: _row(browser).get("status") == "Connection lost, resuming\u2026", 10), _row(browser)
    assert _row(browser).get("state") == "retrying"
    server.start()  # same directory, same port
    _throttle(browser, None)
    assert _wait(lambda: _row(browser).get("state") == "done", 60), _row(browser)
    assert _row(browser)["storedName"] == "flaky.bin"
    stored = server.directory / "flaky.bin"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(server.directory)) == ["flaky.bin"]
    # The restarted server got only what it did not have.
    sent = sum(entry.get("bytes", 0) for entry in server.access() if entry["method"] == "PATCH")
    assert sent == 24 * MiB - kept, (sent, kept)


def test_a_reload_resumes_the_same_file(server: Server, browser, tmp_path: pathlib.Path) -> None:
    path, digest = _file(tmp_path, "reloaded.bin", 20 * MiB)
    page = f"http://{HOST}:{server.port}/"
    browser.get(page)
    _throttle(browser, 4 * MiB)
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    assert _wait(lambda: server.partial_size() >= 4 * MiB, 20)
    browser.get(page)  # the upload's request ends with the page
    assert _wait(lambda: any(e.get("ended") for e in server.access() if e["method"] == "PATCH"), 10)
    kept = server.partial_size()
    assert 0 < kept < 20 * MiB
    _throttle(browser, None)
    before = len(server.access())
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    assert _wait(lambda: _row(browser).get("state") == "done", 60), _row(browser)
    assert hashlib.sha256((server.directory / "reloaded.bin").read_bytes()).hexdigest() == digest
    after = server.access()[before:]
    assert not any(e["method"] == "POST" for e in after), "no new upload: the stored URL was used"
    assert sum(e.get("bytes", 0) for e in after if e["method"] == "PATCH") == 20 * MiB - kept


def test_cancel_ends_the_upload_on_the_server(server: Server, browser, tmp_path: pathlib.Path) -> None:
    path, _ = _file(tmp_path, "cancelled.bin", 16 * MiB)
    browser.get(f"http://{HOST}:{server.port}/")
    _throttle(browser, 2 * MiB)
    browser.find_element(By.ID, "file-input").send_keys(str(path))
    assert _wait(lambda: server.partial_size() > 0, 20)
    browser.find_element(By.CSS_SELECTOR, "#files .file button.cancel").click()
    assert _wait(lambda: _row(browser).get("state") == "cancelled", 10), _row(browser)
    assert _wait(lambda: os.listdir(server.directory) == [], 10), os.listdir(server.directory)
    assert any(e["method"] == "DELETE" and e.get("status") == 204 for e in server.access())
    assert browser.execute_script("return Object.keys(localStorage).filter((k) => k.startsWith('upload-tus:'))") == []
