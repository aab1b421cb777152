"""Several instances on one upload directory behind a real load balancer: the
scenarios, run on one local directory by test_multi.py and on GlusterFS (one FUSE
client per instance) by test_gluster.py.

Three upload-server instances share one directory, each in its own network namespace
(netns.py) on port 9000, behind Debian's nginx on 127.0.0.1 (round robin,
proxy_request_buffering off). Scenarios: mixed uploads through the balancer, one name
uploaded at once through different instances under each --on-conflict policy, kill -9
of an instance mid-upload and its restart, a rolling restart under load, and the races
of a second writer on the same directory: an instance that starts and stops (its sweep
of leftovers) while another one publishes, and an instance with another policy; and
resumable (tus) uploads continued and completed through other instances than the one
that created them, one after a PATCH cut off mid-body.
Needs root (namespaces) and nginx.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import common
from common import (
    HOST,
    REPORT,
    TEMP_PREFIX,
    TUS,
    TUS_PREFIX,
    Closed,
    Conn,
    KiB,
    MiB,
    Nginx,
    Part,
    Response,
    Server,
    Workspace,
    exception_text,
    file_sha256,
    request,
    sha256,
    staging_args,
    tus_create,
    tus_offset,
    tus_patch,
    tus_patch_head,
    upload_request,
    wait_for,
)
from netns import Namespaces

PORT = 9000
LIMIT_MIB = 16          # the servers' --max-upload-size and nginx's client_max_body_size
INSTANCES = 3
GRACE = 3               # --shutdown-grace
RETRIES = 8             # attempts of a client through the balancer (a refused connection or a 502)
ERRORS = (OSError, Closed, ValueError)
# HARDEN_RACE_SCALE lengthens the races (and the undo race's rounds) to look for rare failures.
RACE_SCALE = float(os.environ.get("HARDEN_RACE_SCALE", "1"))


# --------------------------------------------------------------------------- counters

class Tally:
    """Counters shared by the client threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def count(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)


# --------------------------------------------------------------------------- instances

class Instance(Server):
    """One upload-server inside its network namespace, on its own address and port 9000."""

    def __init__(self, binary: str, net: Namespaces, index: int, upload_dir: str, args: list[str],
                 workdir: str, generation: int) -> None:
        # Each start has its own log, so that its `started` event is its own.
        super().__init__(binary, upload_dir, args, workdir=workdir, name=f"instance{index}-{generation}")
        self.net = net
        self.index = index
        self.host = net.address(index)

    def start(self, timeout: float = 15) -> Instance:
        argv = self.net.command(self.index, [self.binary, "--host", self.host, "--port", str(PORT),
                                             "--upload-dir", self.upload_dir] + self.args)
        with open(self.log_path, "ab") as out, open(self.err_path, "ab") as err:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            cwd=self.workdir, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                            close_fds=True)
        # Registered with common's atexit clean-up, which kills every server by its pid.
        common._LIVE[self.process.pid] = self.process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events("started"):
                self.port = PORT
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"instance {self.index} exited with {self.process.returncode} at start: "
                                   f"{self.stderr()[-2000:]}")
            time.sleep(0.005)
        raise RuntimeError(f"instance {self.index} did not log 'started' within {timeout}s")

    def uploads_stored(self) -> int:
        return sum(1 for e in self.access_log() if e.get("path") == "/upload" and e.get("status") == 200)

    def leftovers_removed(self) -> int:
        return sum(int(e.get("temporary_files", 0)) for e in self.events("removed_leftovers"))


class Shared:
    """One shared upload directory as each host sees it: `at(index)` is instance
    `index`'s path to it (its own mount on a network filesystem), `view` the path the
    checks read it through, `reader` the path of the readers that poll final names (on
    a network filesystem, other clients than the instances')."""

    def __init__(self, paths: list[str], view: str, reader: str) -> None:
        self.paths = paths
        self.view = view
        self.reader = reader

    def at(self, index: int) -> str:
        return self.paths[index]

    def remove(self) -> None:
        shutil.rmtree(self.view)


class LocalStorage:
    """Shared directories on one local filesystem: every instance and check uses one path."""

    name = "local directory"

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    @staticmethod
    def staging(flag: str) -> str:
        """What the instances stage with under `--staging flag` here: O_TMPFILE works locally."""
        return "unnamed" if flag == "auto" else "named"

    def make(self, label: str) -> Shared:
        path = self.ws.path(label)
        os.makedirs(path)
        return Shared([path] * INSTANCES, path, path)


class Cluster:
    """The instances on one directory; each start of an instance is a new Instance."""

    def __init__(self, binary: str, net: Namespaces, workdir: str, tally: Tally, storage) -> None:
        self.binary = binary
        self.net = net
        self.workdir = workdir
        self.tally = tally
        self.storage = storage
        self.instances: list[Instance | None] = [None] * INSTANCES
        self.generation = 0
        self.settings: dict[int, tuple[Shared, list[str]]] = {}
        self._lock = threading.Lock()  # the races start instances from several threads

    def start(self, index: int, shared: Shared | None = None, args: list[str] | None = None) -> Instance:
        """Starts instance `index`, with new settings or (a restart) the last ones."""
        with self._lock:
            if shared is not None:
                self.settings[index] = (shared, list(args or []))
            directory, arguments = self.settings[index]
            self.generation += 1
            generation = self.generation
        # The balancer's client_max_body_size is the same limit.
        arguments = ["--max-upload-size", f"{LIMIT_MIB}MiB"] + arguments
        instance = Instance(self.binary, self.net, index, directory.at(index), arguments, self.workdir, generation)
        self.instances[index] = instance
        return instance.start()

    def start_all(self, shared: Shared, args: list[str]) -> list[Instance]:
        return [self.start(i, shared, args) for i in range(INSTANCES)]

    def restart(self, index: int) -> Instance:
        self.tally.add("restarts")
        return self.start(index)

    def stop_all(self) -> list[int | None]:
        codes = [instance.stop(GRACE + 5) for instance in self.instances if instance is not None]
        self.instances = [None] * INSTANCES
        return codes

    def live(self) -> list[Instance]:
        return [i for i in self.instances if i is not None and i.alive()]


