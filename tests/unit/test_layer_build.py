"""CommonLayer's build: `sam build` runs layers/common/Makefile, which ships the layer byte-compiled.

/opt is read-only on Lambda, so a layer without .pyc is compiled again at every cold start (bench/coldstart.py
measures it). These tests run the Makefile's target as `sam build` does (ARTIFACTS_DIR set; pip reaches PyPI or
its cache) and check what lands in python/: every module with an unchecked-hash .pyc, nothing the runtime
never reads, arm64 wheels.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pluggy_pipeline_local.template import load_template

from tests.conftest import REPO_ROOT

LAYER_SOURCE = REPO_ROOT / "layers" / "common"


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"ARTIFACTS_DIR", "MAKEFLAGS", "MFLAGS"}}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(LAYER_SOURCE), "build-CommonLayer", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("CommonLayer")
    (artifacts / "python").mkdir()
    (artifacts / "python" / "left-over.txt").write_text("from an earlier build")
    done = _make(f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}")
    assert done.returncode == 0, f"make build-CommonLayer failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return artifacts / "python"


def test_the_template_builds_the_layer_with_its_makefile() -> None:
    layer = load_template()["Resources"]["CommonLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Metadata"]["BuildArchitecture"] == "arm64"
    makefile = REPO_ROOT / layer["Properties"]["ContentUri"] / "Makefile"
    assert "\nbuild-CommonLayer:" in makefile.read_text(encoding="utf-8")  # SAM runs build-<LogicalId>


def test_every_module_ships_with_an_unchecked_hash_pyc(built: Path) -> None:
    sources = sorted(built.rglob("*.py"))
    assert built / "pluggy_pipeline" / "receiver.py" in sources
    assert (built / "aws_lambda_powertools" / "__init__.py") in sources
    tag = sys.implementation.cache_tag
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        header = pyc.read_bytes()[:16]
        assert header[:4] == importlib.util.MAGIC_NUMBER, source
        # PEP 552 flags: 0b01 = hash-based, not checked against the source (valid whatever mtime the zip gives).
        assert int.from_bytes(header[4:8], "little") == 0b01, source
    assert {p.name for p in built.rglob("*.pyc")} == {f"{s.stem}.{tag}.pyc" for s in sources}  # no strays
    code = marshal.loads((built / "pluggy_pipeline" / "__pycache__" / f"receiver.{tag}.pyc").read_bytes()[16:])
    assert code.co_filename == "/opt/python/pluggy_pipeline/receiver.py"  # where Lambda mounts the layer


def test_only_what_the_runtime_reads(built: Path) -> None:
    top = {p.name for p in built.iterdir()}
    assert {"pluggy_pipeline", "aws_lambda_powertools", "requests", "__pycache__"} <= top
    assert not top & {"requirements.txt", "Makefile", "bin", "left-over.txt"}
    assert not [p for p in built.rglob("*") if p.is_dir() and (p.name == "tests" or p.suffix == ".data")]
    assert not list(built.glob("boto3*")) and not list(built.glob("botocore*"))  # the runtime brings its own
    source = {p.relative_to(LAYER_SOURCE) for p in (LAYER_SOURCE / "pluggy_pipeline").glob("*.py")}
    assert source == {p.relative_to(built) for p in (built / "pluggy_pipeline").glob("*.py")}


def test_compiled_extras_are_the_arm64_wheels(built: Path) -> None:
    extensions = sorted(p.name for p in built.rglob("*.so"))
    assert extensions and all("aarch64" in name for name in extensions), extensions


def test_the_target_refuses_to_run_without_artifacts_dir() -> None:
    done = _make()
    assert done.returncode != 0
    assert "ARTIFACTS_DIR is not set" in done.stderr


def test_the_target_refuses_another_python(tmp_path: Path) -> None:
    """The .pyc files are for one CPython version: the runtime's."""
    other = tmp_path / "python3.12"
    other.write_text("#!/bin/sh\necho 3.12\n")
    other.chmod(0o755)
    done = _make(f"ARTIFACTS_DIR={tmp_path / 'out'}", f"PYTHON={other}")
    assert done.returncode != 0
    assert "is not Python 3.13" in done.stderr
    assert not (tmp_path / "out").exists()
