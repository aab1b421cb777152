"""Several instances on one local upload directory behind a real load balancer: the
scenarios of multi.py (three upload-server instances, each in its own network namespace
on port 9000, behind Debian's nginx on 127.0.0.1). Needs root (namespaces) and nginx.
"""

from __future__ import annotations

import random

import pytest

from multi import (
    SCENARIOS,
    SWEEP_RACE_IDS,
    SWEEP_RACES,
    LocalStorage,
    sweep_race,
    trio_on,
    tus_across_instances,
    undo_race,
)

pytestmark = [pytest.mark.slow, pytest.mark.root("network namespaces")]
BOTH_STAGINGS = True


@pytest.fixture
def trio(binary, workspace, netns, nginx):
    with trio_on(LocalStorage(workspace), binary, workspace, netns, nginx) as running:
        yield running


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
