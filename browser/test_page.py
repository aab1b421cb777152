"""The upload page (GET /) in a real browser: headless Debian chromium driven by selenium.

    python3 -m pytest browser [--binary PATH] [--screenshot]

Needs chromium, chromium-driver (Debian) and selenium (PyPI; scripts/test installs
them for its browser stage); skipped with the reason when one is missing. Loopback
only: the servers listen on 127.0.0.1, and chromium runs with its background
networking off. (Whether WebAssets.swift matches web/ is scripts/test's
`web assets` stage, `scripts/web-assets --check`.)
"""

from __future__ import annotations

import os
import random
import re
import time
import urllib.parse

from common import FINAL, HOST, REPORT, Browser, MiB, Server, file_sha256, make_file, request, stored, temp_files

try:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # still collected: the browser fixture skips
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LIMIT = 64 * MiB
TOKEN = "browser-test-token"
# Not no-referrer: under it a browser sends `Origin: null` with the plain form's
# POST, which the server's cross-origin check must refuse.
REFERRER_POLICY = "same-origin"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# Throttled so that a 40 MiB upload takes several seconds: long enough to watch its bar.
SLOW_BYTES_PER_SECOND = 6 * MiB

# Drops files made in the page on the drop zone, as a drag from the desktop would.
DROP_JS = """
const [names, text] = arguments;
const transfer = new DataTransfer();
for (const name of names) transfer.items.add(new File([text], name, { type: 'text/plain' }));
const zone = document.getElementById('drop-zone');
zone.dispatchEvent(new DragEvent('dragenter', { dataTransfer: transfer, bubbles: true, cancelable: true }));
const highlighted = zone.classList.contains('dragging');
zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }));
zone.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
return highlighted;
"""

# Controls without an accessible name (a label, aria-label or text).
UNLABELLED_JS = """
return Array.from(document.querySelectorAll('input, button, progress, select, textarea'))
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
  .map((el) => el.outerHTML.slice(0, 80));
"""

def limit_shown(text: str) -> bool:
    """The page states the limit as the server words it: `64 MiB` or `64MiB`."""
    return text.replace(" ", "") == "64MiB"


def check(name: str, ok: bool, detail: str = "") -> bool:
    """One check of the test (common.REPORT): the detail only on failure."""
    return REPORT.check(name, ok, "" if ok else detail)


def sparse_file(path: str, size: int) -> str:
    """For files whose bytes never reach the disk: only their size matters."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def puts(server: Server, name: str) -> list[int | None]:
    """The statuses of the server's access-log lines for PUT /upload/<name>."""
    paths = {"/upload/" + name, "/upload/" + urllib.parse.quote(name)}
    return [e.get("status") for e in server.access_log() if e.get("method") == "PUT" and e.get("path") in paths]


def tus_creations(server: Server) -> list[int | None]:
    """The statuses of POST /tus/ (files over 8 MiB go up resumably, docs/resumable.md)."""
    return [e.get("status") for e in server.access_log() if e.get("method") == "POST" and e.get("path") == "/tus/"]


# --------------------------------------------------------------------------- checks

def headers(port: int) -> None:
    for path, media in (("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")):
        response = request(port, "GET", path)
        h = {k.lower(): v for k, v in response.headers.items()}
        check(f"GET {path}: 200 {media} with the CSP, nosniff and Referrer-Policy {REFERRER_POLICY}",
              response.status == 200 and h.get("content-type", "").startswith(media)
              and h.get("content-security-policy") == CSP and h.get("x-content-type-options") == "nosniff"
              and h.get("referrer-policy") == REFERRER_POLICY,
              f"{response.status} {h}")
        if path == "/":
            body = response.body.decode()
            shown = re.search(r'id="limit-text">([^<]*)<', body)
            check("GET /: placeholders filled in", "{{" not in body
                  and f'data-max-upload-size="{LIMIT}"' in body and 'data-token-required="false"' in body
                  and shown is not None and limit_shown(shown[1]), body[:600])