# --------------------------------------------------------------------------- the balancer

# The http block of the balancer (common.Nginx, through the nginx fixture).
BALANCER = """\
    upstream uploads {{
        # Round robin; a refused connection marks an instance down for a second only,
        # so that a restarted one is back in the rotation at once.
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size {limit}m;
        location / {{
            proxy_pass http://uploads;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            proxy_send_timeout 30s;
        }}
    }}
"""


# --------------------------------------------------------------------------- clients

def post(host: str, parts: list[Part], port: int = PORT, timeout: float = 30, chunked: bool = False) -> Response:
    with Conn(port, timeout=timeout, host=host) as conn:
        try:
            conn.send(*upload_request(port, parts, use_chunked=chunked))
        except (BrokenPipeError, ConnectionResetError):
            # Refused at once (413 on the headers) without reading the body: the answer is still there.
            pass
        return conn.read_response(timeout)


def log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high + 1))))


def stored_names(body: bytes) -> list[tuple[str, int]]:
    """(name, size) of each file a 200 body lists."""
    return [(f["name"], f["size"]) for f in json.loads(body)["files"]]


class Ledger:
    """What may be in the directory: every name with the contents (sha256) sent for it,
    registered before the request is sent, and what was acknowledged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: dict[str, dict[int, set[str]]] = {}   # name -> size -> sha256s
        self.acked: dict[str, set[str]] = {}              # name -> sha256s answered with 200
        self.small: dict[str, list[bytes]] = {}           # name -> bytes sent (up to 64 KiB), to describe a wrong file

    def expect(self, name: str, data: bytes) -> None:
        with self._lock:
            self.sent.setdefault(name, {}).setdefault(len(data), set()).add(sha256(data))
            if len(data) <= 64 * KiB:
                self.small.setdefault(name, []).append(bytes(data))

    def sizes(self, name: str) -> set[int] | None:
        with self._lock:
            sizes = self.sent.get(name)
            return set(sizes) if sizes is not None else None

    def holds(self, name: str, digest: str) -> bool:
        """Whether `digest` is the sha256 of one upload sent under `name`."""
        with self._lock:
            return any(digest in shas for shas in self.sent.get(name, {}).values())

    def describe(self, name: str, data: bytes) -> str:
        """What a wrong file's bytes are made of: which uploads' bytes its head and tail are."""
        with self._lock:
            sizes = sorted(self.sent.get(name, {}))
            sent = list(self.small.get(name, []))

        def common(a: bytes, b: bytes) -> int:
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            return n

        heads = sorted(((common(data, d), k) for k, d in enumerate(sent)), reverse=True)[:1]
        tails = sorted(((common(data[::-1], d[::-1]), k) for k, d in enumerate(sent)), reverse=True)[:1]
        parts = f"head: {heads[0][0]} bytes of upload #{heads[0][1]}, tail: {tails[0][0]} bytes of upload #{tails[0][1]} " \
                f"({len(sent[heads[0][1]])} and {len(sent[tails[0][1]])} bytes long)" if heads and tails else ""
        return f"(sizes sent under that name: {sizes[:6]}{'...' if len(sizes) > 6 else ''}; {parts})"

    def acknowledge(self, name: str, data: bytes) -> None:
        with self._lock:
            self.acked.setdefault(name, set()).add(sha256(data))

    def verify(self, directory: str, tally: Tally) -> tuple[list[str], int]:
        """Every acknowledged name holds one acknowledged content of that name; every other
        name in the directory is one that was sent, with complete bytes. (problems, files checked)"""
        problems: list[str] = []
        checked = 0
        present = set(os.listdir(directory))
        for name, shas in self.acked.items():
            if name not in present:
                problems.append(f"{name}: acknowledged, missing")
                continue
            digest = file_sha256(os.path.join(directory, name))
            checked += 1
            if digest not in shas:
                problems.append(f"{name}: bytes of no acknowledged upload")
        for name in present - set(self.acked):
            if name.startswith(TEMP_PREFIX):
                problems.append(f"{name}: temporary file left")
            elif name not in self.sent:
                problems.append(f"{name}: never sent")
            else:
                digest = file_sha256(os.path.join(directory, name))
                checked += 1
                if not any(digest in shas for shas in self.sent[name].values()):
                    problems.append(f"{name}: not the bytes of any request")
        tally.add("checked", checked)
        return problems, checked


class Watcher:
    """Lists the directory over and over while uploads run: every name must be a file
    that was sent, with the full size of one upload of that name; `.upload-*` names are
    files in progress and are skipped. A name is looked at once per inode."""

    def __init__(self, directory: str, ledger: Ledger) -> None:
        self.directory = directory
        self.ledger = ledger
        self.violations: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._seen: set[tuple[str, int]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls += 1
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX) or (entry.name, entry.inode()) in self._seen:
                        continue
                    try:
                        size = entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # replaced or removed meanwhile
                    self._seen.add((entry.name, entry.inode()))
                    sizes = self.ledger.sizes(entry.name)
                    if sizes is None:
                        self.violations.append(f"{entry.name}: never sent")
                    elif size not in sizes:
                        self.violations.append(f"{entry.name}: {size} bytes, sent {sorted(sizes)}")
            self._stop.wait(0.005)

    def check(self, label: str) -> None:
        REPORT.check(f"{label}: nothing partial ever visible in the directory", not self.violations,
                     f"{self.polls} listings, {len(self._seen)} files seen"
                     + (f"; {len(self.violations)} violations: {self.violations[:3]}" if self.violations else ""))


class Reader:
    """A client on another host (`Shared.reader`) polling the final names while uploads
    run: it opens every file it lists and reads it whole, and each one must hold exactly
    the bytes of one upload sent under that name (its sha256): never a partial file,
    never the head of one upload and the tail of another. A file is read once per
    (name, inode, size, mtime)."""

    def __init__(self, directory: str, ledger: Ledger, tally: Tally) -> None:
        self.directory = directory
        self.ledger = ledger
        self.tally = tally
        self.violations: list[str] = []
        self.polls = 0
        self.read = 0
        self.stale = 0
        self._stop = threading.Event()
        self._seen: set[tuple] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.tally.add("read", self.read)
        self.tally.add("polls", self.polls)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.polls += 1
            try:
                names = [n for n in os.listdir(self.directory) if not n.startswith(TEMP_PREFIX)]
            except FileNotFoundError:
                return
            for name in names:
                try:
                    with open(os.path.join(self.directory, name), "rb") as f:
                        status = os.fstat(f.fileno())
                        key = (name, status.st_ino, status.st_size, status.st_mtime_ns)
                        if key in self._seen:
                            continue
                        data = f.read()
                except (FileNotFoundError, IsADirectoryError):
                    continue  # replaced or removed meanwhile
                except OSError as error:
                    if error.errno == errno.ESTALE:
                        # A network filesystem: replaced on another host between the open and the read.
                        self.stale += 1
                        continue
                    self.violations.append(f"{name}: {exception_text(error)}")
                    continue
                self._seen.add(key)
                self.read += 1
                if not self.ledger.holds(name, sha256(data)):
                    self.violations.append(f"{name}: {len(data)} bytes (stat said {key[2]}) that are no upload's "
                                           f"{self.ledger.describe(name, data)}")
            self._stop.wait(0.01)

    def check(self, label: str) -> None:
        REPORT.check(f"{label}: a reader on another client only ever reads whole uploads", not self.violations,
                     f"{self.polls} polls, {self.read} files read, {self.stale} replaced while read (ESTALE)"
                     + (f"; {len(self.violations)} violations: {self.violations[:3]}" if self.violations else ""))


class BalancedClients:
    """Threads that upload through the balancer until stopped: unique names, 1 B to
    `max_size`; a refused connection or a 5xx from the balancer is retried (counted)."""

    def __init__(self, port: int, ledger: Ledger, tally: Tally, prefix: str, threads: int, max_size: int,
                 seed: int) -> None:
        self.port = port
        self.ledger = ledger
        self.tally = tally
        self.prefix = prefix
        self.max_size = max_size
        self.seed = seed
        self.given_up: list[str] = []
        self.wrong: list[str] = []
        self.uploads = 0
        self.retries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> BalancedClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        sequence = 0
        while not self._stop.is_set():
            sequence += 1
            name = f"{self.prefix}-{number}-{sequence}.bin"
            data = rng.randbytes(log_uniform(rng, 1, self.max_size))
            self.ledger.expect(name, data)
            response, retries, error = balanced_upload(self.port, [Part("file", name, data)])
            with self._lock:
                self.uploads += 1
                self.retries += retries
            self.tally.add("balanced")
            self.tally.add("retries", retries)
            if response is None:
                with self._lock:
                    self.given_up.append(f"{name}: {error}")
            elif response.status != 200 or stored_names(response.body) != [(name, len(data))]:
                with self._lock:
                    self.wrong.append(f"{name}: {response.status} {response.body[:100]!r}")
            else:
                self.ledger.acknowledge(name, data)

    def check(self, label: str) -> None:
        REPORT.check(f"{label}: every upload through the balancer acknowledged (retries allowed)",
                     self.uploads > 0 and not self.given_up and not self.wrong,
                     f"{self.uploads} uploads, {self.retries} retries"
                     + (f", {len(self.given_up)} given up after {RETRIES} attempts: {self.given_up[:2]}"
                        if self.given_up else "")
                     + (f", {len(self.wrong)} wrong answers: {self.wrong[:2]}" if self.wrong else ""))


def balanced_upload(port: int, parts: list[Part], chunked: bool = False) -> tuple[Response | None, int, str]:
    """(response, retries, last error). Retried: a connection error, or 502/503/504 from
    the balancer (an instance that went away before answering)."""
    error = ""
    for attempt in range(RETRIES):
        try:
            response = post(HOST, parts, port=port, chunked=chunked)
            if response.status not in (502, 503, 504):
                return response, attempt, ""
            error = f"{response.status}"
        except ERRORS as failure:
            error = exception_text(failure)
        time.sleep(0.05 * (attempt + 1))
    return None, RETRIES - 1, error


def no_temporary_files(label: str, directory: str) -> None:
    left = sorted(n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX))
    REPORT.check(f"{label}: no temporary file left in the shared directory", not left, f"{left[:3]}")


def exits_clean(label: str, codes: list[int | None]) -> None:
    REPORT.check(f"{label}: every instance exits 0 on SIGTERM", all(c == 0 for c in codes), f"exit codes {codes}")


# --------------------------------------------------------------------------- 1. mixed uploads

def mixed_uploads(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str,
                  uploads: int = 240) -> None:
    label = "mixed uploads"
    shared = cluster.storage.make(f"mixed-{staging}")
    directory = shared.view
    instances = cluster.start_all(shared, staging_args(staging))
    modes = [i.staging_mode() for i in instances]
    expected = cluster.storage.staging(staging)
    REPORT.check(f"{label}: the instances stage {'unnamed (O_TMPFILE)' if expected == 'unnamed' else 'named'} files",
                 modes == [expected] * INSTANCES, f"started events say {modes}")
    ledger = Ledger()
    jobs = []
    for number in range(uploads):
        files = rng.choices([1, 2, 3], weights=[70, 20, 10])[0]
        jobs.append(([f"mix-{number}-{k}.bin" for k in range(files)],
                     [log_uniform(rng, 1, 4 * MiB) for _ in range(files)], number % 4 == 0, rng.getrandbits(32)))
    outcomes: list[str] = []
    first_attempt = [0]
    lock = threading.Lock()

    def send(job) -> None:
        names, sizes, chunked, seed = job
        local = random.Random(seed)
        datas = [local.randbytes(size) for size in sizes]
        for name, data in zip(names, datas):
            ledger.expect(name, data)
        response, retries, error = balanced_upload(balancer.port, [Part("file", n, d) for n, d in zip(names, datas)],
                                                   chunked=chunked)
        cluster.tally.add("balanced")
        cluster.tally.add("retries", retries)
        if response is not None and response.status == 200 and \
                stored_names(response.body) == [(n, len(d)) for n, d in zip(names, datas)]:
            for name, data in zip(names, datas):
                ledger.acknowledge(name, data)
            with lock:
                first_attempt[0] += retries == 0
        else:
            with lock:
                outcomes.append(f"{names[0]}: {error or (response.status, response.body[:100])}")

    started = time.monotonic()
    with Watcher(directory, ledger) as watcher, Reader(shared.reader, ledger, cluster.tally) as reader, \
            ThreadPoolExecutor(12) as pool:
        list(pool.map(send, jobs))
    seconds = time.monotonic() - started
    files = sum(len(job[0]) for job in jobs)
    total = sum(sum(job[1]) for job in jobs)
    REPORT.check(f"{label}: every upload through the balancer answered 200 with its files at the first attempt",
                 not outcomes and first_attempt[0] == uploads,
                 f"{uploads} uploads ({files} files, {total / MiB:.0f} MiB, 1 B to 4 MiB, 1-3 files, "
                 f"a quarter chunked) in {seconds:.1f} s" + (f"; failed: {outcomes[:3]}" if outcomes else ""))
    problems, checked = ledger.verify(directory, cluster.tally)
    REPORT.check(f"{label}: every stored file has the sha256 of its upload, nothing else in the directory",
                 not problems and checked == files, f"{checked} of {files} files checked; {problems[:3]}")
    watcher.check(label)
    reader.check(label)
    served = [i.uploads_stored() for i in instances]
    REPORT.check(f"{label}: round robin: each instance stored a share of the uploads",
                 min(served) >= uploads // 6, f"uploads stored per instance {served}")
    too_large = [Part("file", "mix-too-large.bin", b"x" * (LIMIT_MIB * MiB))]
    response, _, error = balanced_upload(balancer.port, too_large)
    REPORT.check(f"{label}: a body over the limit is refused by the balancer (413), nothing stored",
                 response is not None and response.status == 413
                 and not os.path.exists(os.path.join(directory, "mix-too-large.bin")),
                 f"{LIMIT_MIB} MiB of data plus framing: {response.status if response else error}")
    exits_clean(label, cluster.stop_all())
    shared.remove()


# --------------------------------------------------------------------------- 2. one name, several instances

class HeldUpload:
    """An upload sent directly to an instance except its last bytes, which `release` sends."""

    TAIL = 64

    def __init__(self, host: str, parts: list[Part], timeout: float = 30) -> None:
        pieces = b"".join(bytes(p) for p in upload_request(PORT, parts))
        self.body, self.tail = pieces[:-self.TAIL], pieces[-self.TAIL:]
        self.conn = Conn(PORT, timeout=timeout, host=host)
        self.conn.send(self.body)

    def release(self) -> None:
        self.conn.send(self.tail)

    def response(self) -> Response:
        try:
            return self.conn.read_response()
        finally:
            self.conn.close()


def same_name(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str,
              rounds: int = 6, per_instance: int = 2) -> None:
    for policy in ("overwrite", "rename", "reject"):
        label = f"one name through three instances, --on-conflict {policy}"
        shared = cluster.storage.make(f"same-{policy}-{staging}")
        directory = shared.view
        instances = cluster.start_all(shared, ["--on-conflict", policy] + staging_args(staging))
        problems: list[str] = []
        statuses: dict[int, int] = {}
        for number in range(rounds):
            name = f"same-{number}.bin"
            datas = [rng.randbytes(256 * KiB + rng.randrange(KiB)) for _ in range(per_instance * INSTANCES)]
            held = [HeldUpload(instances[k % INSTANCES].host, [Part("file", name, data)])
                    for k, data in enumerate(datas)]
            time.sleep(0.02)  # every instance has read its body but the last bytes
            barrier = threading.Barrier(len(held))

            def finish(upload: HeldUpload) -> Response:
                barrier.wait(5)
                upload.release()
                return upload.response()

            with ThreadPoolExecutor(len(held)) as pool:
                responses = list(pool.map(finish, held))
            for response in responses:
                statuses[response.status] = statuses.get(response.status, 0) + 1
            present = sorted(n for n in os.listdir(directory) if n.startswith(f"same-{number}"))
            digests = {n: file_sha256(os.path.join(directory, n)) for n in present}
            cluster.tally.add("checked", len(digests))
            sent = {sha256(d): k for k, d in enumerate(datas)}
            ok_responses = [(k, r) for k, r in enumerate(responses) if r.status == 200]
            if policy == "overwrite":
                if len(ok_responses) != len(datas) or present != [name] or digests[name] not in sent:
                    problems.append(f"round {number}: {len(ok_responses)} × 200, files {present}, "
                                    f"bytes of a request: {digests.get(name) in sent}")
            elif policy == "rename":
                named = {stored_names(r.body)[0][0]: sha256(datas[k]) for k, r in ok_responses}
                if len(ok_responses) != len(datas) or sorted(named) != present or \
                        any(digests[n] != digest for n, digest in named.items()):
                    problems.append(f"round {number}: {len(ok_responses)} × 200, {len(named)} distinct names "
                                    f"answered, files {present}")
            else:
                others = sorted(r.status for r in responses if r.status != 200)
                if len(ok_responses) != 1 or others != [409] * (len(datas) - 1) or present != [name] or \
                        digests[name] != sha256(datas[ok_responses[0][0]]):
                    problems.append(f"round {number}: {len(ok_responses)} × 200, others {others}, files {present}")
        expectation = {"overwrite": "all 200, one complete file equal to one request's bytes",
                       "rename": "all 200, every upload under its own name with its bytes",
                       "reject": "exactly one 200 (its bytes stored), the others 409"}[policy]
        REPORT.check(f"{label}: {expectation}", not problems,
                     f"{rounds} rounds of {len(datas)} uploads ({per_instance} per instance, released together); "
                     f"statuses {dict(sorted(statuses.items()))}" + (f"; {problems[:3]}" if problems else ""))
        no_temporary_files(label, directory)
        exits_clean(label, cluster.stop_all())
        shared.remove()


# --------------------------------------------------------------------------- 3. kill -9 mid-upload

def kill_mid_upload(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str) -> None:
    label = "kill -9 mid-upload"
    shared = cluster.storage.make(f"kill-{staging}")
    directory = shared.view
    victim, *others = cluster.start_all(shared, ["--timeout", "15"] + staging_args(staging))
    witness = others[0]
    ledger = Ledger()
    with Watcher(directory, ledger) as watcher, Reader(shared.reader, ledger, cluster.tally) as reader, \
            BalancedClients(balancer.port, ledger, cluster.tally, f"kill-bg-{staging}", 3, 512 * KiB,
                            rng.getrandbits(32)) as clients:
        time.sleep(0.5)
        # One upload in progress on the victim and one on another instance, both half sent.
        held = {}
        for instance, name in ((victim, "kill-victim.bin"), (witness, "kill-witness.bin")):
            data = rng.randbytes(4 * MiB)
            ledger.expect(name, data)
            held[name] = (instance, HeldUpload(instance.host, [Part("file", name, data)]), data)
        witness_file = file_in_progress(witness, 3 * MiB)
        file_in_progress(victim, 3 * MiB)
        victim_names = [os.path.basename(p) for p in victim.staged_files() if TEMP_PREFIX in p]

        victim.signal(signal.SIGKILL)
        victim.wait(5)
        killed_at = time.monotonic()
        cluster.tally.add("kills")
        _, victim_upload, _ = held["kill-victim.bin"]
        try:
            victim_upload.release()
            outcome = f"answered {victim_upload.response().status}"
        except ERRORS as error:
            outcome = f"error ({type(error).__name__})"
        REPORT.check(f"{label}: the killed instance's client sees an error", outcome.startswith("error"), outcome)
        left_after_kill = [n for n in victim_names if os.path.exists(os.path.join(directory, n))]

        # While it is down, the other two still store uploads sent to them directly.
        direct = []
        for instance in others:
            data = rng.randbytes(64 * KiB)
            name = f"kill-direct-{instance.index}.bin"
            ledger.expect(name, data)
            try:
                response = post(instance.host, [Part("file", name, data)])
                direct.append(response.status)
                if response.status == 200:
                    ledger.acknowledge(name, data)
            except ERRORS as error:
                direct.append(exception_text(error))
        REPORT.check(f"{label}: the other instances keep serving while it is down", direct == [200] * len(others),
                     f"direct uploads {direct}")
        # A file the kill caught between its creation and its lock is swept once it has
        # been unlocked for 2 s (another host may be about to lock a fresh one).
        time.sleep(max(0.3, 2.2 - (time.monotonic() - killed_at)))

        restarted = cluster.restart(victim.index)
        still = [n for n in left_after_kill if os.path.exists(os.path.join(directory, n))]
        if cluster.storage.staging(staging) == "named":
            REPORT.check(f"{label}: its leftovers are swept at restart",
                         bool(left_after_kill) and not still and restarted.leftovers_removed() >= len(left_after_kill),
                         f"{len(left_after_kill)} named temporary files of the killed instance, {len(still)} left "
                         f"after the restart, removed_leftovers says {restarted.leftovers_removed()}")
        else:
            REPORT.check(f"{label}: the killed instance left no name behind (unnamed staging)", not left_after_kill,
                         f"{left_after_kill[:3]}")
        witness_now = file_in_progress(witness, 3 * MiB, timeout=0)
        REPORT.check(f"{label}: another instance's file in progress survives the restart's sweep",
                     witness_file is not None and witness_now == witness_file, f"{witness_file} -> {witness_now}")
        _, witness_upload, witness_data = held["kill-witness.bin"]
        try:
            witness_upload.release()
            response = witness_upload.response()
            answer = response.status
            if answer == 200:
                ledger.acknowledge("kill-witness.bin", witness_data)
        except ERRORS as error:
            answer = exception_text(error)
        REPORT.check(f"{label}: that upload then completes", answer == 200, f"{answer}")
        time.sleep(0.5)
    clients.check(label)
    watcher.check(label)
    reader.check(label)
    problems, checked = ledger.verify(directory, cluster.tally)
    REPORT.check(f"{label}: every acknowledged file intact, nothing else in the directory", not problems,
                 f"{checked} files checked; {problems[:3]}")
    REPORT.check(f"{label}: the other instances never stopped", all(i.alive() for i in others))
    exits_clean(label, cluster.stop_all())
    shared.remove()


def file_in_progress(instance: Instance, min_size: int, timeout: float = 5) -> str | None:
    """What the instance's descriptor on its file in progress of at least `min_size` bytes
    points to (`/dir/.upload-x.part`, or `/dir/#123 (deleted)` when unnamed): the held
    upload's file, told apart by its size from the small uploads running meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        base = f"/proc/{instance.pid}/fd"
        for fd in os.listdir(base):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{base}/{fd}")
                if target in instance.staged_files() and os.stat(f"{base}/{fd}").st_size >= min_size:
                    return target
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


