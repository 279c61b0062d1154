"""Cold start of the built receiver: what `sam build` ships, run as Lambda runs it, against a minimal handler.

Copies of .aws-sam/build/ReceiverFunction (Lambda's /var/task), .aws-sam/build/CommonLayer/python (/opt/python)
and the runtime-like boto3 of .aws-sam/lambda-runtime (/var/runtime) go to a temporary folder made read-only,
as /opt and /var/task are on Lambda: a module without a valid .pyc is compiled again at every cold start, and
nothing is written there (nor into the repository). Each process is a fresh `python -I -S` (no site-packages,
no PYTHON* variables) with Lambda's sys.path order and the function's environment only, serving one event
against a moto server on 127.0.0.1. A is the receiver, B a minimal boto3 handler making the same two calls;
every variant runs once per round, in an order rotating from round to round.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pluggy_pipeline.auth import sign
from pluggy_pipeline_cli.webhook_examples import VALID_PAYLOADS
from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID as CLIENT_ID
from pluggy_pipeline_local.devsecrets import LOCAL_SIGNING_KEY, LOCAL_WEBHOOK_SECRET, PLUGGY_SOURCE_IP
from pluggy_pipeline_local.events_corpus import SECRET_HEADER, SIGNATURE_HEADER, Scenario, proxy_event
from pluggy_pipeline_local.invoke import function_spec
from pluggy_pipeline_local.moto_server import moto_server

from bench import Measure, Section, Stats, Table, fmt, ratio, verdict

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / ".aws-sam" / "build"
RUNTIME_DIR = REPO_ROOT / ".aws-sam" / "lambda-runtime"
FUNCTION = "ReceiverFunction"
# Template parameters: the client id checked, signatures required, Pluggy's source IP allowed.
PARAMETERS = {"PluggyClientId": CLIENT_ID, "RequireSignature": "true", "AllowedSourceCidrs": f"{PLUGGY_SOURCE_IP}/32"}
GOAL_RATIO = 1.2  # the goal: A/B of the medians (the only figure written here; everything else is measured)


@dataclass(frozen=True)
class Sizes:
    rounds: int  # each round runs every variant once
    warmup_rounds: int


FULL = Sizes(30, 2)
QUICK = Sizes(8, 1)
TINY = Sizes(1, 0)  # for the smoke test: exercises everything, measures nothing

# B: the least a handler doing the receiver's two calls can be (boto3 only, clients built at import, as A's).
MINIMAL_HANDLER = """import json, os, time, uuid
from datetime import UTC, datetime

import boto3
from botocore.config import Config

config = Config(connect_timeout=1, read_timeout=1.5, retries={"max_attempts": 2, "mode": "standard"})
dynamodb = boto3.client("dynamodb", config=config)
sqs = boto3.client("sqs", config=config)


def lambda_handler(event, context):
    body = event["body"]
    payload = json.loads(body)
    event_id, now = payload["eventId"], time.time()
    item = {
        "eventId": {"S": event_id},
        "eventType": {"S": payload["event"]},
        "status": {"S": "RECEIVED"},
        "payload": {"S": body},
        "receivedAt": {"S": datetime.fromtimestamp(now, UTC).isoformat()},
        "expiresAt": {"N": str(int(now) + 30 * 86400)},
        "attemptToken": {"S": uuid.uuid4().hex},
    }
    table, queue = os.environ["EVENTS_TABLE_NAME"], os.environ["EVENT_QUEUE_URL"]
    dynamodb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(eventId)")
    attributes = {"eventType": {"DataType": "String", "StringValue": payload["event"]}}
    sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes=attributes,
                     MessageGroupId=event_id, MessageDeduplicationId=event_id)
    return {"statusCode": 202, "body": json.dumps({"status": "accepted", "eventId": event_id})}
