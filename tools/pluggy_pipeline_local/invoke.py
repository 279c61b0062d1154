"""Run a function from the *built* artifacts, the offline stand-in for `sam local invoke`.

The quick path when Docker is not at hand (`sam local invoke` needs it). This runs the handler the way the
Lambda runtime would: a fresh interpreter whose sys.path holds only the function's build folder,
the layer's `python/` folder (what Lambda mounts at /opt/python) and a boto3 like the runtime's,
with the template's environment applied. Nothing from the repository is importable.

  python -m pluggy_pipeline_local.invoke --function receiver --event events/receiver/item-created.json \
      [--env-vars env.json] [--parameter-overrides Key=Value ...] [--build-dir .aws-sam/build]

It follows SAM's rules, so what passes here passes under `sam local invoke`:
- `--env-vars` is SAM's format: {"Parameters": {VAR: value}, "<FunctionLogicalId>": {VAR: value}}, where
  "Parameters" holds environment overrides for every function (not template parameters) and a function's
  own section wins. Only variables the template declares are overridden; the others are dropped (a note
  on stderr names them, where SAM says nothing).
- Template parameters come from `--parameter-overrides` (`Key=Value` or SAM's
  `ParameterKey=Key,ParameterValue=Value`), as for `sam local invoke`.
With `--aws moto` (the default) a local moto server holds the template's resources and a Pluggy emulator
plays Pluggy (the processor's PLUGGY_BASE_URL is overridden like an env-vars file would).
The handler's return value is printed on stdout; the function's own output goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pluggy_emulator import PluggyEmulator

from pluggy_pipeline_local.devsecrets import LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET
from pluggy_pipeline_local.moto_server import moto_server
from pluggy_pipeline_local.template import REPO_ROOT, LocalResources, load_template, parameter_defaults

ALIASES = {
    "receiver": "ReceiverFunction",
    "processor": "ProcessorFunction",
    "publisher": "PublisherFunction",
    "connect_token": "ConnectTokenFunction",
    "read_api": "ReadApiFunction",
}
DEFAULT_RUNTIME_DIR = REPO_ROOT / ".aws-sam" / "lambda-runtime"

# Runs inside the fresh interpreter (-I -S: no site-packages, no PYTHON* variables).
BOOTSTRAP = r"""
import importlib, json, sys
args = json.loads(sys.argv[1])
sys.path[:0] = args["path"]
class Context:
    function_name = args["name"]
    function_version = "$LATEST"
    memory_limit_in_mb = args["memory"]
    invoked_function_arn = "arn:aws:lambda:" + args["region"] + ":123456789012:function:" + args["name"]
    aws_request_id = "local-invoke"
    log_group_name = "/aws/lambda/" + args["name"]
    log_stream_name = "local"
    def get_remaining_time_in_millis(self):
        return args["timeout"] * 1000
module_name, function_name = args["handler"].rsplit(".", 1)
handler = getattr(importlib.import_module(module_name), function_name)
event = json.load(open(args["event"], encoding="utf-8"))
result = handler(event, Context())
origins = {name: getattr(sys.modules.get(name), "__file__", None)
           for name in (module_name, "pluggy_pipeline", "aws_lambda_powertools", "boto3")}
with open(args["out"], "w", encoding="utf-8") as out:
    json.dump({"result": result, "origins": origins}, out, default=str)
"""


def _resolve(value: Any, parameters: dict[str, str], resources: LocalResources | None) -> str:
    if isinstance(value, dict) and "Ref" in value:
        target = value["Ref"]
        if target in parameters:
            return parameters[target]
        if resources is not None:
            return resources.ref(target)
        return str(target)  # like sam local: an unresolved resource is its logical id unless overridden
    if isinstance(value, dict):
        return ""
    return str(value)


def parse_parameter_overrides(items: list[str]) -> dict[str, str]:
    """SAM's `--parameter-overrides`: `Key=Value` or `ParameterKey=Key,ParameterValue=Value`."""
    parameters: dict[str, str] = {}
    for item in items:
        if item.startswith("ParameterKey="):
            fields = dict(part.split("=", 1) for part in item.split(",", 1))
            parameters[fields["ParameterKey"]] = fields.get("ParameterValue", "")
        elif "=" in item:
            key, value = item.split("=", 1)
            parameters[key] = value
        else:
            raise SystemExit(f"--parameter-overrides: expected Key=Value, got {item!r}")
    return parameters


