"""Several instances on one local upload directory behind a real load balancer: the
scenarios of multi.py (three upload-server instances, each in its own network namespace
on port 9000, behind Debian's nginx on 127.0.0.1). Needs root (namespaces) and nginx.
"""

from __future__ import annotations

import pytest

from multi import (
    LocalStorage,
    trio_on,
)

pytestmark = [pytest.mark.slow, pytest.mark.root("network namespaces")]
BOTH_STAGINGS = True


@pytest.fixture
def trio(binary, workspace, netns, nginx):
    with trio_on(LocalStorage(workspace), binary, workspace, netns, nginx) as running:
        yield running


# The tests themselves (multi.py), collected here with this module's trio.
from multi import test_instances, test_sweep_race, test_tus_across_instances, test_undo_race  # noqa: E402, F401
