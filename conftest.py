"""Shared pytest fixtures of the Python suites: hardening/, browser/ and proxy/.

    python3 -m pytest hardening browser proxy -ra        # everything (builds the binary once)
    python3 -m pytest hardening -m "not slow"            # the quick part
    python3 -m pytest hardening/test_fuzz.py --seed 7 --case 1234   # replay one fuzz case
    python3 -m pytest --binary PATH -m faults            # a given binary, one suite

Fixtures (each one helper in hardening/common.py, stopped and cleaned up after the test):
  binary     the release upload-server: --binary / $UPLOAD_SERVER_BIN, or built once under
             the Swift build lock (never at collection time)
  options    every command-line option below (--seed, --staging, --cases, ...)
  workspace  a temporary folder (common.Workspace), removed after the test (--keep keeps it)
  server     server(args, upload_dir=None, name=...) starts the binary on a free loopback
             port with its log captured; any left running is stopped and must exit 0
  tmpfs      tmpfs(name, size) mounts a tmpfs in the workspace; skips without root
  nginx      nginx(http) is Debian's nginx in the foreground with its own prefix; skips
             when nginx is not installed
  netns      netns(count) makes network namespaces joined by veth pairs; skips without
             root or where ip netns is not permitted
  browser    a headless chromium (common.Browser); skips without selenium, chromium or
             chromedriver
A test that calls common.REPORT.check(...) fails when any check failed (every failed
check is listed), and is skipped when it only skipped (REPORT.skip) with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "hardening"))

import common  # noqa: E402  (after the path)
from common import REPORT, Browser, Nginx, Server, Workspace  # noqa: E402

# Sizes and counts of the suites: (option, type, environment twin, default, help).
SIZES = [
    ("--seed", int, "HARDEN_SEED", 20261129, "random seed for data and fuzz cases"),
    ("--load-idle", int, "HARDEN_LOAD_IDLE", 800, "load: idle connections"),
    ("--load-uploads", int, "HARDEN_LOAD_UPLOADS", 200, "load: uploads"),
    ("--load-size", int, "HARDEN_LOAD_SIZE", 1 << 20, "load: bytes per upload"),
    ("--load-timeout", int, "HARDEN_LOAD_TIMEOUT", 3, "load: the server's --timeout"),
    ("--soak-uploads", int, "HARDEN_SOAK_UPLOADS", 20000, "soak: uploads"),
    ("--soak-clients", int, "HARDEN_SOAK_CLIENTS", 64, "soak: keep-alive clients"),
    ("--soak-warmup", int, "HARDEN_SOAK_WARMUP", 1000, "soak: warm-up uploads"),
    ("--soak-rss-slack-mib", float, "HARDEN_SOAK_RSS_SLACK_MIB", 8.0, "soak: RSS growth allowed"),
    ("--soak-probe-requests", int, "HARDEN_SOAK_PROBE_REQUESTS", 30000,
     "soak: GET /healthz after the uploads, for small per-request leaks (0: none)"),
    ("--soak-max-seconds", int, "HARDEN_SOAK_MAX_SECONDS", 600, "soak: stops sending after this long (and fails)"),
    ("--cases", int, "HARDEN_FUZZ_CASES", 2000, "fuzz: cases"),
    ("--fuzz-workers", int, "HARDEN_FUZZ_WORKERS", 12, "fuzz: cases at a time"),
    ("--slowloris", int, "HARDEN_SLOWLORIS", 500, "slow clients: slowloris connections"),
    ("--slow-bodies", int, "HARDEN_SLOW_BODIES", 100, "slow clients: slow uploads"),
    ("--slow-seconds", int, "HARDEN_SLOW_SECONDS", 14, "slow clients: seconds"),
    ("--proxy-size-mib", int, "PROXY_SIZE_MIB", 1024, "proxy: the upload streamed through nginx"),
    ("--proxy-rounds", int, "PROXY_ROUNDS", 20, "proxy: rounds of each 413 attack"),
]

# A marker per suite, from its file: hardening/test_<suite>.py, browser/, proxy/.
SUITE_MARKERS = {"load", "soak", "faults", "fuzz", "slowclients", "limits", "multi", "gluster", "tus", "library",
                 "mutants", "browser", "proxy"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("upload-server", "upload-server suites (environment twins in brackets)")
    group.addoption("--binary", default=os.environ.get("UPLOAD_SERVER_BIN"),
                    help="the upload-server binary [UPLOAD_SERVER_BIN]; default: build the release product")
    group.addoption("--keep", action="store_true", help="keep the temporary folders")
    group.addoption("--staging", choices=["auto", "named", "both"], default=os.environ.get("HARDEN_STAGING", "both"),
                    help="the server's --staging: both (default) runs the clean-up suites (faults, fuzz, multi) "
                         "in auto and named, the others in auto [HARDEN_STAGING]")
    group.addoption("--case", type=int, default=None, help="fuzz: run only this case (with --seed), print it")
    group.addoption("--fuzz-artifacts", default=os.environ.get("HARDEN_FUZZ_ARTIFACTS", ""),
                    help="fuzz: folder for the requests of failing cases (default: a temp folder, kept on failure)")
    group.addoption("--screenshot", action="store_true", help="browser: save docs/screenshot.png")
    for flag, kind, env, default, text in SIZES:
        value = os.environ.get(env)
        group.addoption(flag, type=kind, default=kind(value) if value not in (None, "") else default,
                        help=f"{text} [{env}, default {default}]")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path
        suite = path.stem.removeprefix("test_") if path.parent.name == "hardening" else path.parent.name
        if suite in SUITE_MARKERS:
            item.add_marker(getattr(pytest.mark, suite))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`staging` is every mode --staging asks for: both for the modules with
    BOTH_STAGINGS = True (they check clean-up), auto for the others."""
    if "staging" in metafunc.fixturenames:
        both = getattr(metafunc.module, "BOTH_STAGINGS", False)
        metafunc.parametrize("staging", common.stagings(metafunc.config.option, both))


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("root")
    if marker is not None and os.geteuid() != 0:
        pytest.skip(f"needs root: {marker.args[0] if marker.args else 'capabilities'}")
    REPORT.reset(item.name.removeprefix("test_"))


