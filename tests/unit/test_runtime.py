"""The service runtime's collector tuning (in a child process: it changes global state)."""

from __future__ import annotations

import subprocess
import sys

from services.common.runtime import GC_THRESHOLDS


def test_tune_gc_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    code = ("import gc; from services.common.runtime import tune_gc; "
            "before = gc.get_freeze_count(); tune_gc(); "
            "print(before, gc.get_freeze_count(), *gc.get_threshold())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    before, frozen, *thresholds = map(int, out)
    assert before == 0
    assert frozen > 10_000  # the imported modules, schemas and their validators
    assert tuple(thresholds) == GC_THRESHOLDS