# --------------------------------------------------------------------------- 4. rolling restart

def rolling_restart(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str) -> None:
    label = "rolling restart"
    shared = cluster.storage.make(f"rolling-{staging}")
    directory = shared.view
    cluster.start_all(shared, ["--shutdown-grace", str(GRACE)] + staging_args(staging))
    ledger = Ledger()
    codes: list[int | None] = []
    stop_seconds: list[float] = []
    back: list[int] = []
    with Watcher(directory, ledger) as watcher, Reader(shared.reader, ledger, cluster.tally) as reader, \
            BalancedClients(balancer.port, ledger, cluster.tally, f"roll-{staging}", 4, 1 * MiB,
                            rng.getrandbits(32)) as clients:
        time.sleep(0.5)
        for index in range(INSTANCES):
            old = cluster.instances[index]
            assert old is not None
            started = time.monotonic()
            codes.append(old.stop(GRACE + 5))
            stop_seconds.append(time.monotonic() - started)
            new = cluster.restart(index)
            # It is back in the rotation once it stores an upload from the balancer.
            deadline = time.monotonic() + 5
            while new.uploads_stored() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            back.append(new.uploads_stored())
        time.sleep(0.3)
    REPORT.check(f"{label}: each instance exits 0 on SIGTERM within the grace",
                 codes == [0] * INSTANCES and max(stop_seconds) < GRACE + 1,
                 f"exit codes {codes}, {', '.join(f'{s:.2f}' for s in stop_seconds)} s")
    REPORT.check(f"{label}: each restarted instance stores uploads from the balancer again", min(back) > 0,
                 f"uploads stored soon after each restart {back}")
    clients.check(label)
    watcher.check(label)
    reader.check(label)
    problems, checked = ledger.verify(directory, cluster.tally)
    REPORT.check(f"{label}: no acknowledged upload lost or damaged, nothing else in the directory", not problems,
                 f"{checked} files checked; {problems[:3]}")
    exits_clean(label, cluster.stop_all())
    shared.remove()


