"""A local Pluggy API emulator: Pluggy's REST API on 127.0.0.1 plus webhook deliveries like Pluggy's.

Start it in a test with `with PluggyEmulator(seed=1) as emu: base = emu.base_url`, or from a shell with
`python -m pluggy_emulator --port 8765`. Shapes follow /work/shared/pluggy-api.md; README.md
here lists the routes, the options and every deliberate difference from Pluggy (differences.py).
`PluggyEmulator(timed=True, time_scale=0.002)` runs syncs like Pluggy's, over emulator time (timeline.py).
"""

from pluggy_emulator.common import PluggyApiError
from pluggy_emulator.rate_limits import PLUGGY_RATE_LIMITS
from pluggy_emulator.server import PluggyEmulator
from pluggy_emulator.timeline import SyncTiming

__all__ = ["PLUGGY_RATE_LIMITS", "PluggyApiError", "PluggyEmulator", "SyncTiming"]
