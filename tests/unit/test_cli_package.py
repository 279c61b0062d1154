"""The operator CLI (pluggy_pipeline_cli) stands without the offline stack (pluggy_pipeline_local).

Every module of the CLI is imported, the parser built and a command run in a fresh interpreter, and none
of the offline stack (nor the emulator or moto it runs on) may be loaded: only `local` and `demo` import
it, when they run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

COMMANDS = (
    "local",
    "demo",
    "send",
    "register",
    "events",
    "dlq",
    "records",
    "webhook-url",
    "connect-token",
    "secrets",
    "watch",
)
OFFLINE = ("pluggy_pipeline_local", "pluggy_emulator", "moto")

PROBE = """
import contextlib, importlib, io, json, pkgutil, sys
import pluggy_pipeline_cli
from pluggy_pipeline_cli.cli import main

commands, offline_packages = json.loads(sys.argv[1])
modules = [m.name for m in pkgutil.walk_packages(pluggy_pipeline_cli.__path__, "pluggy_pipeline_cli.")]
for name in modules:
    importlib.import_module(name)
helped = []
for command in commands:  # every command's --help (local's and demo's included) builds without the stack
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        main([command, "--help"])
    helped += [command] if out.getvalue().startswith(f"usage: pluggy-pipeline {command}") else []
with contextlib.redirect_stdout(io.StringIO()) as out:  # an operator command, run
    code = main(["send", "item/updated", "--dry-run", "--url", "http://127.0.0.1:9/webhooks/pluggy"])
assert code == 0 and json.loads(out.getvalue())["event"] == "item/updated", out.getvalue()
offline = sorted(n for n in sys.modules if n.split(".")[0] in offline_packages)
print(json.dumps({"modules": modules, "helped": helped, "offline": offline}))
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PLUGGY_", "AWS_"))}


def test_the_cli_imports_and_runs_without_the_offline_stack() -> None:
    argument = json.dumps([COMMANDS, OFFLINE])
    result = subprocess.run(
        [sys.executable, "-c", PROBE, argument], capture_output=True, text=True, env=_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert "pluggy_pipeline_cli.commands.send" in report["modules"]
    assert "pluggy_pipeline_cli.commands.local" in report["modules"]
    assert report["helped"] == list(COMMANDS)
    assert report["offline"] == [], f"the CLI imported the offline stack at import time: {report['offline']}"


def test_the_console_script_lists_every_command() -> None:
    script = Path(sys.executable).with_name("pluggy-pipeline")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^ {4}(\S+)", result.stdout, flags=re.MULTILINE)  # argparse's subcommand rows
    assert listed == list(COMMANDS), result.stdout
