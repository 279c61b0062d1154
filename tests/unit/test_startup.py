"""imports_without_gc: the collector is off inside, back as it was after, and what was built inside is frozen."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Iterator

import pytest
from pluggy_pipeline.startup import imports_without_gc


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # the suite's own objects go back to the collector
    (gc.enable if enabled else gc.disable)()


def test_the_collector_is_paused_inside_and_enabled_after() -> None:
    gc.enable()
    with imports_without_gc():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_what_was_built_inside_is_frozen_out_of_later_collections() -> None:
    gc.unfreeze()
    with imports_without_gc():
        built = [[index] for index in range(1000)]
    assert gc.get_freeze_count() >= len(built)


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    with imports_without_gc():
        pass
    assert not gc.isenabled()


def test_a_failing_import_still_gives_the_collector_back() -> None:
    gc.enable()
    with pytest.raises(ImportError), imports_without_gc():
        importlib.import_module("pluggy_pipeline.no_such_module")
    assert gc.isenabled()
