"""Network namespaces for the multi-instance suite: one per upload-server instance,
each joined to the host by its own veth pair, so that every instance listens on its
own address and port 9000 as it would on its own host or pod.

Pair i takes the /30 10.231.0.(4i)/30 of the private block 10.231.0.0/24: the host
end is .4i+1, the namespace end .4i+2. No bridge and no forwarding: the host talks to
each namespace over its own link, and the namespaces cannot reach anything else.
Everything made here is removed by `cleanup` (also registered with atexit), even
after a failure half-way through `create`.
"""

from __future__ import annotations

import atexit
import os
import subprocess

BLOCK = "10.231.0"


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Namespaces:
    def __init__(self, count: int) -> None:
        # The pid keeps names of concurrent runs apart; interface names stay within 15 bytes.
        tag = os.getpid() % 100000
        self.count = count
        self.names = [f"upmulti{tag}-{i}" for i in range(count)]
        self.host_links = [f"um{tag}h{i}" for i in range(count)]
        self._made: list[str] = []
        atexit.register(self.cleanup)

    def address(self, index: int) -> str:
        """The instance's address inside namespace `index`."""
        return f"{BLOCK}.{4 * index + 2}"

    def host_address(self, index: int) -> str:
        """The host's end of the link to namespace `index` (the source of the balancer's requests)."""
        return f"{BLOCK}.{4 * index + 1}"

    def command(self, index: int, argv: list[str]) -> list[str]:
        """`argv` run inside namespace `index`: ip execs it, so the pid is the program's."""
        return ["ip", "netns", "exec", self.names[index], *argv]

    def create(self) -> None:
        in_use = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
        if f" {BLOCK}." in in_use:
            raise RuntimeError(f"{BLOCK}.0/24 is already in use on this host (another run?): "
                               f"{[line for line in in_use.splitlines() if BLOCK in line][:2]}")
        for index, (name, host_link) in enumerate(zip(self.names, self.host_links)):
            ip("netns", "add", name)
            self._made.append(name)
            ip("link", "add", host_link, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("addr", "add", f"{self.host_address(index)}/30", "dev", host_link)
            ip("link", "set", host_link, "up")
            ip("-n", name, "addr", "add", f"{self.address(index)}/30", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")

    def cleanup(self) -> None:
        """Deletes the namespaces; each takes its veth pair, host end included, with it.
        The processes started inside must have been stopped first (by their pids)."""
        for name in reversed(self._made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        for host_link in self.host_links:
            subprocess.run(["ip", "link", "del", host_link], capture_output=True)
        self._made = []
