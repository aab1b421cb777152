#!/usr/bin/env python3
"""`scripts/harden sanitizers`: the Swift test suites under AddressSanitizer and
ThreadSanitizer, then the hardening suites against the sanitized server.

For each sanitizer:
  1. `swift test --sanitize=S --scratch-path .build-asan|.build-tsan`, holding the
     shared build lock for the whole command (it builds, then runs the tests);
  2. the faults, fuzz (500 cases), load and slow-clients suites (pytest), with reduced sizes, against
     the sanitized debug binary that step 1 built, with the sanitizer writing its
     reports to files (log_path) so that none is lost in a pipe.
Clean means: swift test passed, no sanitizer report from the tests' output, and no
report file from the server. Timing checks of the suites may fail under the
sanitizers' slowdown; they are shown but do not decide "clean".

    scripts/harden sanitizers [address] [thread]
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOCK = os.environ.get("SWIFT_BUILD_LOCK", "/tmp/swift-build.lock")
SUPPRESSIONS = os.path.join(HERE, "tsan.supp")
ASAN_SUPPRESSIONS = os.path.join(HERE, "asan.supp")
SANITIZERS = {"address": ".build-asan", "thread": ".build-tsan"}
REPORT_PATTERN = re.compile(r"(ERROR: AddressSanitizer|WARNING: ThreadSanitizer|ERROR: LeakSanitizer|"
                            r"SUMMARY: (Address|Thread|Leak|UndefinedBehavior)Sanitizer|runtime error:)")
HARNESS_RUNS = [
    ["faults"],
    ["fuzz", "--cases", "500", "--fuzz-workers", "8"],
    ["load", "--load-idle", "200", "--load-uploads", "50"],
    ["slowclients", "--slowloris", "100", "--slow-bodies", "20", "--slow-seconds", "8"],
]


def options_for(sanitizer: str, log_dir: str | None) -> dict[str, str]:
    env = {}
    if sanitizer == "address":
        value = "detect_leaks=0:abort_on_error=0"
        if os.path.exists(ASAN_SUPPRESSIONS):
            value += f":suppressions={ASAN_SUPPRESSIONS}"
        if log_dir:
            value += f":log_path={log_dir}/asan"
        env["ASAN_OPTIONS"] = value
    else:
        value = "halt_on_error=0:second_deadlock_stack=1:print_suppressions=0"
        if os.path.exists(SUPPRESSIONS):
            value += f":suppressions={SUPPRESSIONS}"
        if log_dir:
            value += f":log_path={log_dir}/tsan"
        env["TSAN_OPTIONS"] = value
    return env


def run_swift_test(sanitizer: str, work: str) -> tuple[bool, str, list[str], float]:
    scratch = os.path.join(REPO, SANITIZERS[sanitizer])
    log_path = os.path.join(work, f"swift-test-{sanitizer}.log")
    env = dict(os.environ)
    env.update(options_for(sanitizer, None))
    command = ["flock", "-w", "3600", LOCK, os.path.join(REPO, "scripts", "swift"), "test", f"--sanitize={sanitizer}",
               "--scratch-path", scratch]
    print(f"    $ {' '.join(command)}   (log: {log_path})", flush=True)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        try:
            result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    timeout=int(os.environ.get("HARDEN_SANITIZER_TIMEOUT", "5400")))
            code = result.returncode
        except subprocess.TimeoutExpired:
            code = -1
    seconds = time.monotonic() - t0
    with open(log_path, errors="replace") as f:
        text = f.read()
    reports = [line for line in text.splitlines() if REPORT_PATTERN.search(line)]
    summary = [line for line in text.splitlines() if re.search(r"Test run with \d+ tests|Executed \d+ tests", line)]
    return code == 0, (summary[-1].strip() if summary else f"exit {code}"), reports, seconds


def run_harness(sanitizer: str, work: str) -> tuple[list[str], list[str], str]:
    scratch = os.path.join(REPO, SANITIZERS[sanitizer])
    binary = os.path.join(scratch, "debug", "upload-server")
    if not os.access(binary, os.X_OK):
        return [], [f"no sanitized binary at {binary}"], ""
    log_dir = os.path.join(work, f"{sanitizer}-reports")
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ)
    env.update(options_for(sanitizer, log_dir))
    failures: list[str] = []
    summaries = []
    for arguments in HARNESS_RUNS:
        log_path = os.path.join(work, f"harness-{sanitizer}-{arguments[0]}.log")
        command = [sys.executable, "-m", "pytest", f"hardening/test_{arguments[0]}.py", *arguments[1:],
                   "--binary", binary, "-s", "-q", "-rf"]
        with open(log_path, "w") as log:
            try:
                subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=1200)
            except subprocess.TimeoutExpired:
                failures.append(f"{arguments[0]}: timed out")
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
        failures += [f"{arguments[0]}: {line}" for line in lines if line.startswith(("FAIL ", "FAILED "))]
        summary = next((l.strip("= ") for l in reversed(lines) if re.search(r"\d+ (passed|failed)", l)), "?")
        summaries.append(f"{arguments[0]}: {summary}")
    reports = []
    for path in sorted(glob.glob(os.path.join(log_dir, "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        first = next((l for l in text.splitlines() if REPORT_PATTERN.search(l)), None)
        if first is not None:
            reports.append(f"{path}: {first.strip()}")
    return reports, failures, "; ".join(summaries)


def main(argv: list[str]) -> int:
    wanted = argv or list(SANITIZERS)
    for name in wanted:
        if name not in SANITIZERS:
            print(f"unknown sanitizer {name!r}; choose from {', '.join(SANITIZERS)}", file=sys.stderr)
            return 2
    work = os.environ.get("HARDEN_SANITIZER_DIR") or tempfile.mkdtemp(prefix="harden-sanitizers-")
    os.makedirs(work, exist_ok=True)
    print(f"sanitizers {' '.join(wanted)}; logs and reports in {work}", flush=True)
    passed = failed = 0
    verdicts = []
    for sanitizer in wanted:
        print(f"==> {sanitizer}: swift test", flush=True)
        ok, summary, reports, seconds = run_swift_test(sanitizer, work)
        clean_tests = ok and not reports
        print(f"{'PASS' if clean_tests else 'FAIL'}  sanitizers: swift test --sanitize={sanitizer} -- {summary}; "
              f"{len(reports)} sanitizer report lines; {seconds:.0f}s", flush=True)
        for line in reports[:10]:
            print(f"        {line[:200]}")
        print(f"==> {sanitizer}: hardening suites against the sanitized server", flush=True)
        t0 = time.monotonic()
        server_reports, failures, summaries = run_harness(sanitizer, work)
        print(f"{'PASS' if not server_reports else 'FAIL'}  sanitizers: {sanitizer} reports from the server under "
              f"the hardening suites -- {len(server_reports)} report files; {summaries}; "
              f"{time.monotonic() - t0:.0f}s", flush=True)
        for line in server_reports[:10]:
            print(f"        {line[:220]}")
        if failures:
            print(f"      ({len(failures)} suite checks failed under {sanitizer}; timing checks may fail from the "
                  f"slowdown alone:)")
            for line in failures[:10]:
                print(f"        {line[:220]}")
        for verdict in (clean_tests, not server_reports):
            passed += verdict
            failed += not verdict
        verdicts.append(f"{sanitizer}: {'clean' if clean_tests and not server_reports else 'NOT clean'}")
    print()
    print(f"sanitizers: {', '.join(verdicts)} ({passed} passed, {failed} failed)", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
