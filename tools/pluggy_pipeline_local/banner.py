"""What `pluggy-pipeline local` prints once its stack runs: where everything is, and how to drive it.

Including the `sam local` command lines that run the template's functions (in Docker) against this stack.
"""

from __future__ import annotations

from pathlib import Path

from pluggy_emulator.timeline import SyncTiming

from pluggy_pipeline_local.stack import LocalStack, sam_env_file_path

LOCAL_LAMBDA_IMAGE = "pluggy-pipeline/lambda-python3.13:x86_64"  # tools/lambda-image.sh
SAM_LOCAL_PORT = 3000  # `sam local start-api`'s default


def banner(stack: LocalStack, *, verbose: bool) -> str:
    """The running stack's URLs, state file, first commands to try and the `sam local` lines."""
    state = stack.describe()
    emulator = state["pluggyBaseUrl"]
    lines = [
        f"pluggy-pipeline local stack running (pid {state['pid']})",
        f"Webhook URL: {state['webhookUrl']}",
        f"Pluggy emulator URL: {emulator}  (Pluggy's API; control routes under /_emulator/)",
        _emulator_mode(stack),
        f"AWS (moto) endpoint: {state['awsEndpoint']}",
        f"State file: {stack.options.state_file}",
        f"The webhook is registered on the emulator (event all, secret in header {state['secretHeader']}).",
        "",
        "Send an event (authenticated with the local secret and signing key):",
        "  pluggy-pipeline send item/updated --item-id <itemId> --wait",
        "Have the emulator connect a sandbox item (Pluggy then sends item/login_succeeded, item/created):",
        f"  curl -s -X POST {emulator}/_emulator/items -H 'Content-Type: application/json' "
        """-d '{"clientUserId": "me"}'""",
        "Then: pluggy-pipeline events list | records items | dlq list",
        "",
        *_sam_lines(stack),
        "",
        "" if verbose else "(function logs hidden; --verbose shows them)",
        "Ctrl-C stops the stack.",
    ]
    return "\n".join(lines)


def _emulator_mode(stack: LocalStack) -> str:
    options = stack.options
    if not options.emulator_timed:
        return "Emulator syncs are instant (--timed runs them through Pluggy's steps over emulator time)."
    seconds = SyncTiming().total() * options.emulator_time_scale
    return (
        f"Emulator syncs are timed: Pluggy's steps, late rows and rate limits; one emulator second takes "
        f"{options.emulator_time_scale:g} s, a sandbox sync about {seconds:.2g} s."
    )


def sam_commands(env_file: str, *, host_network: bool = True, invoke_image: str | None = None) -> dict[str, str]:
    """The `sam` command lines that run the template's functions against a local stack through `env_file`."""
    sam = ".venv-sam/bin/python tools/sam_host_network.py" if host_network else ".venv-sam/bin/sam"
    common = f"--env-vars {env_file} --parameter-overrides Architecture=x86_64"
    if invoke_image:
        common += f" --invoke-image {invoke_image} --skip-pull-image"
    return {
        "build": "PATH=$PWD/.venv/bin:$PATH .venv-sam/bin/sam build --parameter-overrides Architecture=x86_64",
        "invoke": f"{sam} local invoke ReceiverFunction -e events/receiver/item-created.json {common}",
        "invoke-processor": f"{sam} local invoke ProcessorFunction -e events/processor/poison-not-json.json {common}",
        "start-api": f"{sam} local start-api {common} --port {SAM_LOCAL_PORT}",
    }


def _sam_lines(stack: LocalStack) -> list[str]:
    state_file = stack.options.state_file
    if state_file is None:
        return []
    env_file = sam_env_file_path(state_file)
    try:
        shown = str(env_file.relative_to(Path.cwd()))
    except ValueError:
        shown = str(env_file)
    host_network = stack.options.sam_host == "127.0.0.1"
    commands = sam_commands(shown, host_network=host_network, invoke_image=LOCAL_LAMBDA_IMAGE)
    return [
        f"The real SAM CLI (Docker) against this stack: {shown} is the --env-vars file (real table and queue",
        "names, the moto endpoint, the secrets' ARNs, the emulator as Pluggy, the events/ files' allowlist).",
        "Credentials: SAM hands the shell's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and region to the function;",
        "moto accepts any:  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1",
        f"  {commands['build']}",
        "      (x86_64 machine; on arm64 drop Architecture=x86_64 and --invoke-image: SAM pulls the official image)",
        f"  {commands['invoke']}",
        f"  {commands['invoke-processor']}",
        f"  {commands['start-api']}",
        f"      then POST http://127.0.0.1:{SAM_LOCAL_PORT}/webhooks/pluggy (no stage prefix; SAM local answers",
        "      unknown paths 403 Missing Authentication Token, not the deployed API's 404; source IP 127.0.0.1)",
        (
            "  tools/sam_host_network.py runs SAM with host networking (SAM ignores --docker-network host), so the"
            " function reaches 127.0.0.1;"
            if host_network
            else f"  the functions reach this machine as {stack.options.sam_host} (--sam-host);"
        ),
        "  --invoke-image: the offline image tools/lambda-image.sh builds (drop it where SAM can pull"
        " public.ecr.aws/lambda/python:3.13). The processor of this stack already consumes EventQueue.",
    ]