# --------------------------------------------------------------------------- 5. races of a second writer

def sweep_race(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str,
               existing: bool, seconds: float, clients: int = 8) -> None:
    """Instance A stores uploads while instances B, on the same directory, start and stop
    in a loop: each start and each stop sweeps the `.upload-*.part` names no process holds
    locked. A file A is about to publish must never be taken: no 500, nothing lost."""
    what = "overwriting existing names" if existing else "new names"
    label = f"A publishes ({what}, {staging} staging) while B starts and stops"
    shared = cluster.storage.make(f"sweep-{staging}-{'existing' if existing else 'new'}")
    directory = shared.view
    a = cluster.start(0, shared, staging_args(staging))
    ledger = Ledger()
    pool_names = [f"pool-{k}.bin" for k in range(4 * clients)]
    if existing:
        for name in pool_names:
            data = rng.randbytes(1 * KiB)
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
            ledger.expect(name, data)
            ledger.acknowledge(name, data)
    stop = threading.Event()
    statuses: dict[str, int] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        local = random.Random(rng.getrandbits(32) + number)
        sequence = 0
        conn = None
        while not stop.is_set():
            sequence += 1
            name = local.choice(pool_names) if existing else f"sweep-{number}-{sequence}.bin"
            data = local.randbytes(local.randrange(1, 4 * KiB))
            ledger.expect(name, data)
            try:
                # Keep-alive, and a new connection after one the server closed (after an error).
                conn = conn or Conn(PORT, host=a.host)
                conn.send(*upload_request(PORT, [Part("file", name, data)]))
                response = conn.read_response()
                key = str(response.status)
                if response.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except ERRORS as error:
                key = type(error).__name__
                response = None
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                statuses[key] = statuses.get(key, 0) + 1
                if key != "200" and len(failures) < 3:
                    failures.append(f"{key} {response.body[:100] if response else ''}")
            if key == "200":
                ledger.acknowledge(name, data)
        if conn is not None:
            conn.close()

    cycles = [0] * INSTANCES
    deadline = time.monotonic() + seconds

    def sweeper(index: int) -> None:
        while time.monotonic() < deadline:
            cluster.start(index, shared, ["--staging", "named"]).stop(GRACE + 5)
            cycles[index] += 1

    # Two instances B (both other namespaces) start and stop: twice the sweeps in the same time.
    sweepers = [threading.Thread(target=sweeper, args=(index,), daemon=True) for index in range(1, INSTANCES)]
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    with Reader(shared.reader, ledger, cluster.tally) as reader:
        for thread in threads + sweepers:
            thread.start()
        for thread in sweepers:
            thread.join(seconds + 30)
        stop.set()
        for thread in threads:
            thread.join(30)
    total = sum(statuses.values())
    errors = statuses.get("500", 0)
    REPORT.check(f"{label}: every upload answered 200, no 500", total > 0 and statuses.get("200") == total,
                 f"{total} uploads to A, {sum(cycles)} starts and stops of B, {errors} × 500, "
                 f"statuses {dict(sorted(statuses.items()))}" + (f"; {failures}" if failures else ""))
    reader.check(label)
    REPORT.figure(f"race {staging} {what}", f"{errors} × 500 in {total} uploads, {sum(cycles)} B cycles")
    problems, checked = ledger.verify(directory, cluster.tally)
    REPORT.check(f"{label}: every acknowledged file intact, nothing else in the directory", not problems,
                 f"{checked} files checked; {problems[:3]}")
    cluster.stop_all()
    shared.remove()