def three_at_once(browser: Browser, files: dict[str, str], upload_dir: str, big: str) -> None:
    driver = browser.driver
    check("the size limit is shown before anything is sent",
          limit_shown(driver.find_element(By.ID, "limit-text").text)
          and not browser.rows(), driver.find_element(By.ID, "limit-text").text)
    check("no token is asked for", not driver.find_element(By.ID, "token-form").is_displayed())

    browser.throttle(SLOW_BYTES_PER_SECOND)
    browser.pick(*files.values())
    samples: list[float] = []
    texts: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rows = browser.rows()
        row = next((r for r in rows if r["name"] == big), None)
        if row and row["state"] == "uploading":
            samples.append(row["value"] / row["max"])
            texts.add(row["status"])
        if len(rows) == 3 and all(r["state"] in FINAL for r in rows):
            break
        time.sleep(0.1)
    browser.throttle(None)
    between = sorted({round(s, 3) for s in samples if 0 < s < 1})
    REPORT.info(f"{len(samples)} samples of the large file's bar, {len(between)} between 0 and 1")
    check("the large file's bar moved through intermediate values", len(between) >= 3
          and samples == sorted(samples), f"{len(samples)} samples, {len(between)} between 0 and 1: {between[:12]}")
    check("its text gives bytes and percent while it runs",
          any(t.endswith(" %)") and " MiB of 40 MiB (" in t for t in texts), sorted(texts)[:4])

    rows = {r["name"]: r for r in browser.rows()}
    for name, path in files.items():
        row = rows.get(name, {})
        size = os.path.getsize(path)
        check(f"result: {name!r} stored as itself, {size} bytes",
              row.get("state") == "done" and row.get("storedName") == name and row.get("storedSize") == size
              and name in row.get("status", "") and not row.get("cancellable"), str(row))
        on_disk = os.path.join(upload_dir, name)
        check(f"disk: {name!r} has the same sha256",
              os.path.isfile(on_disk) and file_sha256(on_disk) == file_sha256(path))
    check("disk: nothing else stored, no temporary file left",
          stored(upload_dir) == sorted(files) and not temp_files(upload_dir), str(os.listdir(upload_dir)))


def too_large(browser: Browser, server: Server, upload_dir: str, path: str) -> None:
    driver = browser.driver
    name = os.path.basename(path)
    first = len(browser.rows())
    browser.pick(path)
    row = browser.wait_row(first, 10)
    message = f"Too large: the limit is {driver.find_element(By.ID, 'limit-text').text}."
    check("client side: a file over the limit is refused with the limit", row.get("state") == "error"
          and row.get("status") == message, str(row))
    time.sleep(0.5)
    browser.drain_logs()
    check("client side: ... without a request", not any(name in urllib.parse.unquote(u) for u in browser.requests)
          and not puts(server, name), str(puts(server, name)))

    # The server's own refusal: the page is told there is no limit, so it sends the file.
    driver.execute_script("document.getElementById('app').dataset.maxUploadSize = '0';")
    browser.pick(path)
    row = browser.wait_row(first + 1, 60)
    driver.execute_script(f"document.getElementById('app').dataset.maxUploadSize = '{LIMIT}';")
    check("server side: 413 is shown as too large, with the limit",
          row.get("state") == "error" and row.get("status") == message
          and 413 in puts(server, name) + tus_creations(server),
          f"{row} statuses {puts(server, name) + tus_creations(server)}")
    check("server side: nothing stored", name not in stored(upload_dir) and not temp_files(upload_dir))


def parallel_and_cancel(browser: Browser, upload_dir: str, paths: list[str]) -> None:
    first = len(browser.rows())
    browser.throttle(MiB)
    browser.pick(*paths)

    def three_running() -> bool:
        rows = browser.rows()[first:]
        return len(rows) == 4 and sum(r["state"] == "uploading" and r["value"] > 0 for r in rows) == 3

    running = browser.wait_for(three_running, 20)
    rows = browser.rows()[first:]
    check("three at a time: three files upload, the fourth waits",
          running and [r["state"] for r in rows].count("queued") == 1, str(rows))
    waiting = next((i for i, r in enumerate(rows) if r["state"] == "queued"), 3)
    for index in [waiting] + [i for i in range(4) if i != waiting]:
        browser.driver.find_element(By.CSS_SELECTOR, f"#files .file:nth-child({first + index + 1}) button.cancel").click()
    rows = browser.wait_rows(first, 4, 10)
    browser.throttle(None)
    check("cancel: files in progress and waiting stop and say so",
          all(r["state"] == "cancelled" and r["status"] == "Cancelled." for r in rows), str(rows))
    browser.drain_logs()
    check("cancel: the waiting file was never sent",
          not any(rows[waiting]["name"] in urllib.parse.unquote(u) for u in browser.requests))
    check("cancel: nothing stored, no temporary file left",
          browser.wait_for(lambda: not set(map(os.path.basename, paths)) & set(stored(upload_dir))
                   and not temp_files(upload_dir), 10),
          str(os.listdir(upload_dir)))