_PARTLY_SKIPPED: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    result = yield
    if REPORT.failures:
        pytest.fail(f"{len(REPORT.failures)} of {REPORT.passed + len(REPORT.failures)} checks failed:\n  "
                    + "\n  ".join(REPORT.failures), pytrace=False)
    if REPORT.skips:
        if not REPORT.passed:
            pytest.skip("; ".join(REPORT.skips))
        _PARTLY_SKIPPED.extend(f"{pyfuncitem.nodeid}: {reason}" for reason in REPORT.skips)
    return result


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _PARTLY_SKIPPED:
        terminalreporter.section("checks skipped inside passing tests")
        for line in _PARTLY_SKIPPED:
            terminalreporter.write_line(line)
    if REPORT.figures:
        terminalreporter.section("figures")
        for key, value in REPORT.figures.items():
            terminalreporter.write_line(f"{key}: {value}")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def options(pytestconfig: pytest.Config):
    return pytestconfig.option


@pytest.fixture(scope="session")
def binary(pytestconfig: pytest.Config) -> str:
    given = pytestconfig.option.binary
    if given:
        path = os.path.abspath(given)
        if not os.access(path, os.X_OK):
            pytest.fail(f"not an executable: {path}", pytrace=False)
        return path
    lock = os.environ.get("SWIFT_BUILD_LOCK", "/tmp/swift-build.lock")
    build = ["scripts/swift", "build", "-c", "release", "--product", "upload-server"]
    done = subprocess.run(["flock", "-w", "3600", lock, *build], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"release build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}", pytrace=False)
    folder = subprocess.run(["flock", "-w", "3600", lock, *build, "--show-bin-path"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    return os.path.join(folder, "upload-server")


@pytest.fixture
def workspace(request: pytest.FixtureRequest, options):
    label = request.node.path.stem.removeprefix("test_")
    ws = Workspace(label, keep=options.keep)
    yield ws
    ws.cleanup()


@pytest.fixture
def tmpfs(workspace: Workspace):
    """tmpfs(name, size) -> the path of a fresh tmpfs in the workspace (unmounted after)."""
    def mount(name: str, size: str) -> str:
        path, why = workspace.mount_tmpfs(name, size)
        if path is None:
            pytest.skip(why)
        return path
    return mount


@pytest.fixture
def server(binary: str, workspace: Workspace):
    """server(args, upload_dir=None, name="server", env=None) -> a started common.Server.
    After the test, every server the test started and left running is stopped with
    SIGTERM and must exit 0."""
    first = len(common.STARTED)

    def start(args=(), upload_dir: str | None = None, name: str = "server", env: dict | None = None) -> Server:
        folder = upload_dir or workspace.path(f"{name}-up")
        return Server(binary, folder, list(args), env=env, workdir=workspace.root, name=name).start()

    yield start
    bad = []
    for started in common.STARTED[first:]:
        if started.alive():
            code = started.stop()
            if code != 0:
                bad.append(f"{started.log_path}: exit {code} on SIGTERM; stderr {started.stderr()[-500:]!r}")
    del common.STARTED[first:]
    if bad:
        pytest.fail("a server did not stop cleanly: " + "; ".join(bad), pytrace=False)


@pytest.fixture
def nginx(workspace: Workspace):
    """nginx(http, name="nginx") -> a common.Nginx (not started: `.start()`, or
    `.config_test()` first) with its prefix in the workspace; stopped after the test."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    made: list[Nginx] = []

    def make(http: str = "", name: str = "nginx") -> Nginx:
        made.append(Nginx(workspace.path(name), http))
        return made[-1]

    yield make
    for one in made:
        one.stop()


@pytest.fixture
def netns():
    """netns(count) -> created netns.Namespaces (veth pairs in 10.231.0.0/24); removed after."""
    from netns import Namespaces

    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("ip is not installed (apt-get install iproute2)")
    made: list[Namespaces] = []

    def create(count: int) -> Namespaces:
        namespaces = Namespaces(count)
        made.append(namespaces)
        try:
            namespaces.create()
        except RuntimeError as error:
            namespaces.cleanup()
            if "Operation not permitted" in str(error) or "Permission denied" in str(error):
                pytest.skip(f"network namespaces are not permitted here: {error}")
            raise
        return namespaces

    yield create
    for namespaces in made:
        namespaces.cleanup()


@pytest.fixture
def browser():
    """A started common.Browser (headless chromium), quit after the test."""
    why = common.browser_missing()
    if why is not None:
        pytest.skip(why)
    one = Browser()
    yield one
    one.quit()