def undo_race(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str,
              rounds: int = int(200 * RACE_SCALE), names: int = 40) -> None:
    """A (--on-conflict reject) gets requests whose last part conflicts, so it undoes the
    names it already published; B (--on-conflict overwrite) overwrites those names at the
    same moment (in the opposite order, so the two commits cross). B's acknowledged files
    must never disappear, and nothing of A's failed requests may remain."""
    label = "A (reject) undoes a request while B (overwrite) stores the same names"
    shared = cluster.storage.make(f"undo-{staging}")
    directory = shared.view
    a = cluster.start(0, shared, ["--on-conflict", "reject"] + staging_args(staging))
    b = cluster.start(1, shared, ["--on-conflict", "overwrite"] + staging_args(staging))
    existing = "undo-existing.bin"
    with open(os.path.join(directory, existing), "wb") as f:
        f.write(b"already here")
    a_statuses: dict[int, int] = {}
    b_statuses: dict[int, int] = {}
    lost_rounds = 0
    lost_files = 0
    wrong: list[str] = []
    for number in range(rounds):
        batch = [f"undo-{number}-{k}.bin" for k in range(names)]
        b_data = {name: rng.randbytes(32) for name in batch}
        a_parts = [Part("file", name, rng.randbytes(32)) for name in batch] + [Part("file", existing, b"conflict")]
        b_parts = [Part("file", name, b_data[name]) for name in reversed(batch)]
        held_a = HeldUpload(a.host, a_parts)
        held_b = HeldUpload(b.host, b_parts)
        time.sleep(0.005)
        held_a.release()
        held_b.release()
        ra, rb = held_a.response(), held_b.response()
        a_statuses[ra.status] = a_statuses.get(ra.status, 0) + 1
        b_statuses[rb.status] = b_statuses.get(rb.status, 0) + 1
        if rb.status != 200:
            continue
        missing = 0
        for name, data in b_data.items():
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    if f.read() != data and len(wrong) < 3:
                        wrong.append(name)
            except FileNotFoundError:
                missing += 1
        cluster.tally.add("checked", names - missing)
        lost_files += missing
        lost_rounds += missing > 0
    REPORT.check(f"{label}: A answers 409 every time, B 200",
                 a_statuses == {409: rounds} and b_statuses == {200: rounds}, f"A {a_statuses}, B {b_statuses}")
    REPORT.check(f"{label}: no file B acknowledged disappears, each holds B's bytes", lost_rounds == 0 and not wrong,
                 f"{rounds} rounds of {names} names: {lost_files} files lost in {lost_rounds} rounds"
                 + (f"; other bytes in {wrong}" if wrong else ""))
    REPORT.figure("race mixed policies", f"{lost_files} acknowledged files lost in {lost_rounds} of {rounds} rounds")
    no_temporary_files(label, directory)
    cluster.stop_all()
    shared.remove()


