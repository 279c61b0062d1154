"""Set-up of the SDK conformance suite: node, and Pluggy's Node SDK installed from npm into a cache folder.

The SDK is pinned by package.json and package-lock.json beside this file (exact versions and integrity hashes
of the whole tree) and installed with `npm ci` into `$PLUGGY_PIPELINE_NPM_CACHE`, else
`$XDG_CACHE_HOME/pluggy-pipeline/npm`, else `~/.cache/pluggy-pipeline/npm`: outside the repository, one folder
per lock-file hash. A finished install is marked and reused without npm (reruns work offline); npm itself
prefers its own cache (`--prefer-offline`). Concurrent runs wait on a file lock.

Without node or npm the suite is skipped, except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PINNED = ("package.json", "package-lock.json")
MIN_NODE_MAJOR = 18  # global fetch (the script's control calls); the SDK itself needs 12
NPM_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class NodeSdk:
    node: str
    sdk_dir: Path  # holds node_modules/pluggy-sdk
    installed_now: bool
    install_seconds: float


def cache_root() -> Path:
    explicit = os.environ.get("PLUGGY_PIPELINE_NPM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pluggy-pipeline" / "npm"


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in PINNED:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the SDK conformance suite must run)")
    pytest.skip(reason)


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return int(out.strip().lstrip("v").split(".")[0])


def install_sdk(npm: str, root: Path) -> tuple[Path, bool, float]:
    """(folder with node_modules/pluggy-sdk, installed by this call?, seconds spent); idempotent."""
    digest = _lock_digest()
    target = root / f"pluggy-sdk-{digest}"
    marker = target / ".installed"
    if marker.is_file():
        return target, False, 0.0
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing the same thing
        if marker.is_file():
            return target, False, time.monotonic() - started
        staging = root / f".staging-{digest}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in PINNED:
            shutil.copy2(HERE / name, staging / name)
        command = [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        result = subprocess.run(
            command, cwd=staging, capture_output=True, text=True, timeout=NPM_TIMEOUT_SECONDS, check=False
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        (staging / ".installed").write_text(digest + "\n")
        shutil.rmtree(target, ignore_errors=True)  # a half-finished folder from an interrupted run
        staging.rename(target)
    return target, True, time.monotonic() - started


@pytest.fixture(scope="session")
def node_sdk() -> Iterator[NodeSdk]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are needed for the Pluggy SDK conformance suite")
    assert node is not None and npm is not None
    if _node_major(node) < MIN_NODE_MAJOR:
        pytest.fail(f"node {MIN_NODE_MAJOR} or later is needed for the SDK conformance suite")
    sdk_dir, installed_now, seconds = install_sdk(npm, cache_root())
    yield NodeSdk(node=node, sdk_dir=sdk_dir, installed_now=installed_now, install_seconds=seconds)
