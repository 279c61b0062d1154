"""What the benchmark modules share: where things are, progress lines, latency cells, the rotating order that
interleaves a run with its baseline, the environment, handlers loaded as Lambda loads them, a Lambda context,
botocore call counters, and file descriptor 1 pointed away from the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import subprocess
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pluggy_pipeline_local.template import load_template

from bench import Stats, fmt, percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = REPO_ROOT / "layers" / "common"
REGION = "us-east-1"
# Credentials for moto, and what must not leak into a benchmark from the caller's shell.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
AWS_ENV_REMOVED = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE")

T = TypeVar("T")


def progress_of(bench: str) -> Callable[[str], None]:
    """A module's progress lines, on stderr (stdout may be pointed at /dev/null)."""

    def progress(message: str) -> None:
        print(f"bench.{bench}: {message}", file=sys.stderr, flush=True)

    return progress


def python_executable() -> str:
    """The project's virtualenv Python (what `make bench` runs), else this one: for child processes."""
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def latency_cells(samples: Sequence[float]) -> tuple[str, str, str, str]:
    """p50, p95, p99 and max, nearest-rank, formatted."""
    stats = Stats.of(samples)
    return fmt(stats.median), fmt(stats.p95), fmt(percentile(samples, 0.99)), fmt(stats.maximum)


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """`items` starting at `turn` (modulo): interleaved runs take turns going first (two items: alternate)."""
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


def own_rss_kb() -> int:
    """This process's resident set (VmRSS), in KiB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------------------
# Child processes: only what the Lambda imports (the layer, boto3), against local AWS
# ---------------------------------------------------------------------------------------------------------


def child_environment(work: Path, aws_env: Mapping[str, str]) -> dict[str, str]:
    """A child's whole environment: `aws_env` (endpoint, fake credentials), no AWS config files, the layer."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    return {
        **base,
        **aws_env,
        "AWS_CONFIG_FILE": str(work / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONPATH": str(LAYER_DIR),  # as Lambda puts the layer's /opt/python on sys.path
    }


def run_child(code: str, job: Mapping[str, Any], env: Mapping[str, str], work: Path, name: str) -> dict[str, Any]:
    """`python -c code <job file>` in a fresh interpreter; the job's "out" is where it writes its JSON result."""
    job_file, out_file = work / f"{name}.job.json", work / f"{name}.out.json"
    job_file.write_text(json.dumps({**job, "out": str(out_file)}), encoding="utf-8")
    done = subprocess.run(
        [python_executable(), "-c", code, str(job_file)],
        env=dict(env),
        stdout=subprocess.DEVNULL,  # the functions' JSON log lines
        stderr=subprocess.PIPE,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {name} failed: {done.stderr.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(out_file.read_text(encoding="utf-8"))
    return result


# ---------------------------------------------------------------------------------------------------------
# Environment, template, handlers
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str], remove: Sequence[str] = ()) -> Iterator[None]:
    """os.environ with `values` set and `remove` unset; restored as it was afterwards."""
    saved = dict(os.environ)
    try:
        for key in remove:
            os.environ.pop(key, None)
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@functools.cache
def template() -> dict[str, Any]:
    return load_template()


def load_handler(function: str) -> ModuleType:
    """functions/<function>/app.py loaded from its file, as Lambda loads the handler module."""
    path = REPO_ROOT / "functions" / function / "app.py"
    spec = importlib.util.spec_from_file_location(f"bench_{function}_app", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 256
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 5000


# ---------------------------------------------------------------------------------------------------------
# AWS calls
# ---------------------------------------------------------------------------------------------------------


class CallCounter:
    """botocore hooks on clients: one `before-call` per API call, one `request-created` per HTTP attempt.

    With `callers`, it also keeps which functions of pluggy_pipeline made each operation (3 frames).
    """

    def __init__(self, *, callers: bool = False) -> None:
        self.calls: list[str] = []
        self.attempts = 0
        self.callers: dict[str, set[str]] | None = {} if callers else None

    def before_call(self, model: Any = None, **_: Any) -> None:
        operation = f"{model.service_model.service_name}.{model.name}"
        self.calls.append(operation)
        if self.callers is not None:
            ours = [f for f in reversed(traceback.extract_stack(limit=40)) if "pluggy_pipeline" in f.filename]
            chain = " <- ".join(f"`{Path(f.filename).stem}.{f.name}()`" for f in ours[:3])
            self.callers.setdefault(operation, set()).add(chain or "?")

    def request_created(self, **_: Any) -> None:
        self.attempts += 1

    def attach(self, *clients: Any) -> None:
        for client in clients:
            client.meta.events.register("before-call", self.before_call)
            client.meta.events.register("request-created", self.request_created)

    def take(self) -> tuple[tuple[str, ...], int]:
        """The calls (in order) and HTTP attempts since the last take."""
        calls, attempts = tuple(self.calls), self.attempts
        self.calls, self.attempts = [], 0
        return calls, attempts

    def take_counts(self) -> dict[str, int]:
        """The calls since the last take, counted by operation."""
        return dict(Counter(self.take()[0]))


# ---------------------------------------------------------------------------------------------------------
# stdout: the functions print a JSON log line and an EMF blob per invocation
# ---------------------------------------------------------------------------------------------------------

_PIPE_READER = "import sys\nn = 0\nwhile chunk := sys.stdin.buffer.read(65536):\n    n += len(chunk)\nprint(n)\n"


class Stdout:
    """Points file descriptor 1 at /dev/null (on entry) or at a pipe drained by another process (Lambda's log pipe).

    Redirecting the descriptor, not sys.stdout, is what catches Powertools: its Logger keeps the stream it
    was created with. sys.stdout is line-buffered meanwhile, so every line is written as it is printed.
    """

    def __init__(self) -> None:
        self._saved: int | None = None
        self._devnull: int | None = None
        self._reader: subprocess.Popen[bytes] | None = None
        self._line_buffering: bool | None = None

    def __enter__(self) -> Stdout:
        sys.stdout.flush()
        self._saved = os.dup(1)
        self._devnull = os.open(os.devnull, os.O_WRONLY)
        if isinstance(sys.stdout, io.TextIOWrapper):
            self._line_buffering = sys.stdout.line_buffering
            sys.stdout.reconfigure(line_buffering=True)
        self.to("devnull")
        return self

    def to(self, target: str) -> None:
        sys.stdout.flush()
        if target == "devnull":
            assert self._devnull is not None
            os.dup2(self._devnull, 1)
        elif target == "pipe":
            if self._reader is None:
                self._reader = subprocess.Popen(
                    [sys.executable, "-c", _PIPE_READER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            assert self._reader.stdin is not None
            os.dup2(self._reader.stdin.fileno(), 1)
        else:
            raise ValueError(target)

    def piped_bytes(self) -> int | None:
        """Close the pipe (pointing fd 1 at /dev/null first) and return how many bytes went through it."""
        if self._reader is None:
            return None
        self.to("devnull")
        reader, self._reader = self._reader, None
        out, _ = reader.communicate(timeout=30)  # closes its stdin: the reader sees EOF and prints the count
        return int(out.strip() or 0)

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.flush()
        self.piped_bytes()
        if self._saved is not None:
            os.dup2(self._saved, 1)
            os.close(self._saved)
        if self._devnull is not None:
            os.close(self._devnull)
        if self._line_buffering is not None and isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(line_buffering=self._line_buffering)
