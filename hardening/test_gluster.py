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
import shutil
import time

import pytest
from gluster import MOUNT_OPTIONS, VOLUME_OPTIONS, GlusterError, Volume

from common import REPORT
from multi import (
    INSTANCES,
    Shared,
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


# The tests themselves (multi.py), collected here with this module's trio.
from multi import test_instances, test_sweep_race, test_tus_across_instances, test_undo_race  # noqa: E402, F401