# --------------------------------------------------------------------------- 6. resumable uploads across instances

def tus_across_instances(cluster: Cluster, balancer: Nginx, ws: Workspace, rng: random.Random, staging: str,
                         size: int = 3 * MiB) -> None:
    """Resumable uploads (tus, docs/resumable.md) that go from instance to instance, each
    on its own path to the directory (on a network filesystem: its own mount, as if on
    another host). Upload k is created and PATCHed a third of the way through instance k,
    continued through instance k+1 (after its HEAD gives the offset), completed through
    instance k+2; instance k, still at the old offset, is refused with 409 and told the
    new one. Then a PATCH cut off mid-body (RST) on one instance, while a third instance
    that tries to write the same upload is refused (409: the data file's flock, seen
    through another mount); it resumes on that third instance from its HEAD offset.
    Every file is checked (sha256) through the checks' path; none is known any more
    (HEAD 404) and no `.upload-tus-` name is left."""
    label = "tus across instances"
    shared = cluster.storage.make(f"tus-{staging}")
    directory = shared.view
    instances = cluster.start_all(shared, staging_args(staging))
    wrong: dict[str, list[str]] = {key: [] for key in ("create", "head", "continue", "stale", "complete", "bytes",
                                                       "gone")}
    for k in range(INSTANCES):
        first, second, third = (instances[(k + j) % INSTANCES] for j in range(3))
        name = f"tus-{k}.bin"
        data = rng.randbytes(size + k * 4099)
        a, b = len(data) // 3, 2 * len(data) // 3
        created, path = tus_create(PORT, len(data), name, host=first.host)
        begun = tus_patch(PORT, path, 0, data[:a], host=first.host) if path else None
        if created.status != 201 or begun is None or begun.status != 204 or tus_offset(begun) != a:
            wrong["create"].append(f"{name}: {created.status}, {begun.status if begun else 'no Location'}")
            continue
        head = request(PORT, "HEAD", path, TUS, host=second.host)
        if head.status != 200 or tus_offset(head) != a or head.headers.get("upload-length") != str(len(data)):
            wrong["head"].append(f"{name} on {second.index}: {head.status} {head.headers}")
        went_on = tus_patch(PORT, path, a, data[a:b], host=second.host)
        if went_on.status != 204 or tus_offset(went_on) != b:
            wrong["continue"].append(f"{name} on {second.index}: {went_on.status} {went_on.body[:80]!r}")
        stale = tus_patch(PORT, path, a, data[a:b], host=first.host)
        if stale.status != 409 or tus_offset(stale) != b:
            wrong["stale"].append(f"{name} on {first.index}: {stale.status} offset {tus_offset(stale)}")
        done = tus_patch(PORT, path, b, data[b:], host=third.host)
        if done.status != 204 or tus_offset(done) != len(data) or done.headers.get("upload-name") != name:
            wrong["complete"].append(f"{name} on {third.index}: {done.status} {done.headers} {done.body[:80]!r}")
        on_view = os.path.join(directory, name)
        if not os.path.isfile(on_view) or file_sha256(on_view) != sha256(data):
            wrong["bytes"].append(name)
        gone = [request(PORT, "HEAD", path, TUS, host=i.host).status for i in instances]
        if gone != [404] * INSTANCES:
            wrong["gone"].append(f"{name}: HEAD {gone}")
    REPORT.check(f"{label}: created and PATCHed a third of the way through one instance (201, 204)",
                 not wrong["create"], f"{wrong['create'][:3]}")
    REPORT.check(f"{label}: the next instance's HEAD gives that offset, through its own path", not wrong["head"],
                 f"{wrong['head'][:2]}")
    REPORT.check(f"{label}: continued through it (204, the new offset)", not wrong["continue"],
                 f"{wrong['continue'][:3]}")
    REPORT.check(f"{label}: the first instance, still at the old offset, answers 409 with the new one",
                 not wrong["stale"], f"{wrong['stale'][:3]}")
    REPORT.check(f"{label}: completed through a third instance (204, Upload-Name)", not wrong["complete"],
                 f"{wrong['complete'][:2]}")
    REPORT.check(f"{label}: each file holds its bytes (sha256 through the checks' path)", not wrong["bytes"],
                 f"{INSTANCES} uploads; wrong or missing: {wrong['bytes']}")
    REPORT.check(f"{label}: a completed upload is known to no instance (HEAD 404 on each)", not wrong["gone"],
                 f"{wrong['gone'][:3]}")

    # A PATCH cut off mid-body on instance 1, resumed on instance 2.
    name = "tus-cut.bin"
    data = rng.randbytes(2 * size)
    cut = len(data) // 2
    writer, other = instances[1], instances[2]
    created, path = tus_create(PORT, len(data), name, host=instances[0].host)
    partial = os.path.join(directory, TUS_PREFIX + path.rsplit("/", 1)[-1])
    conn = Conn(PORT, timeout=30, host=writer.host)
    conn.send(tus_patch_head(PORT, path, 0, len(data), writer.host), data[:cut])
    arrived = wait_for(lambda: os.path.getsize(partial) >= cut, 15, ignore=(FileNotFoundError,))
    meanwhile = tus_patch(PORT, path, cut, data[cut:cut + 1], host=other.host)
    conn.reset()
    REPORT.check(f"{label}: a PATCH in progress on one instance: the bytes reach the file another path shows",
                 created.status == 201 and arrived, f"creation {created.status}; {partial}: "
                 f"{os.path.getsize(partial) if os.path.exists(partial) else 'missing'} of {cut} bytes")
    REPORT.check(f"{label}: meanwhile another instance is refused the same upload (409: the lock holds across "
                 f"paths)", meanwhile.status == 409 and meanwhile.headers.get("retry-after") == "1",
                 f"{meanwhile.status} {meanwhile.headers.get('retry-after')} {meanwhile.body[:80]!r}")
    head = request(PORT, "HEAD", path, TUS, host=other.host)
    REPORT.check(f"{label}: after the connection is dropped, HEAD on another instance gives every byte that arrived",
                 head.status == 200 and tus_offset(head) == cut, f"{head.status}, offset {tus_offset(head)} of {cut}")
    offset = tus_offset(head) or 0
    refused = 0
    deadline = time.monotonic() + 15
    while True:
        # The cut-off request may still hold the upload for a moment (409, Retry-After).
        resumed = tus_patch(PORT, path, offset, data[offset:], host=other.host)
        if resumed.status != 409 or time.monotonic() > deadline:
            break
        refused += 1
        time.sleep(0.2)
    on_view = os.path.join(directory, name)
    REPORT.check(f"{label}: resumed on that instance from the HEAD offset, the file holds its bytes",
                 resumed.status == 204 and resumed.headers.get("upload-name") == name
                 and os.path.isfile(on_view) and file_sha256(on_view) == sha256(data),
                 f"{resumed.status} {resumed.body[:80]!r} after {refused} × 409")
    left = sorted(n for n in os.listdir(directory) if n.startswith(TUS_PREFIX))
    REPORT.check(f"{label}: no {TUS_PREFIX} name left after completion", not left, f"{left[:3]}")
    no_temporary_files(label, directory)
    REPORT.check(f"{label}: every instance still running", all(i.alive() for i in instances))
    cluster.tally.add("checked", INSTANCES + 1)
    exits_clean(label, cluster.stop_all())
    shared.remove()


