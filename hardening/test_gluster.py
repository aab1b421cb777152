"""Several hosts on a real network filesystem: the multi-instance scenarios of multi.py
on GlusterFS. A replica-2 volume on two local bricks (gluster.py), with exactly the
options of deploy/glusterfs/volume-options, mounted once per instance (FUSE, with
deploy/glusterfs/mount-options) as if each instance ran on its own host, plus a mount
for the checks and one for the readers that poll final names: each instance in its
own network namespace behind nginx, as in test_multi.py; resumable (tus) uploads
continued through another host's mount (multi.tus_across_instances). And one brick's
process killed under load and brought back: nothing acknowledged lost or changed, and
uploads after the heal pass their checks.

Needs root, FUSE, nginx and glusterfs-server/glusterfs-client (.ci/run installs them);
skipped with the reason otherwise. HARDEN_GLUSTER_VOLUME_OPTIONS / _MOUNT_OPTIONS: other
files, or `none` (to show what fails without them).
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time

import pytest
from gluster import MOUNT_OPTIONS, VOLUME_OPTIONS, GlusterError, Volume

from common import REPORT, KiB, Part, file_sha256
from multi import (
    INSTANCES,
    Ledger,
    Reader,
    Shared,
    Watcher,
    balanced_upload,
    no_temporary_files,
    stored_names,
    trio_on,
)

pytestmark = [pytest.mark.slow, pytest.mark.root("mount, network namespaces"), pytest.mark.gluster]
BOTH_STAGINGS = False   # O_TMPFILE does not work on GlusterFS: every instance stages named files

CLIENTS = INSTANCES + 2  # a mount per instance, one for the checks, one for the readers
STARTED = time.monotonic()


def _setting(env: str, default: str) -> str | None:
    value = os.environ.get(env) or default
    return None if value == "none" else value


class GlusterStorage:
    """Shared directories on the volume: instance i writes through client i, the checks
    read through another client, the readers through a third."""

    name = "GlusterFS replica 2"

    def __init__(self, volume: Volume) -> None:
        self.volume = volume

    @staticmethod
    def staging(flag: str) -> str:
        """GlusterFS has no O_TMPFILE: `auto` chooses named staging too."""
        return "named"

    def make(self, label: str) -> Shared:
        view = os.path.join(self.volume.mounts[INSTANCES], label)
        os.makedirs(view)
        return Shared([os.path.join(self.volume.mounts[i], label) for i in range(INSTANCES)], view,
                      os.path.join(self.volume.mounts[INSTANCES + 1], label))


@pytest.fixture(scope="module")
def volume():
    if os.geteuid() != 0:
        pytest.skip("needs root to run glusterd and mount")
    for tool in ("glusterd", "gluster", "mount.glusterfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install glusterfs-server glusterfs-client)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: FUSE is missing")
    made = Volume(CLIENTS, _setting("HARDEN_GLUSTER_VOLUME_OPTIONS", VOLUME_OPTIONS),
                  _setting("HARDEN_GLUSTER_MOUNT_OPTIONS", MOUNT_OPTIONS))
    started = time.monotonic()
    try:
        made.setup()
    except (GlusterError, OSError, TimeoutError) as error:
        made.teardown()
        pytest.skip(f"GlusterFS cannot run here: {error}")
    REPORT.info(f"volume {made.name} up in {time.monotonic() - started:.1f} s: "
                f"{len(made.volume_options)} volume options, mount options {made.mount_options}")
    yield made
    made.teardown()


@pytest.fixture
def trio(binary, workspace, netns, nginx, volume):
    with trio_on(GlusterStorage(volume), binary, workspace, netns, nginx) as running:
        yield running


def brick_outage(cluster, balancer, volume: Volume, rng: random.Random, seconds: float = 2.0) -> None:
    """Uploads through the balancer while one brick's glusterfsd is killed (-9) and,
    after `seconds`, started again (`gluster volume start VOL force`), then healed.
    Every acknowledged upload is intact on both bricks after the heal; an upload that
    failed meanwhile failed cleanly (an error answer, nothing under its name); uploads
    after the heal pass their checks."""
    label = "one brick killed under load and brought back"
    shared = cluster.storage.make("brick-outage")
    cluster.start_all(shared, [])
    ledger = Ledger()
    failed: list[tuple[str, str]] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        local = random.Random(rng.getrandbits(32) + number)
        sequence = 0
        while not stop.is_set():
            sequence += 1
            name = f"outage-{number}-{sequence}.bin"
            data = local.randbytes(local.randrange(1, 512 * KiB))
            ledger.expect(name, data)
            response, _, error = balanced_upload(balancer.port, [Part("file", name, data)])
            key = str(response.status) if response is not None else "no answer"
            with lock:
                statuses[key] = statuses.get(key, 0) + 1
            if response is not None and response.status == 200 and stored_names(response.body) == [(name, len(data))]:
                ledger.acknowledge(name, data)
            else:
                with lock:
                    failed.append((name, f"{key} {response.body[:80] if response else error}"))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
    with Watcher(shared.view, ledger) as watcher, Reader(shared.reader, ledger, cluster.tally) as reader:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        killed = volume.kill_brick(1)
        cluster.tally.add("brick outages")
        time.sleep(seconds)
        volume.restart_bricks()
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(60)
    healed, heal_seconds = volume.wait_healed()
    REPORT.check(f"{label}: the volume heals", healed, f"glusterfsd {killed} killed, down {seconds} s; "
                 f"heal {'done' if healed else 'not done'} after {heal_seconds:.1f} s")
    total = sum(statuses.values())
    REPORT.check(f"{label}: most uploads acknowledged through the outage", statuses.get("200", 0) >= total // 2,
                 f"{total} uploads, statuses {dict(sorted(statuses.items()))}")
    left = [name for name, _ in failed if os.path.exists(os.path.join(shared.view, name))]
    REPORT.check(f"{label}: an upload that failed left nothing under its name", not left,
                 f"{len(failed)} failed ({failed[:2]}); left: {left[:3]}")
    problems, checked = ledger.verify(shared.view, cluster.tally)
    REPORT.check(f"{label}: every acknowledged file intact, nothing else in the directory", not problems,
                 f"{checked} files checked; {problems[:3]}")
    differ = []
    for name, shas in ledger.acked.items():
        copies = [file_sha256(os.path.join(brick, "brick-outage", name)) if
                  os.path.exists(os.path.join(brick, "brick-outage", name)) else None for brick in volume.bricks]
        if any(copy not in shas for copy in copies):
            differ.append(name)
    cluster.tally.add("checked", 2 * len(ledger.acked))
    REPORT.check(f"{label}: after the heal both bricks hold every acknowledged file, intact", not differ,
                 f"{len(ledger.acked)} files on 2 bricks; differ or missing: {differ[:3]}")
    watcher.check(label)
    reader.check(label)
    after = Ledger()
    bad = []
    for number in range(20):
        name = f"after-heal-{number}.bin"
        data = rng.randbytes(rng.randrange(1, 256 * KiB))
        after.expect(name, data)
        response, _, error = balanced_upload(balancer.port, [Part("file", name, data)])
        if response is not None and response.status == 200:
            after.acknowledge(name, data)
        else:
            bad.append(f"{name}: {response.status if response else error}")
    for name, shas in after.acked.items():
        if file_sha256(os.path.join(shared.view, name)) not in shas:
            bad.append(f"{name}: other bytes")
    cluster.tally.add("balanced", total + 20)
    REPORT.check(f"{label}: uploads after the heal pass their checks", not bad, f"20 uploads; {bad[:3]}")
    no_temporary_files(label, shared.view)
    cluster.stop_all()
    shared.remove()


def test_brick_outage(trio, options, volume):
    cluster, balancer = trio
    brick_outage(cluster, balancer, volume, random.Random(options.seed))


# The tests themselves (multi.py), collected here with this module's trio.
from multi import test_instances, test_sweep_race, test_tus_across_instances, test_undo_race  # noqa: E402, F401
