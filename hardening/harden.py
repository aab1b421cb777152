#!/usr/bin/env python3
"""Hardening suites for upload-server: load, soak, faults, fuzz, slow clients.

Run through scripts/harden, which builds the release binary; or directly with
UPLOAD_SERVER_BIN=/path/to/upload-server python3 hardening/harden.py [suite...].
Every suite prints PASS/FAIL lines; the last line is `hardening: N passed, M failed`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import REPORT, exception_text  # noqa: E402

SUITES = ["load", "soak", "faults", "fuzz", "slow", "limits", "multi", "library"]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/harden", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suites", nargs="*", default=["all"],
                        help="all (default: load soak faults fuzz slow multi), or any of " + ", ".join(SUITES))
    parser.add_argument("--binary", default=os.environ.get("UPLOAD_SERVER_BIN"),
                        help="the upload-server binary (default: $UPLOAD_SERVER_BIN)")
    parser.add_argument("--seed", type=int, default=env_int("HARDEN_SEED", 20261129),
                        help="random seed for data and fuzz cases [HARDEN_SEED]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--staging", choices=["auto", "named", "both"], default=os.environ.get("HARDEN_STAGING", "both"),
                        help="the server's --staging: both (default) runs faults and fuzz with auto (O_TMPFILE) "
                             "and named temporary files, the other suites with auto [HARDEN_STAGING]")
    g = parser.add_argument_group("load")
    g.add_argument("--load-idle", type=int, default=env_int("HARDEN_LOAD_IDLE", 800))
    g.add_argument("--load-uploads", type=int, default=env_int("HARDEN_LOAD_UPLOADS", 200))
    g.add_argument("--load-size", type=int, default=env_int("HARDEN_LOAD_SIZE", 1 << 20))
    g.add_argument("--load-timeout", type=int, default=env_int("HARDEN_LOAD_TIMEOUT", 3),
                   help="the server's --timeout in the load suite")
    g = parser.add_argument_group("soak")
    g.add_argument("--soak-uploads", type=int, default=env_int("HARDEN_SOAK_UPLOADS", 20000))
    g.add_argument("--soak-clients", type=int, default=env_int("HARDEN_SOAK_CLIENTS", 64))
    g.add_argument("--soak-warmup", type=int, default=env_int("HARDEN_SOAK_WARMUP", 1000))
    g.add_argument("--soak-rss-slack-mib", type=float, default=float(os.environ.get("HARDEN_SOAK_RSS_SLACK_MIB", 8)))
    g.add_argument("--soak-probe-requests", type=int, default=env_int("HARDEN_SOAK_PROBE_REQUESTS", 30000),
                   help="GET /healthz requests after the uploads, for small per-request leaks (0: none)")
    g.add_argument("--soak-max-seconds", type=int, default=env_int("HARDEN_SOAK_MAX_SECONDS", 600),
                   help="the soak stops sending after this long (and fails)")
    g = parser.add_argument_group("fuzz")
    g.add_argument("--cases", type=int, default=env_int("HARDEN_FUZZ_CASES", 2000), help="fuzz cases [HARDEN_FUZZ_CASES]")
    g.add_argument("--fuzz-workers", type=int, default=env_int("HARDEN_FUZZ_WORKERS", 12))
    g.add_argument("--case", type=int, default=None,
                   help="run only this fuzz case number (with --seed) and print its request")
    g.add_argument("--fuzz-artifacts", default=os.environ.get("HARDEN_FUZZ_ARTIFACTS", ""),
                   help="directory for the requests of failing fuzz cases (default: a temp dir, kept)")
    g = parser.add_argument_group("slow")
    g.add_argument("--slowloris", type=int, default=env_int("HARDEN_SLOWLORIS", 500))
    g.add_argument("--slow-bodies", type=int, default=env_int("HARDEN_SLOW_BODIES", 100))
    g.add_argument("--slow-seconds", type=int, default=env_int("HARDEN_SLOW_SECONDS", 14))
    args = parser.parse_args(argv)
    wanted: list[str] = []
    for suite in args.suites:
        if suite == "all":
            wanted += SUITES
        elif suite in SUITES:
            wanted.append(suite)
        else:
            parser.error(f"unknown suite {suite!r}; choose from all, {', '.join(SUITES)} "
                         "(sanitizers and mutants are run by scripts/harden)")
    args.suites = list(dict.fromkeys(wanted))
    if not args.binary:
        parser.error("no binary: set UPLOAD_SERVER_BIN or pass --binary (scripts/harden builds one)")
    args.binary = os.path.abspath(args.binary)
    if not os.access(args.binary, os.X_OK):
        parser.error(f"not an executable: {args.binary}")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    # A stray SIGTERM/SIGINT still runs the atexit clean-up (servers killed by pid).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"hardening {' '.join(args.suites)} against {args.binary} (seed {args.seed})", flush=True)
    started = time.monotonic()
    for name in args.suites:
        REPORT.suite = name
        print(f"==> {name}", flush=True)
        t0 = time.monotonic()
        failed_before = REPORT.failed
        try:
            module = __import__(f"suite_{name}")
            module.run(args.binary, args)
        except KeyboardInterrupt:
            REPORT.check("suite ran to the end", False, "interrupted")
            break
        except Exception as error:  # noqa: BLE001 - a crashed suite is a failed check
            traceback.print_exc()
            REPORT.check("suite ran to the end", False, exception_text(error))
        seconds = time.monotonic() - t0
        verdict = "ok" if REPORT.failed == failed_before else "FAILED"
        REPORT.timings.append((name, seconds, verdict))
        print(f"<== {name}: {verdict} in {seconds:.1f}s", flush=True)

    total = time.monotonic() - started
    print("", flush=True)
    print("==> hardening summary", flush=True)
    for name, seconds, verdict in REPORT.timings:
        print(f"  {name:<8} {verdict:<7} {seconds:6.1f}s")
    for failure in REPORT.failures:
        print(f"  failed: {failure}")
    for warning in REPORT.warnings:
        print(f"  known issue: {warning}")
    keys = ["connections held", "soak uploads", "soak memory", "soak descriptors", "fuzz cases", "multi"]
    figures = [f"{key}: {REPORT.figures[key]}" for key in keys if key in REPORT.figures]
    if figures:
        print("figures: " + "; ".join(figures))
    print(f"time: {total:.1f}s")
    skipped = f", {REPORT.skipped} skipped" if REPORT.skipped else ""
    print(f"hardening: {REPORT.passed} passed, {REPORT.failed} failed{skipped}", flush=True)
    return 1 if REPORT.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