"""

# B_gc: B with the receiver's garbage-collector hold (pluggy_pipeline/startup.py) around its imports and clients,
# so the table also shows what A's own code costs over boto3 like for like.
_LAST_CLIENT = 'sqs = boto3.client("sqs", config=config)\n'
MINIMAL_HANDLER_GC = MINIMAL_HANDLER.replace("import boto3\n", "import gc\ngc.disable()\nimport boto3\n", 1).replace(
    _LAST_CLIENT, _LAST_CLIENT + "gc.freeze()\ngc.enable()\n", 1
)
assert MINIMAL_HANDLER_GC.count("gc.") == 3

GC_HOLD = "with imports_without_gc():\n"  # in the receiver's app.py; A_gc_on runs it as a plain block

# What Lambda's runtime does for a cold start: sys.path, import the handler's module, call it once.
BOOTSTRAP = r"""
import json, sys, time
from importlib import import_module
sys.path[:0] = json.loads(sys.argv[1])
module_name, function_name = sys.argv[2].rsplit(".", 1)
handler = getattr(import_module(module_name), function_name)
class Context:
    function_name, memory_limit_in_mb, aws_request_id = "ReceiverFunction", 256, "00000000-0000-0000-0000-000000000000"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ReceiverFunction"
    get_remaining_time_in_millis = staticmethod(lambda: 6000)
with open(sys.argv[3], encoding="utf-8") as handle:
    answer = handler(json.load(handle), Context())
if answer["statusCode"] != 202:
    sys.exit("unexpected answer: " + json.dumps(answer))
# The moment the answer exists (CLOCK_MONOTONIC, the launcher's clock too): Lambda's cold start ends here; it
# never tears the interpreter down on the request's path.
sys.stdout.write(f"\nANSWERED {time.perf_counter()!r}\n")
"""

# Runs the rounds in a small process of its own (in a mount namespace where the copies are mounted read-only
# when it runs as root, whom file modes do not stop), so each sample is one spawn from a small parent.
LAUNCHER = r"""
import json, os, subprocess, sys, time
job = json.load(open(sys.argv[1], encoding="utf-8"))
if os.access(job["readonly"], os.W_OK):
    sys.exit("the copies are writable: a cold start would cache its compiled modules there")