# --------------------------------------------------------------------------- the trio

@contextlib.contextmanager
def trio_on(storage, binary: str, workspace: Workspace, netns, nginx):
    """Three instances' namespaces and the balancer in front of them, started, on
    `storage` (LocalStorage, or a network filesystem's mounts); the instances are
    started by each scenario (Cluster), and all stopped after it."""
    net = netns(INSTANCES)
    balancer = nginx(name="balancer")
    servers = "\n".join(f"        server {net.address(i)}:{PORT} max_fails=1 fail_timeout=1s;"
                        for i in range(INSTANCES))
    balancer.http = BALANCER.format(servers=servers, port=balancer.port, limit=LIMIT_MIB)
    balancer.start()
    tally = Tally()
    cluster = Cluster(binary, net, workspace.root, tally, storage)
    started = time.monotonic()
    try:
        yield cluster, balancer
    finally:
        cluster.stop_all()
        REPORT.info(f"{storage.name}: {tally.count('balanced')} uploads through the balancer, "
                    f"{tally.count('kills')} kills, {tally.count('restarts')} restarts, "
                    f"{tally.count('retries')} retries, {tally.count('checked')} files checked, "
                    f"{tally.count('read')} files read by readers in {tally.count('polls')} polls, "
                    f"{time.monotonic() - started:.1f} s")


