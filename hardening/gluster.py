"""GlusterFS on this machine for the multi-host suite (test_gluster.py): glusterd (started
here when it is not running), a replica-2 volume on two bricks in a folder of its own
(`force`: both bricks are on this host), deploy/glusterfs/volume-options applied, and
FUSE mounts, one per client: one per upload-server instance as if each ran on its own
host, and more for the checks and the readers. `teardown` unmounts, stops and deletes
the volume, removes the bricks and stops the glusterd it started (by its pid), also
after a failure half-way through `setup`.

The bricks are addressed as 127.0.0.2: glusterd refuses 127.0.0.1 and `localhost` as a
brick's host, but takes any other loopback address, so nothing leaves this machine.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLUME_OPTIONS = os.path.join(ROOT, "deploy", "glusterfs", "volume-options")
MOUNT_OPTIONS = os.path.join(ROOT, "deploy", "glusterfs", "mount-options")
BRICK_HOST = "127.0.0.2"


def read_settings(path: str) -> list[tuple[str, str]]:
    """`key value` lines of deploy/glusterfs/volume-options or mount-options; blank
    lines and `#` comments skipped."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition(" ")
                out.append((key, value.strip()))
    return out


def mount_option_string(settings: list[tuple[str, str]]) -> str:
    return ",".join(f"{key}={value}" if value else key for key, value in settings)


class GlusterError(RuntimeError):
    pass


def gluster(*args: str, timeout: float = 60, check: bool = True) -> str:
    done = subprocess.run(["gluster", "--mode=script", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise GlusterError(f"gluster {' '.join(args)}: {(done.stdout + done.stderr).strip()}")
    return done.stdout


class Volume:
    def __init__(self, clients: int, volume_options: str | None = VOLUME_OPTIONS,
                 mount_options: str | None = MOUNT_OPTIONS) -> None:
        base = os.environ.get("HARDEN_TMP") or tempfile.gettempdir()
        self.root = tempfile.mkdtemp(prefix="harden-gluster-", dir=base)
        self.name = f"uphard{os.getpid()}"
        self.bricks = [os.path.join(self.root, f"brick{i}") for i in range(2)]
        self.mounts = [os.path.join(self.root, f"client{i}") for i in range(clients)]
        self.volume_options = read_settings(volume_options) if volume_options else []
        self.mount_options = read_settings(mount_options) if mount_options else []
        self.started_glusterd: int | None = None
        self._created = False
        self._mounted: list[str] = []
        atexit.register(self.teardown)

    # ---- setup

    def setup(self) -> None:
        self._glusterd()
        os.makedirs(self.bricks[0])
        os.makedirs(self.bricks[1])
        gluster("volume", "create", self.name, "replica", "2",
                *(f"{BRICK_HOST}:{brick}" for brick in self.bricks), "force")
        self._created = True
        for key, value in self.volume_options:
            gluster("volume", "set", self.name, key, value)
        gluster("volume", "start", self.name)
        self.wait_bricks_online()
        options = mount_option_string(self.mount_options)
        for mount in self.mounts:
            os.makedirs(mount)
            argv = ["mount", "-t", "glusterfs"] + (["-o", options] if options else []) \
                + [f"{BRICK_HOST}:/{self.name}", mount]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if done.returncode != 0 or not os.path.ismount(mount):
                raise GlusterError(f"{' '.join(argv)}: {(done.stdout + done.stderr).strip()}")
            self._mounted.append(mount)

    def _glusterd(self) -> None:
        running = subprocess.run(["pgrep", "-x", "glusterd"], capture_output=True, text=True).stdout.split()
        if not running:
            done = subprocess.run(["glusterd", "--log-level", "WARNING"], capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise GlusterError(f"glusterd did not start: {(done.stdout + done.stderr).strip()}")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not self.started_glusterd:
                found = subprocess.run(["pgrep", "-x", "glusterd"], capture_output=True, text=True).stdout.split()
                self.started_glusterd = int(found[0]) if found else None
                time.sleep(0.1)
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(["gluster", "--mode=script", "volume", "list"], capture_output=True, text=True,
                                  timeout=30)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise GlusterError(f"glusterd does not answer: {(done.stdout + done.stderr).strip()}")
            time.sleep(0.2)

    # ---- bricks

    def brick_pids(self) -> dict[str, int | None]:
        """Each brick's glusterfsd pid, None when it is offline."""
        out = gluster("volume", "status", self.name, "detail")
        pids: dict[str, int | None] = {}
        for block in out.split("Brick                : ")[1:]:
            brick = block.split("\n", 1)[0].strip().split(":", 1)[1]
            online = re.search(r"Online\s+:\s+(\S+)", block)
            pid = re.search(r"Pid\s+:\s+(\S+)", block)
            pids[brick] = int(pid.group(1)) if online and online.group(1) == "Y" and pid and pid.group(1).isdigit() \
                else None
        return pids

    def wait_bricks_online(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pids = self.brick_pids()
            if len(pids) == 2 and all(pids.values()):
                return
            if time.monotonic() > deadline:
                raise GlusterError(f"bricks not online: {pids}")
            time.sleep(0.2)

    def kill_brick(self, index: int) -> int:
        pid = self.brick_pids()[self.bricks[index]]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        return pid

    def restart_bricks(self) -> None:
        gluster("volume", "start", self.name, "force")
        self.wait_bricks_online()

    def heal_pending(self) -> int:
        out = gluster("volume", "heal", self.name, "info", check=False)
        return sum(int(n) for n in re.findall(r"Number of entries:\s*(\d+)", out))

    def wait_healed(self, timeout: float = 60) -> tuple[bool, float]:
        started = time.monotonic()
        gluster("volume", "heal", self.name, check=False)
        while True:
            if self.heal_pending() == 0:
                return True, time.monotonic() - started
            if time.monotonic() - started > timeout:
                return False, time.monotonic() - started
            time.sleep(0.5)

    # ---- teardown

    def teardown(self) -> None:
        for mount in reversed(self._mounted):
            if subprocess.run(["umount", mount], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", mount], capture_output=True)
        self._mounted = []
        shd = None
        try:
            with open(f"/var/run/gluster/shd/{self.name}/{self.name}-shd.pid") as f:
                shd = int(f.read().strip())
        except (OSError, ValueError):
            pass
        if self._created:
            gluster("volume", "stop", self.name, "force", check=False)
            gluster("volume", "delete", self.name, check=False)
            self._created = False
        if self.started_glusterd:
            with_pid = self.started_glusterd
            self.started_glusterd = None
            try:
                os.kill(with_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # The volume's self-heal daemon, if glusterd left it running: stopped by its pid.
        if shd is not None and os.path.exists(f"/proc/{shd}"):
            try:
                with open(f"/proc/{shd}/cmdline", "rb") as f:
                    if b"glustershd" in f.read():
                        os.kill(shd, signal.SIGTERM)
            except OSError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