samples = {kind: {v["key"]: [] for v in job["variants"]} for kind in ("answered", "exited")}
for r in range(job["rounds"]):
    shift = r % len(job["variants"])
    for v in job["variants"][shift:] + job["variants"][:shift]:
        started = time.perf_counter()
        done = subprocess.run(v["argv"][r], env=v["env"], cwd=v["cwd"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=120)
        exited = time.perf_counter()
        if done.returncode:
            sys.exit(v["key"] + " failed: " + done.stderr.decode(errors="replace")[-2000:])
        answered = exited  # an empty interpreter answers nothing: its exit is all there is
        for line in done.stdout.decode(errors="replace").splitlines():
            if line.startswith("ANSWERED "):
                answered = float(line.split()[1])
        if r >= job["warmup"]:
            samples["answered"][v["key"]].append((answered - started) * 1000)
            samples["exited"][v["key"]].append((exited - started) * 1000)
with open(job["out"], "w", encoding="utf-8") as out:
    json.dump(samples, out)
"""
READ_ONLY_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


def compiled(layer: Path) -> tuple[int, int]:
    """(modules with an unchecked-hash .pyc for this Python, modules) in a layer folder."""
    sources = list(layer.rglob("*.py"))
    tag, count = sys.implementation.cache_tag, 0
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if pyc.is_file():
            with pyc.open("rb") as handle:
                header = handle.read(8)
            count += header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 1
    return count, len(sources)


def event_for(tag: str) -> dict[str, Any]:
    """An API Gateway proxy event delivering a new item/updated the way Pluggy does (secret header + signature)."""
    payload = {**VALID_PAYLOADS["item-updated"], "eventId": f"{tag}-{uuid.uuid4()}"[:36]}
    body = json.dumps(payload, separators=(",", ":"))
    headers = {
        "Content-Type": ["application/json"],
        SECRET_HEADER: [LOCAL_WEBHOOK_SECRET],
        SIGNATURE_HEADER: [sign(body.encode(), LOCAL_SIGNING_KEY.encode())],
    }
    return proxy_event(Scenario(tag, 202, body, headers))


def _set_read_only(root: Path, read_only: bool) -> None:
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o555 if read_only else 0o755)


def _files(root: Path) -> set[str]:
    return {os.path.join(folder, name) for folder, dirs, files in os.walk(root) for name in dirs + files}


LABELS = {
    "A": "A: built receiver, serves one event",
    "B": "B: minimal boto3 handler, put_item + send_message",
    "A_arn": "A with the template's WEBHOOK_SECRET_ARN (+ GetSecretValue)",
    "A_before": "A with the layer as `BuildMethod: python3.13` built it (no .pyc)",
    "A_gc_on": "A without its garbage-collector hold (imports as plain imports)",
    "B_gc": "B with A's garbage-collector hold around its imports and clients",
    "floor": "`python -I -S -c pass` (interpreter start and exit)",
}
SENDS = ("A", "B", "A_arn", "A_before", "A_gc_on", "B_gc")  # the variants that queue one message per run


@dataclass
class Variant:
    key: str
    path: tuple[Path, ...]  # Lambda's sys.path: the function, the layer, the runtime
    env: dict[str, str]
    cwd: Path
    handler: str = "app.lambda_handler"

    def argv(self, python: str, event: Path | None) -> list[str]:
        if event is None:
            return [python, "-I", "-S", "-c", "pass"]
        return [python, "-I", "-S", "-c", BOOTSTRAP, json.dumps([str(p) for p in self.path]), self.handler, str(event)]


def _variants(ro: Path, work: Path, local_env: dict[str, str], resources: Any) -> list[Variant]:
    """Copy the built function, layer and runtime under `ro` and describe every process (LABELS' order)."""
    spec = function_spec(BUILD_DIR, FUNCTION, {}, resources, PARAMETERS)
    task, opt, opt_before, minimal, runtime = (ro / n for n in ("task", "opt", "opt-before", "minimal", "runtime"))
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(spec["code"], task, ignore=no_cache)  # sam build makes none; make invoke may have since
    shutil.copytree(spec["layers"][0], opt / "python")
    shutil.copytree(spec["layers"][0], opt_before / "python", ignore=no_cache)
    shutil.copytree(RUNTIME_DIR, runtime)
    task_gc_on = ro / "task-gc-on"
    shutil.copytree(spec["code"], task_gc_on, ignore=no_cache)
    app = task_gc_on / "app.py"
    source = app.read_text(encoding="utf-8")
    if GC_HOLD not in source:
        raise RuntimeError(f"cold start: {app.name} has no `{GC_HOLD.strip()}` to take away")
    app.write_text(source.replace(GC_HOLD, "if True:\n"), encoding="utf-8")
    minimal_gc = ro / "minimal-gc"
    for folder, source in ((minimal, MINIMAL_HANDLER), (minimal_gc, MINIMAL_HANDLER_GC)):
        folder.mkdir()
        (folder / "app.py").write_text(source, encoding="utf-8")
    lambda_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec["memory"]),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": str(task),
        "LAMBDA_RUNTIME_DIR": str(runtime),
        "_HANDLER": spec["handler"],
        # No AWS config files on Lambda: keep this machine's profiles out.
        "AWS_CONFIG_FILE": str(work / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-credentials"),
        **spec["env"],  # the function's, as the built template resolves it (WEBHOOK_SECRET_ARN included)
        **local_env,  # moto as AWS: AWS_ENDPOINT_URL (declared empty in the template), fake credentials
    }
    in_env = {k: v for k, v in lambda_env.items() if k != "WEBHOOK_SECRET_ARN"}
    in_env |= {"WEBHOOK_SECRET": LOCAL_WEBHOOK_SECRET, "WEBHOOK_SIGNING_KEY": LOCAL_SIGNING_KEY}
    built, handler = (task, opt / "python", runtime), spec["handler"]
    return [
        Variant("A", built, in_env, task, handler),
        Variant("B", (minimal, runtime), in_env | {"LAMBDA_TASK_ROOT": str(minimal)}, minimal),
        Variant("A_arn", built, lambda_env, task, handler),
        Variant("A_before", (task, opt_before / "python", runtime), in_env, task, handler),
        Variant("A_gc_on", (task_gc_on, opt / "python", runtime), in_env, task_gc_on, handler),
        Variant("B_gc", (minimal_gc, runtime), in_env | {"LAMBDA_TASK_ROOT": str(minimal_gc)}, minimal_gc),
        Variant("floor", (), in_env, task),
    ]


Samples = dict[str, dict[str, list[float]]]  # "answered" | "exited" -> variant -> ms, in round order


def measure(sizes: Sizes, python: str) -> tuple[Samples, int, str]:
    """(samples per variant in round order, messages queued, how the copies were made read-only)."""
    rounds = sizes.warmup_rounds + sizes.rounds
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp, moto_server() as local:
        work = Path(tmp)
        ro = work / "ro"
        jobs = []
        for v in _variants(ro, work, local.env, local.resources):
            argv = []
            for r in range(rounds):
                event = None if v.key == "floor" else ro / f"{v.key}-{r}.json"
                if event is not None:
                    event.write_text(json.dumps(event_for(f"cold{v.key}{r}")), encoding="utf-8")
                argv.append(v.argv(python, event))
            jobs.append({"key": v.key, "env": v.env, "cwd": str(v.cwd), "argv": argv})
        job = {"readonly": str(ro), "rounds": rounds, "warmup": sizes.warmup_rounds, "variants": jobs}
        job["out"] = str(work / "samples.json")
        (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
        launcher = [python, "-I", "-S", "-c", LAUNCHER, str(work / "job.json")]
        how = "folders without write permission"
        if os.geteuid() == 0:  # root writes through file modes: mount the copies read-only, as Lambda's are
            how = "a read-only bind mount (root ignores file modes)"
            mount = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", READ_ONLY_MOUNT, "sh"]
            launcher = [*mount, str(ro), *launcher]
        before = _files(ro)
        _set_read_only(ro, True)
        try:
            done = subprocess.run(launcher, capture_output=True, check=False, timeout=120 * rounds * len(jobs))
        finally:
            _set_read_only(ro, False)
        if done.returncode:
            raise RuntimeError(f"cold start: the launcher failed: {done.stderr.decode(errors='replace')[-3000:]}")
        if written := sorted(_files(ro) - before):
            raise RuntimeError(f"cold start: the processes wrote into the read-only copies: {written[:5]}")
        queue_url = local.resources.queue_urls["EventQueue"]
        attributes = local.clients["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
        queued = int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))
        samples: Samples = json.loads((work / "samples.json").read_text(encoding="utf-8"))
    return samples, queued, how


def run(quick: bool, sizes: Sizes | None = None) -> Section:
    sizes = sizes or (QUICK if quick else FULL)
    layer = BUILD_DIR / "CommonLayer" / "python"
    for needed in (BUILD_DIR / "template.yaml", BUILD_DIR / FUNCTION / "app.py", layer, RUNTIME_DIR / "boto3"):
        if not needed.exists():
            raise SystemExit(f"cold start: {needed} not found: run `make build` first (it builds what this measures)")
    python = sys.executable
    if sys.version_info[:2] != (3, 13):
        raise SystemExit(f"cold start: {python} is not Python 3.13, the runtime's (run it with .venv/bin/python)")
    layer_compiled, layer_modules = compiled(layer)
    samples, queued, how = measure(sizes, python)
    rounds = sizes.warmup_rounds + sizes.rounds
    if queued != rounds * len(SENDS):
        raise RuntimeError(f"cold start: {queued} messages queued, expected {rounds * len(SENDS)}")
    stats = {key: Stats.of(values) for key, values in samples["answered"].items()}
    exited = {key: Stats.of(values) for key, values in samples["exited"].items()}
    a, b = stats["A"], stats["B"]
    answered = samples["answered"]
    paired = Stats.of([x / y for x, y in zip(answered["A"], answered["B"], strict=True)]).median
    exit_ratio = exited["A"].median / exited["B"].median
    cold_ratio, before_ratio = a.median / b.median, stats["A_before"].median / b.median
    met = cold_ratio <= GOAL_RATIO
    b_gc, like_for_like = stats["B_gc"], a.median / stats["B_gc"].median
    rows = [
        (
            label,
            f"A/B ≤ {GOAL_RATIO}" if key == "A" else "—",
            f"{fmt(stats[key].median)} ms",
            f"{fmt(stats[key].p95)} ms",
            "—" if key == "B" else ratio(stats[key].median, b.median),
            verdict(met) if key == "A" else "(informative)",
        )
        for key, label in LABELS.items()
    ]
    table = Table(("Process", "Goal", "Median", "p95", "Ratio to B (medians)", "Verdict"), tuple(rows))
    notes = [
        f"{sizes.rounds} rounds after {sizes.warmup_rounds} warm-up round(s); each round runs every process once, "
        f"in an order rotating from round to round. Time is from the spawn of `{python} -I -S` (by a small launcher "
        "process) to the moment the handler has returned its answer (the process writes that instant of the same "
        "monotonic clock): interpreter start, imports, client set-up, one event, as Lambda's Init Duration plus the "
        "first invocation's Duration count it. Lambda never tears the interpreter down on a request's path, so "
        f"the exit is left out: with it (spawn to exit), A {fmt(exited['A'].median)} ms, B "
        f"{fmt(exited['B'].median)} ms, A/B {exit_ratio:.2f}.",
        f"The built artifact, copied from .aws-sam/build: ReceiverFunction as /var/task, CommonLayer/python as "
        f"/opt/python ({layer_compiled} of its {layer_modules} modules with an unchecked-hash .pyc), "
        ".aws-sam/lambda-runtime's boto3 as /var/runtime; read-only through " + how + ", checked: nothing was "
        "written there. sys.path holds those folders only, in Lambda's order.",
        "Each process gets the function's environment as the built template resolves it, Lambda's own variables "
        "(AWS_LAMBDA_FUNCTION_NAME...), and moto as AWS (AWS_ENDPOINT_URL, fake credentials, no AWS config files). "
        "A and B take the webhook secret from WEBHOOK_SECRET; the template's WEBHOOK_SECRET_ARN row adds the "
        "GetSecretValue a deployed receiver makes once per container.",
        f"p95 ratio A/B: {ratio(a.p95, b.p95)}; median of the per-round A/B ratios: {fmt(paired)}. "
        f"A costs {fmt(a.median - b.median)} ms more than B at the median. Before the compiled layer (`BuildMethod: "
        f"python3.13`, no .pyc, so every cold start compiled the layer's imports): A/B {before_ratio:.2f}.",
        f"The receiver's app.py imports the layer inside `imports_without_gc()` (pluggy_pipeline/startup.py): the "
        "cyclic garbage collector is paused while boto3, Powertools and the layer load (about 65,000 objects, "
        "a few hundred of them garbage), then everything they built is frozen out of later collections. Without "
        f"it (A_gc_on, the same artifact with the block run plainly): {fmt(stats['A_gc_on'].median)} ms, "
        f"{stats['A_gc_on'].median / b.median:.2f}x B. The same hold in B (B_gc) gives {fmt(b_gc.median)} ms: A/B_gc "
        f"{like_for_like:.2f} is what the receiver's own code costs over the two boto3 calls, like for like.",
        "Lambda's own cold start (sandbox, runtime bootstrap) is in neither figure; it adds the same to both.",
    ]
    if not met:
        notes.insert(0, f"**Goal missed**: A/B = {cold_ratio:.2f} (goal ≤ {GOAL_RATIO}).")
    measure_ = Measure("Cold start of the built receiver (fresh process, one event)", table, tuple(notes), met=met)

    def row(label: str, key: str, base: str, goal: str = "—") -> tuple[str, ...]:
        value, baseline = stats[key], stats[base]
        verdict_ = verdict(met) if key == "A" and base == "B" else "(informative)"
        measured = f"{fmt(value.median)} ms; {fmt(value.p95)} ms"
        base_ms = f"{base}: {fmt(baseline.median)} ms; {fmt(baseline.p95)} ms"
        return (label, goal, measured, base_ms, f"{value.median / baseline.median:.2f}x", verdict_)

    summary = Table(
        ("Measure", "Goal", "Measured", "Baseline (same run)", "Ratio", "Verdict"),
        (
            row("Cold start of the built receiver, A (median; p95)", "A", "B", f"A/B ≤ {GOAL_RATIO}"),
            row("Same, without the garbage-collector hold around its imports (before)", "A_gc_on", "B"),
            row("Same, layer without .pyc (as `BuildMethod: python3.13` built it)", "A_before", "B"),
            row("A like for like: against B with the same garbage-collector hold", "A", "B_gc"),
        ),
    )
    data = dict(sizes=sizes, stats=stats, ratio=cold_ratio, before_ratio=before_ratio, paired_ratio=paired)
    data |= dict(exited=exited, exit_ratio=exit_ratio, like_for_like=like_for_like)
    data |= dict(goal_met=met, queued=queued, layer_compiled=(layer_compiled, layer_modules), read_only=how)
    notes_ = ("The machine is shared and noisy: A and B are measured interleaved, in the same run.",)
    return Section("coldstart", "Cold start (built artifact)", summary, (measure_,), notes_, data)