def drop(browser: Browser, upload_dir: str) -> None:
    first = len(browser.rows())
    text = "dropped on the page\n"
    highlighted = browser.driver.execute_script(DROP_JS, ["dropped one.txt", "dropped two.txt"], text)
    rows = browser.wait_rows(first, 2, 20)
    check("drag and drop: the drop zone lights up, both files are stored", highlighted
          and [r.get("storedName") for r in rows] == ["dropped one.txt", "dropped two.txt"], str(rows))
    for name in ("dropped one.txt", "dropped two.txt"):
        with open(os.path.join(upload_dir, name), "rb") as f:
            check(f"drag and drop: {name!r} holds what was dropped", f.read() == text.encode())


def keyboard(browser: Browser) -> None:
    driver = browser.driver
    driver.refresh()
    reached = False
    for _ in range(8):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element.get_attribute("id") == "file-input":
            reached = True
            break
    outline = driver.execute_script(
        "const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth];")
    check("keyboard: Tab reaches the file picker, with a visible focus ring",
          reached and outline[0] != "none" and outline[1] != "0px", str(outline))
    unlabelled = driver.execute_script(UNLABELLED_JS)
    check("every control has a label", not unlabelled, str(unlabelled))


def phone(browser: Browser) -> None:
    driver = browser.driver
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    widths = driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " document.getElementById('file-input').getBoundingClientRect().right];")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    check("phone-sized screen (360 px): no sideways scrolling, the picker fits",
          widths[0] <= widths[1] and widths[2] <= widths[1], str(widths))


def unreachable(browser: Browser, server: Server, path: str) -> None:
    first = len(browser.rows())
    server.stop()
    browser.pick(path)
    row = browser.wait_row(first, 20)
    check("a stopped server is reported as unreachable",
          row.get("state") == "error" and row.get("status") == "Server unreachable.", str(row))


def requests_and_console(browser: Browser, origins: list[str]) -> None:
    browser.drain_logs()
    others = [u for u in browser.requests
              if not (u.startswith("data:") or any(u.startswith(origin + "/") for origin in origins))]
    check("no request to any other origin", bool(browser.requests) and not others,
          f"{len(browser.requests)} requests; others: {others[:5]}")
    violations = [m for m in browser.console if "Content Security Policy" in m]
    check("no Content-Security-Policy violation", not violations, str(violations[:3]))
    errors = [m for m in browser.console if "Uncaught" in m]
    check("no script error", not errors, str(errors[:3]))