SCENARIOS = [mixed_uploads, same_name, kill_mid_upload, rolling_restart]
# Unnamed staging exposes a name only between its link and its rename, a shorter
# window than named staging's: it gets more time to show.
SWEEP_RACES = [("named", False, 3 * RACE_SCALE), ("named", True, 3 * RACE_SCALE), ("auto", True, 6 * RACE_SCALE)]
SWEEP_RACE_IDS = ["named-new-names", "named-existing", "auto-existing"]


# ------------------------------------------------------------------ the tests, on any storage
# Collected by test_multi.py (one local directory) and test_gluster.py (GlusterFS
# mounts), each with its own `trio` fixture: the same scenarios on both.

@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_instances(trio, workspace, options, staging, scenario):
    cluster, balancer = trio
    scenario(cluster, balancer, workspace, random.Random(options.seed), staging)


@pytest.mark.parametrize("mode,existing,seconds", SWEEP_RACES, ids=SWEEP_RACE_IDS)
def test_sweep_race(trio, workspace, options, mode, existing, seconds):
    cluster, balancer = trio
    sweep_race(cluster, balancer, workspace, random.Random(options.seed), mode, existing=existing, seconds=seconds)


def test_undo_race(trio, workspace, options):
    cluster, balancer = trio
    undo_race(cluster, balancer, workspace, random.Random(options.seed), "auto")


def test_tus_across_instances(trio, workspace, options):
    cluster, balancer = trio
    tus_across_instances(cluster, balancer, workspace, random.Random(options.seed), "auto")