def env_overrides(env_vars: dict[str, Any], function: str, declared: set[str]) -> tuple[dict[str, str], list[str]]:
    """SAM's reading of an env-vars file: (overrides applied, names dropped because the template does not declare
    them). "Parameters" applies to every function; the function's own section wins."""
    wanted = {**(env_vars.get("Parameters") or {}), **(env_vars.get(function) or {})}
    applied = {k: str(v) for k, v in wanted.items() if k in declared}
    return applied, sorted(k for k in wanted if k not in declared)


def function_spec(
    build_dir: Path,
    function: str,
    env_vars: dict[str, Any],
    resources: LocalResources | None = None,
    parameter_overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    template = load_template(build_dir / "template.yaml")
    declared = template["Resources"]
    props = declared[function]["Properties"]
    globals_ = template.get("Globals", {}).get("Function", {})
    parameters = {**parameter_defaults(template), **(parameter_overrides or {})}
    env = {
        k: _resolve(v, parameters, resources)
        for k, v in {
            **globals_.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }.items()
    }
    applied, dropped = env_overrides(env_vars, function, set(env))
    env.update(applied)
    layer_dirs = []
    for layer in props.get("Layers", globals_.get("Layers", [])):
        logical = layer["Ref"] if isinstance(layer, dict) else layer
        layer_dirs.append(str(build_dir / declared[logical]["Properties"]["ContentUri"] / "python"))
    return {
        "code": str(build_dir / props["CodeUri"]),
        "layers": layer_dirs,
        "handler": props.get("Handler", globals_.get("Handler")),
        "env": env,
        "timeout": int(props.get("Timeout", globals_.get("Timeout", 3))),
        "memory": int(props.get("MemorySize", globals_.get("MemorySize", 128))),
        "dropped": dropped,
    }


def invoke(
    function: str,
    event_path: Path,
    *,
    build_dir: Path = REPO_ROOT / ".aws-sam" / "build",
    env_vars: dict[str, Any] | None = None,
    runtime_dir: Path = DEFAULT_RUNTIME_DIR,
    extra_env: dict[str, str] | None = None,
    resources: LocalResources | None = None,
    parameter_overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Invoke and return {"result": handler's return value, "origins": module -> file, "output": logs}."""
    function = ALIASES.get(function, function)
    if not (build_dir / "template.yaml").is_file():
        raise SystemExit(f"{build_dir}/template.yaml not found: run `make build` first")
    if not (runtime_dir / "boto3").is_dir():
        raise SystemExit(f"{runtime_dir} has no boto3: run `make build` first")
    spec = function_spec(build_dir.resolve(), function, env_vars or {}, resources, parameter_overrides)
    region = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec["memory"]),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "LAMBDA_TASK_ROOT": spec["code"],
        "_HANDLER": spec["handler"],
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
        **spec["env"],
        **(extra_env or {}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        args = {
            # Lambda's order: the function, then layers (/opt/python), then the runtime's own boto3.
            "path": [spec["code"], *spec["layers"], str(runtime_dir.resolve())],
            "handler": spec["handler"],
            "event": str(event_path.resolve()),
            "out": str(out),
            "name": function,
            "region": region,
            "timeout": spec["timeout"],
            "memory": spec["memory"],
        }
        proc = subprocess.run(  # noqa: S603 - our own interpreter and bootstrap
            [sys.executable, "-I", "-S", "-c", BOOTSTRAP, json.dumps(args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=spec["timeout"] + 60,
            check=False,
            cwd=spec["code"],
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{function} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    note = ""
    if spec["dropped"]:
        note = (
            f"[invoke] not declared by {function} in the template, dropped as SAM does: {', '.join(spec['dropped'])}\n"
        )
    report["output"] = note + proc.stdout + proc.stderr
    report["dropped"] = spec["dropped"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--function", required=True, help="receiver, processor or a logical id")
    parser.add_argument("--event", required=True, type=Path)
    parser.add_argument("--build-dir", type=Path, default=REPO_ROOT / ".aws-sam" / "build")
    parser.add_argument("--env-vars", type=Path, help="SAM's env-vars JSON (declared variables only)")
    parser.add_argument(
        "--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE", help="template parameters, as SAM's"
    )
    parser.add_argument("--runtime-dir", type=Path, default=DEFAULT_RUNTIME_DIR)
    parser.add_argument(
        "--aws",
        choices=["moto", "env"],
        default="moto",
        help="moto (default): a local moto server with the template's resources and a Pluggy emulator; env: "
        "whatever AWS the environment points at, with resource names from --env-vars",
    )
    args = parser.parse_args()
    env_vars = json.loads(args.env_vars.read_text()) if args.env_vars else {}
    kwargs: dict[str, Any] = {
        "build_dir": args.build_dir,
        "runtime_dir": args.runtime_dir,
        "parameter_overrides": parse_parameter_overrides(args.parameter_overrides),
    }
    if args.aws == "env":
        report = invoke(args.function, args.event, env_vars=env_vars, **kwargs)
    else:
        report = invoke_on_local_aws(args.function, args.event, env_vars, kwargs)
    sys.stderr.write(report["output"])
    print(json.dumps(report["result"], indent=2))


def _event_log(local: Any) -> dict[str, dict[str, Any]]:
    """What the processor recorded per event: status, and its counts, handled flag or error."""
    table = local.resources.tables["EventsTable"]
    items = local.clients["dynamodb"].scan(TableName=table, ConsistentRead=True)["Items"]
    log: dict[str, dict[str, Any]] = {}
    for item in items:
        entry: dict[str, Any] = {"status": item["status"]["S"]}
        if "counts" in item:
            entry["counts"] = {k: int(v["N"]) for k, v in item["counts"]["M"].items()}
        if "handled" in item:
            entry["handled"] = item["handled"]["BOOL"]
        if "error" in item:
            entry["error"] = item["error"]["S"]
        log[item["eventId"]["S"]] = entry
    return log


def invoke_on_local_aws(function: str, event: Path, env_vars: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """moto for AWS (the Pluggy credentials secret holds the emulator's client), an emulator for Pluggy."""
    credentials = json.dumps({"clientId": LOCAL_PLUGGY_CLIENT_ID, "clientSecret": LOCAL_PLUGGY_CLIENT_SECRET})
    emulator = PluggyEmulator(LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET, time_scale=0.0)
    emulator.start()
    try:
        with moto_server(secret_values={"PluggyCredentialsSecret": credentials}) as local:
            # What an env-vars file written for the local stack holds: a declared variable, overridden.
            with_pluggy = {**env_vars, "ProcessorFunction": {"PLUGGY_BASE_URL": emulator.base_url}}
            with_pluggy["ProcessorFunction"].update(env_vars.get("ProcessorFunction") or {})
            report = invoke(
                function, event, env_vars=with_pluggy, extra_env=local.env, resources=local.resources, **kwargs
            )
            queued = {
                name: local.clients["sqs"].get_queue_attributes(
                    QueueUrl=local.resources.queue_urls[name], AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
                for name in ("EventQueue", "EventDeadLetterQueue")
            }
            report["queued"] = queued
            report["events"] = _event_log(local)
            for event_id, entry in report["events"].items():
                report["output"] += f"[local moto] event {event_id}: {json.dumps(entry, sort_keys=True)}\n"
            report["output"] += f"[local moto] messages now in EventQueue: {queued['EventQueue']}, "
            report["output"] += f"EventDeadLetterQueue: {queued['EventDeadLetterQueue']}\n"
            return report
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