def token_mode(browser: Browser, server: Server, upload_dir: str, path: str) -> None:
    driver = browser.driver
    name = os.path.basename(path)
    driver.get(f"http://{HOST}:{server.port}/")
    form = driver.find_element(By.ID, "token-form")
    check("token: the page asks for the token, the limit is shown", form.is_displayed()
          and driver.switch_to.active_element.get_attribute("id") == "token-input"
          and limit_shown(driver.find_element(By.ID, "limit-text").text))

    browser.pick(path)
    row = browser.wait_row(0, 5, states=("token",))
    time.sleep(0.3)
    check("token: a file picked first waits for the token, unsent",
          row.get("state") == "token" and not puts(server, name), f"{row} {puts(server, name)}")

    field = driver.find_element(By.ID, "token-input")
    field.send_keys("wrong-token", Keys.ENTER)
    browser.wait_for(lambda: 401 in puts(server, name) and form.is_displayed(), 10)
    message = driver.find_element(By.ID, "token-message").text
    check("token: a wrong token is refused and asked for again",
          401 in puts(server, name) and form.is_displayed() and "not accepted" in message
          and browser.rows()[0]["state"] == "token", f"{message!r} {browser.rows()}")

    driver.find_element(By.ID, "token-input").send_keys(TOKEN, Keys.ENTER)
    row = browser.wait_row(0, 20)
    on_disk = os.path.join(upload_dir, name)
    check("token: with the right token the waiting file is sent and stored", row.get("state") == "done"
          and os.path.isfile(on_disk) and file_sha256(on_disk) == file_sha256(path), str(row))
    check("token: kept in sessionStorage (this tab only)",
          driver.execute_script("return sessionStorage.getItem('upload-token');") == TOKEN
          and driver.execute_script("return localStorage.length;") == 0)

    driver.refresh()
    check("token: after a reload it is not asked again", not driver.find_element(By.ID, "token-form").is_displayed()
          and driver.find_element(By.ID, "token-set").is_displayed())
    browser.pick(path)
    row = browser.wait_row(0, 20)
    check("token: uploads keep working; a name that exists is reported (--on-conflict reject)",
          row.get("state") == "error" and row.get("status") == "A file with this name already exists."
          and puts(server, name)[-1] == 409, f"{row} {puts(server, name)}")


def without_javascript(port: int, upload_dir: str, path: str) -> None:
    browser = Browser(scripts=False)
    try:
        driver = browser.driver
        driver.get(f"http://{HOST}:{port}/")
        driver.find_element(By.ID, "file-input").send_keys(path)
        driver.find_element(By.ID, "upload-button").click()
        browser.wait_for(lambda: driver.current_url.endswith("/upload")
                 and driver.execute_script("return document.readyState;") == "complete", 20)
        text = driver.find_element(By.TAG_NAME, "body").text
        name = os.path.basename(path)
        on_disk = os.path.join(upload_dir, name)
        check("without JavaScript the plain form uploads", name in text and os.path.isfile(on_disk)
              and file_sha256(on_disk) == file_sha256(path), text[:200])
    finally:
        browser.quit()


# --------------------------------------------------------------------------- the test

def test_upload_page(browser, server, workspace, options):
    rng = random.Random(20261201)
    sources = workspace.path("sources")
    os.makedirs(sources)
    files = {
        "résumé final.txt": make_file(os.path.join(sources, "résumé final.txt"), 3000, rng),
        "photo.jpg": make_file(os.path.join(sources, "photo.jpg"), 700 * 1024, rng),
        "archive.tar": make_file(os.path.join(sources, "archive.tar"), 40 * MiB, rng),
    }
    over = sparse_file(os.path.join(sources, "too-large.bin"), LIMIT + 1)
    cancelled = [sparse_file(os.path.join(sources, f"cancelled-{n}.bin"), 16 * MiB) for n in range(1, 5)]
    plain = make_file(os.path.join(sources, "no script.txt"), 2000, rng)
    late = make_file(os.path.join(sources, "late.txt"), 100, rng)

    upload_dir = workspace.path("upload")
    main: Server = server(["--max-upload-size", "64MiB"], upload_dir=upload_dir)
    origin = f"http://{HOST}:{main.port}"
    headers(main.port)
    browser.driver.get(origin + "/")
    three_at_once(browser, files, upload_dir, "archive.tar")
    if options.screenshot:
        shot = os.path.join(ROOT, "docs", "screenshot.png")
        os.makedirs(os.path.dirname(shot), exist_ok=True)
        browser.driver.save_screenshot(shot)
        REPORT.info(f"screenshot: {shot}")
    too_large(browser, main, upload_dir, over)
    parallel_and_cancel(browser, upload_dir, cancelled)
    drop(browser, upload_dir)
    phone(browser)
    keyboard(browser)
    without_javascript(main.port, upload_dir, plain)
    unreachable(browser, main, late)

    token_dir = workspace.path("upload-token")
    token_server = server(["--max-upload-size", "64MiB", "--token", TOKEN, "--on-conflict", "reject"],
                          upload_dir=token_dir, name="token-server")
    token_mode(browser, token_server, token_dir, files["résumé final.txt"])
    requests_and_console(browser, [origin, f"http://{HOST}:{token_server.port}"])
