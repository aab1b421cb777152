"""The mutants of `scripts/harden mutants` (hardening/mutants.py) still apply: each
anchor matches exactly once in today's sources. Quick (no build); the mutant run
itself is too slow for CI."""

import mutants


def test_every_mutant_anchor_matches_once():
    broken = mutants.broken_anchors()
    assert not broken, "update MUTANTS in hardening/mutants.py:\n" + "\n".join(broken)


def test_each_mutant_names_suites_that_exist():
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    missing = [f"{m.name}: {suite}" for m in mutants.MUTANTS for suite in m.suites
               if not os.path.exists(os.path.join(here, f"test_{suite}.py"))]
    assert not missing
