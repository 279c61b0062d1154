"""A handler module's imports with the cyclic garbage collector paused, and what they built frozen after.

Importing boto3, Powertools and this layer allocates about 65,000 objects that live as long as the container,
and only about 400 of them are garbage. Each collection those allocations trigger walks the young ones again:
in the receiver's cold start, about a tenth of the time (bench/coldstart.py). Frozen (`gc.freeze`), they also
stay out of every later collection, warm invocations included. The few hundred garbage objects frozen with them
are a one-off few kilobytes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def imports_without_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
