#!/usr/bin/env python3
"""Shows that each hardening suite catches a deliberately broken server.

Copies the sources to a scratch directory (never touching the repository), injects
one bug at a time, builds the release binary there (under the shared build lock,
with its own scratch path so that increments are cheap), runs the suites that should
catch it through pytest and expects checks to FAIL that pass on the unchanged copy.
Prints `mutants: N caught, M missed, K broken`.

Each mutant is anchored on a pattern that must match exactly once in its file. One
that matches nothing (or twice) after a refactor is BROKEN: a failure, never a quiet
miss. hardening/test_mutants.py checks every anchor against the sources in the quick
test run (a second or so), so a refactor that moves one fails there first; update the
anchor here then.

    scripts/harden mutants                 # every mutant (about 15 minutes)
    scripts/harden mutants leak-fd no-sanitize
    scripts/harden mutants --list
    scripts/harden mutants --check         # only: does every anchor match exactly once?
    scripts/harden mutants --no-baseline leak-fd
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOCK = os.environ.get("SWIFT_BUILD_LOCK", "/tmp/swift-build.lock")
# What a build needs: the package, and scripts/swift with what it runs (the version
# header; our patched libmicrohttpd, whose cache the copies share with the repository).
BUILD_INPUTS = ("Package.swift", "Sources", "Tests", "scripts/swift", "scripts/version", "scripts/libmicrohttpd",
                "patches/libmicrohttpd")


@dataclasses.dataclass
class Mutant:
    name: str
    what: str
    path: str
    old: str
    new: str
    suites: list[str]
    args: list[str] = dataclasses.field(default_factory=list)
    # Build with this sanitizer (debug) and count its reports instead of failed checks.
    sanitizer: str | None = None
    # `old` is a regular expression (it must match exactly once).
    regex: bool = False

    def matches(self, text: str) -> int:
        """How many times the anchor matches `text` (it must be exactly once)."""
        return len(re.findall(self.old, text)) if self.regex else text.count(self.old)

    def apply(self, text: str) -> str | None:
        if self.matches(text) != 1:
            return None
        if self.regex:
            return re.sub(self.old, lambda _: self.new, text)
        return text.replace(self.old, self.new)


def broken_anchors(root: str = REPO) -> list[str]:
    """The mutants whose anchor does not match exactly once in the sources under `root`."""
    out = []
    for mutant in MUTANTS:
        try:
            with open(os.path.join(root, mutant.path)) as f:
                count = mutant.matches(f.read())
        except FileNotFoundError:
            out.append(f"{mutant.name}: {mutant.path} does not exist")
            continue
        if count != 1:
            out.append(f"{mutant.name}: its anchor matches {count} times in {mutant.path} (must be once): "
                       f"{mutant.old[:80]!r}")
    return out


MUTANTS = [
    Mutant("leak-staged-on-abort",
           "an upload whose client goes away never closes (nor, if named, removes) its file in progress",
           "Sources/UploadService/Upload.swift",
           "        end()\n        let removed = removeStagedFiles()\n        settings.log(.uploadAbandoned",
           "        end()\n        for part in parts { _ = Unmanaged.passRetained(part.file) }\n"
           "        parts = []; inFile = false; let removed = 0\n        settings.log(.uploadAbandoned",
           ["faults", "fuzz"], ["--cases", "600"]),
    Mutant("keep-temp-on-failure",
           "a failed upload (full disk, bad part) keeps its named temporary files",
           "Sources/UploadService/Upload.swift",
           "        self.failure = failure\n        let removed = removeStagedFiles()",
           "        self.failure = failure\n        inFile = false; let removed = 0",
           ["faults", "fuzz"], ["--cases", "600"]),
    Mutant("leak-fd",
           "a published file is never closed (one descriptor per stored file)",
           "Sources/Platform/StagedFile.swift",
           "        try syscall(\"close\", retrying: false) { Glibc.close(fd) }",
           "        try syscall(\"close\", retrying: false) { 0 }",
           ["soak"], ["--soak-uploads", "5000"]),
    Mutant("leak-memory",
           "the per-request state is never released (an unbalanced retain)",
           "Sources/MicroHTTPD/Daemon.swift",
           "let exchange = Unmanaged<Exchange>.fromOpaque(pointer).takeRetainedValue()",
           "let exchange = Unmanaged<Exchange>.fromOpaque(pointer).takeUnretainedValue()",
           ["soak"]),
    Mutant("no-sanitize",
           "filenames keep their directories (only control characters are dropped)",
           "Sources/UploadService/FileName.swift",
           r"let lastComponent = [^\n]*",
           "let lastComponent = text[...]",
           ["fuzz"], ["--cases", "600"], regex=True),
    Mutant("no-idle-timeout",
           "the idle timeout is not given to libmicrohttpd",
           "Sources/UploadService/Server.swift",
           "idleTimeoutSeconds: config.idleTimeoutSeconds",
           "idleTimeoutSeconds: 0",
           ["load", "slowclients"]),
    Mutant("blocking-handler",
           "the request path blocks a worker thread (100 ms per piece of body)",
           "Sources/UploadService/Upload.swift",
           "        guard inFile else { return true }\n        do {",
           "        guard inFile else { return true }\n        ProcessEnvironment.sleep(milliseconds: 100)\n"
           "        do {",
           ["slowclients", "load"]),
    Mutant("no-grace",
           "SIGTERM does not wait for the uploads in flight",
           "Sources/UploadService/Server.swift",
           "while application.uploadsInFlight > 0 && ProcessEnvironment.monotonicNanoseconds() < deadline {",
           "while false && ProcessEnvironment.monotonicNanoseconds() < deadline {",
           ["faults"]),
    Mutant("enospc-is-500",
           "a full disk is not recognised (answered 500 instead of 507)",
           "Sources/Platform/SystemError.swift",
           "public var isNoSpace: Bool { code == ENOSPC || code == EDQUOT }",
           "public var isNoSpace: Bool { false }",
           ["faults"]),
    Mutant("data-race",
           "an unsynchronised counter bumped by every worker thread (for the ThreadSanitizer run)",
           "Sources/UploadService/Upload.swift",
           "    func begin() { value.add(1, ordering: .relaxed) }",
           "    nonisolated(unsafe) static var racy = 0\n"
           "    func begin() { value.add(1, ordering: .relaxed); UploadsInFlight.racy += 1 }",
           ["load"], ["--load-idle", "50", "--load-uploads", "50"], sanitizer="thread"),
    Mutant("reservation-kept",
           "a finished part keeps the disk space reserved ahead of it",
           "Sources/Platform/StagedFile.swift",
           "        if reservedEnd > written {",
           "        if reservedEnd > written && false {",
           ["limits"]),
]


def copy_tree(destination: str, worktree: bool) -> str:
    """The sources to mutate: the last commit (default), or the working tree as it is
    now; never build products or git data. Returns what was copied."""
    if os.path.exists(destination):
        shutil.rmtree(destination)
    os.makedirs(destination)
    if not worktree:
        archive = subprocess.run(["git", "-C", REPO, "archive", "HEAD", *BUILD_INPUTS],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", destination], input=archive, check=True)
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        return f"commit {head}"
    ignore = shutil.ignore_patterns(".build", ".build-*", ".build_*", ".git", ".swiftpm", "*.o")
    for name in BUILD_INPUTS:
        source = os.path.join(REPO, name)
        target = os.path.join(destination, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=ignore)
        elif os.path.exists(source):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
    return "the working tree"


def build(source: str, scratch: str, log_path: str, sanitizer: str | None = None) -> tuple[bool, str]:
    flags = ["-c", "release"] if sanitizer is None else ["-c", "debug", f"--sanitize={sanitizer}"]
    if sanitizer:
        scratch += f"-{sanitizer}"
    swift = os.path.join(source, "scripts", "swift")
    command = ["flock", "-w", "3600", LOCK, swift, "build", *flags, "--scratch-path", scratch,
               "--product", "upload-server"]
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=source, stdout=log, stderr=subprocess.STDOUT, timeout=3600)
    if result.returncode != 0:
        return False, ""
    path = subprocess.run([swift, "build", *flags, "--scratch-path", scratch, "--show-bin-path"],
                          cwd=source, capture_output=True, text=True, timeout=300).stdout.strip()
    return True, os.path.join(path, "upload-server")


def check_name(line: str) -> str:
    """A FAIL line without its details and counts, to compare runs."""
    return re.sub(r"\d+", "N", line.split(" -- ")[0])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/harden mutants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--check", action="store_true",
                        help="only check that every anchor matches exactly once in the sources (no build)")
    parser.add_argument("--work", default=os.environ.get("HARDEN_MUTANTS_DIR", "/tmp/harden-mutants"),
                        help="scratch directory (default /tmp/harden-mutants)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the unmodified copy (by default it runs first: a mutant counts as caught "
                             "only by checks that pass on it)")
    parser.add_argument("--worktree", action="store_true",
                        help="mutate the working tree as it is now instead of the last commit")
    args = parser.parse_args(argv)
    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name:<22} {'+'.join(mutant.suites):<12} {mutant.what}")
        return 0
    broken = broken_anchors()
    for line in broken:
        print(f"BROKEN mutant {line}", flush=True)
    if args.check:
        print(f"mutants: {len(MUTANTS) - len(broken)} anchors match once, {len(broken)} broken")
        return 1 if broken else 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants {sorted(unknown)}; see --list")

    source = os.path.join(args.work, "src")
    scratch = os.path.join(args.work, "build")
    bins = os.path.join(args.work, "bin")
    logs = os.path.join(args.work, "logs")
    os.makedirs(bins, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    print(f"mutating {copy_tree(source, args.worktree)} in {source}", flush=True)
    pristine: dict[str, str] = {}
    for mutant in chosen:
        with open(os.path.join(source, mutant.path)) as f:
            pristine[mutant.path] = f.read()

    caught, missed = [], []
    plan = ([] if args.no_baseline else [None]) + chosen
    baseline_failures: set[str] = set()
    for mutant in plan:
        label = mutant.name if mutant else "baseline"
        for path, text in pristine.items():
            with open(os.path.join(source, path), "w") as f:
                f.write(text)
        if mutant is not None:
            mutated = mutant.apply(pristine[mutant.path])
            if mutated is None:
                # Listed above as BROKEN: counted once, as a failure.
                continue
            with open(os.path.join(source, mutant.path), "w") as f:
                f.write(mutated)
        print(f"==> mutant {label}: {mutant.what if mutant else 'no change'}", flush=True)
        t0 = time.monotonic()
        sanitizer = mutant.sanitizer if mutant else None
        ok, binary = build(source, scratch, os.path.join(logs, f"{label}.build.log"), sanitizer)
        if not ok:
            print(f"MISS  mutant {label}: build failed, see {logs}/{label}.build.log", flush=True)
            missed.append(label)
            continue
        kept = os.path.join(bins, f"upload-server-{label}")
        shutil.copy2(binary, kept)
        print(f"      built in {time.monotonic() - t0:.0f}s: {kept}", flush=True)
        suites = mutant.suites if mutant else sorted({s for m in chosen if not m.sanitizer for s in m.suites})
        command = [sys.executable, "-m", "pytest", *[f"hardening/test_{suite}.py" for suite in suites],
                   "--binary", kept, "-s", "-q", "-rf", *(mutant.args if mutant else [])]
        t1 = time.monotonic()
        log_path = os.path.join(logs, f"{label}.harden.log")
        env = dict(os.environ)
        reports_dir = os.path.join(logs, f"{label}.reports")
        if sanitizer:
            shutil.rmtree(reports_dir, ignore_errors=True)
            os.makedirs(reports_dir)
            # The same settings as `scripts/harden sanitizers`, suppressions included, so
            # that this shows they do not hide a real race.
            key = "TSAN_OPTIONS" if sanitizer == "thread" else "ASAN_OPTIONS"
            env[key] = f"halt_on_error=0:print_suppressions=0:log_path={reports_dir}/report"
            if sanitizer == "thread":
                env[key] += f":suppressions={os.path.join(HERE, 'tsan.supp')}"
        with open(log_path, "w") as log:
            result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=1800, env=env)
        if sanitizer:
            reports = sorted(os.listdir(reports_dir))
            seconds = time.monotonic() - t1
            if reports:
                caught.append(label)
                print(f"CAUGHT mutant {label} by the {sanitizer} sanitizer under {'+'.join(suites)}: "
                      f"{len(reports)} report files in {reports_dir} ({seconds:.0f}s)", flush=True)
                with open(os.path.join(reports_dir, reports[0]), errors="replace") as f:
                    for line in [l for l in f.read().splitlines() if l.strip()][:4]:
                        print(f"        {line[:200]}")
            else:
                missed.append(label)
                print(f"MISS  mutant {label}: no {sanitizer} report ({seconds:.0f}s)", flush=True)
            continue
        with open(log_path) as f:
            output = f.read()
        # The suites' failed checks (FAIL lines), and tests that failed without one (an exception).
        failed = [line for line in output.splitlines() if line.startswith(("FAIL ", "FAILED "))
                  and " checks failed:" not in line]
        summary = next((line.strip("= ") for line in reversed(output.splitlines())
                        if re.search(r"\d+ (passed|failed)", line)), "")
        seconds = time.monotonic() - t1
        if mutant is None:
            baseline_failures = {check_name(line) for line in failed}
            verdict = result.returncode == 0
            print(f"{'PASS' if verdict else 'FAIL'}  baseline passes {'+'.join(suites)} ({summary}, {seconds:.0f}s)"
                  + ("" if verdict else "; its failing checks do not count for the mutants:"), flush=True)
            for line in failed:
                print(f"        {line[:220]}", flush=True)
            continue
        new_failures = [line for line in failed if check_name(line) not in baseline_failures]
        if result.returncode != 0 and new_failures:
            caught.append(label)
            print(f"CAUGHT mutant {label} by {'+'.join(mutant.suites)} ({summary}, {len(new_failures)} checks that "
                  f"pass on the baseline failed, {seconds:.0f}s):", flush=True)
        else:
            missed.append(label)
            print(f"MISS  mutant {label}: {'+'.join(mutant.suites)} found nothing the baseline does not "
                  f"({summary}, {seconds:.0f}s)", flush=True)
        for line in new_failures[:8]:
            print(f"        {line[:220]}", flush=True)
        if len(new_failures) > 8:
            print(f"        ... {len(new_failures) - 8} more", flush=True)

    for path, text in pristine.items():
        with open(os.path.join(source, path), "w") as f:
            f.write(text)
    print(f"logs in {logs}")
    print(f"mutants: {len(caught)} caught, {len(missed)} missed" + (f" ({', '.join(missed)})" if missed else "")
          + f", {len(broken)} broken")
    return 0 if not missed and not broken else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
