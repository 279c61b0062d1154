"""pluggy-emulator is a distribution of its own: it imports nothing from pluggy-pipeline, and its wheel, installed
into a bare virtualenv next to nothing but its dependencies (pydantic, requests), serves Pluggy's API from
`python -m pluggy_emulator`."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pydantic
import pytest
import requests

from tests.conftest import REPO_ROOT

PACKAGE_DIR = REPO_ROOT / "pluggy-emulator"
ALLOWED_THIRD_PARTY = {"pydantic", "pydantic_core", "requests"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_emulator_imports_only_the_standard_library_and_pydantic() -> None:
    modules = sorted((PACKAGE_DIR / "pluggy_emulator").glob("*.py"))
    assert len(modules) >= 10, modules
    for module in modules:
        foreign = _imported_roots(module) - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY - {"pluggy_emulator"}
        assert not foreign, f"{module.name} imports {sorted(foreign)}"


@pytest.mark.slow
def test_the_wheel_runs_alone_in_a_bare_virtualenv(tmp_path: Path) -> None:
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    shutil.copytree(PACKAGE_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "--wheel-dir", str(wheels), str(source)], check=True, timeout=300)
    (wheel,) = wheels.glob("pluggy_emulator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert {"pluggy_emulator/__main__.py", "pluggy_emulator/server.py", "pluggy_emulator/py.typed"} <= names
    assert not [n for n in names if n.startswith(("pluggy_pipeline", "tests/"))], names
    assert "Requires-Dist: pydantic" in metadata and "Requires-Dist: requests" in metadata
    assert "# pluggy-emulator" in metadata  # the README is the description
    assert "pluggy-emulator = pluggy_emulator.__main__:main" in entry_points

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    with zipfile.ZipFile(wheel) as archive:  # a wheel is installed by unpacking it into site-packages
        archive.extractall(site)
    # The dependencies from this interpreter's site-packages as a plain path entry: no .pth hook of the dev venv
    # runs there, so pluggy-pipeline's editable packages stay invisible.
    (site / "deps.pth").write_text(str(Path(pydantic.__file__).parents[1]) + "\n", encoding="utf-8")
    assert Path(pydantic.__file__).parents[1] == Path(sysconfig.get_path("purelib"))

    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "PYTHONPATH"}
    probe = "import importlib.util as u; print(u.find_spec('pluggy_pipeline'), u.find_spec('pluggy_pipeline_local'))"
    assert subprocess.check_output([str(python), "-c", probe], text=True, env=env, cwd=tmp_path).split() == [
        "None",
        "None",
    ]
    command = [str(python), "-m", "pluggy_emulator", "--port", "0", "--client-id", "a", "--client-secret", "b"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        base = banner.split(" on ", 1)[1].split(" ", 1)[0]
        key = requests.post(f"{base}/auth", json={"clientId": "a", "clientSecret": "b"}, timeout=5).json()["apiKey"]
        connectors = requests.get(f"{base}/connectors?sandbox=true", headers={"X-API-KEY": key}, timeout=5).json()
        assert "Pluggy Bank" in [c["name"] for c in connectors["results"]]
        refused = requests.post(f"{base}/auth", json={"clientId": "a", "clientSecret": "wrong"}, timeout=5)
        assert refused.status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
