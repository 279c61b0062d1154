"""The whole pipeline on one machine, standing in for API Gateway, Lambda and the SQS trigger.

- AWS is moto in server mode (real HTTP), with every table, queue and secret of template.yaml.
- An HTTP front on 127.0.0.1 turns each request into the API Gateway proxy event the deployed REST API
  would send (`POST /webhooks/pluggy`) and calls the real ReceiverFunction handler.
- A poller plays the SQS event source mapping: it receives batches of the template's BatchSize, calls the
  real ProcessorFunction handler, deletes the successes and leaves `batchItemFailures` in the queue; moto's
  redrive moves a message to the DLQ after maxReceiveCount. Failed messages become visible again after
  `retry_delay` seconds instead of the template's 540 (time compression, like the emulator's time_scale).
- The reconciliation schedule is a timer putting `pipeline/reconcile` into the queue.
- The app's routes (POST /connect-token and the read API, from the template) are served by the same front,
  after a SigV4 check as API Gateway's AWS_IAM makes (sigv4.py); RecordsTable's stream feeds the real
  PublisherFunction through a local copy of Lambda's stream mapping (stream_poller.py), onto moto's bus.
- The Pluggy emulator plays Pluggy, with a webhook registered through the real `register` code path.

Each function runs in this process with its template environment; a lock per function makes each behave
like one Lambda container (Powertools' logger and metrics are per-container state).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pluggy_emulator import PluggyEmulator
from pluggy_pipeline import aws
from pluggy_pipeline.connect_token import get_service as get_connect_token_service
from pluggy_pipeline.observability import logger
from pluggy_pipeline.pluggy_client import PluggyClient
from pluggy_pipeline.processor import get_processor
from pluggy_pipeline.publisher import get_publisher
from pluggy_pipeline.read_api import get_reader
from pluggy_pipeline.receiver import WEBHOOK_PATH, get_receiver
from pluggy_pipeline_cli.register import register_webhook

from pluggy_pipeline_local.devsecrets import (
    LOCAL_PLUGGY_CLIENT_ID,
    LOCAL_PLUGGY_CLIENT_SECRET,
    LOCAL_SIGNING_KEY,
    LOCAL_WEBHOOK_SECRET,
    PLUGGY_SOURCE_IP,
)
from pluggy_pipeline_local.handlers import LocalContext, load_handler
from pluggy_pipeline_local.moto_server import (
    FAKE_CREDENTIALS,
    LocalAws,
    local_secret_value,
    make_clients,
    moto_server,
)
from pluggy_pipeline_local.routes import Route, app_routes, handler_folder, match
from pluggy_pipeline_local.sigv4 import verify
from pluggy_pipeline_local.stream_poller import StreamPoller
from pluggy_pipeline_local.template import (
    REPO_ROOT,
    LocalResources,
    function_environment,
    load_template,
    resources_of_type,
)

STATE_FILE = REPO_ROOT / ".local-stack.json"
# The template's functions, all run by this stack; `sam local` runs them with --env-vars, which overrides their
# declared variables and nothing else.
FUNCTIONS = ("ReceiverFunction", "ProcessorFunction", "PublisherFunction", "ConnectTokenFunction", "ReadApiFunction")
SAM_FUNCTIONS = FUNCTIONS
log = logging.getLogger("pluggy_pipeline_local.stack")


@dataclass
class StackOptions:
    host: str = "127.0.0.1"
    port: int = 0  # the HTTP front; 0 picks a free port
    with_emulator: bool = True
    emulator_time_scale: float = 0.01  # Pluggy's 60 s between webhook retries becomes 0.6 s
    # Timed mode: syncs run in the background through Pluggy's steps, on the emulator clock (time scale above:
    # a 3-minute sandbox sync takes 1.75 s), with late rows and Pluggy's rate limits.
    emulator_timed: bool = False
    emulator_seed: int = 0
    # The emulator's other options (e.g. rate_limit_per_minute="pluggy" in the proof suites).
    emulator_options: Mapping[str, Any] = field(default_factory=dict)
    retry_delay: float = 1.0  # seconds before a failed message is visible again
    reconcile_every: float | None = None  # seconds; None disables the schedule
    reconcile_after_hours: int | None = None
    quiet: bool = True  # keep the functions' JSON logs out of the terminal
    state_file: Path | None = STATE_FILE
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Play the SQS event source mapping (run the processor on what reaches EventQueue). Off for tests that
    # hand the queue's messages to another processor (e.g. `sam local invoke ProcessorFunction`).
    sqs_trigger: bool = True
    # How a `sam local` container reaches this machine's 127.0.0.1, in the --env-vars file written beside the
    # state file: 127.0.0.1 itself with host networking (tools/sam_host_network.py), host.docker.internal on
    # Docker Desktop.
    sam_host: str = "127.0.0.1"


def sam_env_file_path(state_file: Path) -> Path:
    """Where `pluggy-pipeline local` writes SAM's --env-vars file: next to the state file."""
    return state_file.with_name(f"{state_file.stem}.sam-env.json")


def declared_variables(template: Mapping[str, Any], function: str) -> set[str]:
    """The environment variables the template declares for `function` (Globals included): all SAM may override."""
    globals_ = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return set(globals_) | set(own)


def _replace_host(value: str, host: str) -> str:
    """A URL on this machine's 127.0.0.1 as a `sam local` container reaches it."""
    return value.replace("://127.0.0.1:", f"://{host}:", 1)


# API Gateway's payload limit for REST APIs: a longer body is refused with 413 before it is read.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024


class _Front(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of concurrent webhooks overflows it and the kernel drops or
    # resets connections that API Gateway would all have taken.
    request_queue_size = 256
    stack: LocalStack


class _FrontHandler(BaseHTTPRequestHandler):
    server: _Front
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        length = self._content_length()
        if length is None:
            return
        raw = self.rfile.read(length) if length else b""
        routed = match(self.server.stack.routes, self.command, self.path.partition("?")[0])
        if routed is not None:
            self._serve_app(*routed, raw)
            return
        event = proxy_event_from_http(self.command, self.path, self.headers.items(), raw, self.client_address[0])
        response = self.server.stack.invoke_receiver(event)
        body = str(response.get("body") or "").encode()
        self._answer(int(response["statusCode"]), response.get("headers") or {}, body)

    def _serve_app(self, route: Route, parameters: dict[str, str], raw: bytes) -> None:
        """An app route: API Gateway's IAM check, then the function with the event API Gateway would build."""
        headers = dict(self.headers.items())
        host = self.headers.get("Host", "")
        if route.iam:
            refusal = verify(
                self.command,
                f"http://{host}{self.path}",
                headers,
                raw,
                access_key=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                secret_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region="us-east-1",
            )
            if refusal is not None:
                body = json.dumps({"message": refusal.message}).encode()
                headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "ForbiddenException"}
                self._answer(refusal.status, headers, body)
                return
        event = proxy_event_from_http(self.command, self.path, self.headers.items(), raw, self.client_address[0])
        path = event["path"]
        event.update(resource=route.resource, pathParameters=parameters or None)
        context = event["requestContext"]
        # The front serves at the root, like a custom domain's base path mapping: no stage in the path.
        context.update(resourcePath=route.resource, path=path, domainName=host)
        if route.iam:
            context["identity"].update(
                accessKey=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                accountId="123456789012",
                caller="AROALOCAL:local",
                userArn="arn:aws:sts::123456789012:assumed-role/local/local",
            )
        response = self.server.stack.invoke(route.function, event)
        body = str(response.get("body") or "").encode()
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body)
        self._answer(int(response["statusCode"]), response.get("headers") or {}, body)

    # The template routes ANY on the webhook path to the function, so API Gateway hands it every method it
    # knows (OPTIONS and HEAD included) and the function answers 405 with Allow: POST.
    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def _content_length(self) -> int | None:
        """The body's length; None once refused as API Gateway would, without invoking the function."""
        values = {value.strip() for value in self.headers.get_all("Content-Length") or ()}
        if not values:
            return 0
        value = values.pop() if len(values) == 1 else ""  # differing duplicates are as bad as garbage
        if not (value.isascii() and value.isdigit()):  # RFC 9110: 1*DIGIT; int() would take "-1", "+1", " 1_0"
            self._refuse(400, "Invalid Content-Length header")
            return None
        length = int(value)
        if length > MAX_PAYLOAD_BYTES:
            self._refuse(413, "Request Too Long")
            return None
        return length

    def _answer(self, status: int, headers: Mapping[str, Any], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has the headers of the full one, never a body
            self.wfile.write(body)

    def _refuse(self, status: int, message: str) -> None:
        """API Gateway's own JSON error, then close: the body was not read, so none of it may pass for a
        next request on this connection."""
        self.close_connection = True
        body = json.dumps({"message": message}).encode()
        self._answer(status, {"Content-Type": "application/json", "Connection": "close"}, body)


def proxy_event_from_http(
    method: str, target: str, headers: Any, raw: bytes, peer_ip: str, *, stage: str = "local"
) -> dict[str, Any]:
    """The REST API proxy event API Gateway would build for this request."""
    path, _, query = target.partition("?")
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        multi.setdefault(name, []).append(value)
    try:
        body: str | None = raw.decode("utf-8") if raw else None
        is_base64 = False
    except UnicodeDecodeError:
        body, is_base64 = base64.b64encode(raw).decode(), True
    params = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        params[name] = value
    resource, path_parameters = path, None
    token = path.rstrip("/").removeprefix(WEBHOOK_PATH + "/")
    if token != path.rstrip("/") and token and "/" not in token:
        # The template's second route: API Gateway names the resource by its template, the token apart.
        resource, path_parameters = WEBHOOK_PATH + "/{token}", {"token": token}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi.items()},
        "multiValueHeaders": multi,
        "queryStringParameters": params or None,
        "multiValueQueryStringParameters": {k: [v] for k, v in params.items()} or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "accountId": "123456789012",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": peer_ip, "userAgent": multi.get("User-Agent", [""])[-1]},
            "path": f"/{stage}{path}",
            "resourcePath": resource,
            "httpMethod": method,
            "protocol": "HTTP/1.1",
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The event the SQS event source mapping hands to Lambda for a received batch."""
    records = []
    for message in messages:
        attributes = {
            name: {"stringValue": value["StringValue"], "dataType": value.get("DataType", "String")}
            for name, value in (message.get("MessageAttributes") or {}).items()
            if "StringValue" in value
        }
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes") or {}),
                "messageAttributes": attributes,
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def _forget_containers() -> None:
    """Every function's per-container state (clients, settings) is rebuilt from the current environment."""
    aws.reset_clients()
    for cached in (get_receiver, get_processor, get_publisher, get_connect_token_service, get_reader):
        cached.cache_clear()


class LocalStack:
    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.template = load_template()
        self.aws: LocalAws | None = None
        self.emulator: PluggyEmulator | None = None
        self._moto_cm: Any = None
        self._front: _Front | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._receiver_lock = threading.Lock()
        self._processor_lock = threading.Lock()
        self._receiver: Callable[[dict[str, Any], Any], dict[str, Any]] | None = None
        self._processor: Callable[[dict[str, Any], Any], Any] | None = None
        self.routes: list[Route] = app_routes(self.template)
        self._handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
        self._locks = {function: threading.Lock() for function in FUNCTIONS}
        self._stream_poller: StreamPoller | None = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_log_level: int | None = None
        self._polling = threading.Event()
        self.invocations = {"receiver": 0, "processor": 0, "publisher": 0, "app": 0}

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def webhook_url(self) -> str:
        assert self._front is not None
        host, port = self._front.server_address[:2]
        return f"http://{host!s}:{port}{WEBHOOK_PATH}"

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        options = self.options
        self._moto_cm = moto_server(
            self.template,
            secret_values={
                "WebhookSecret": local_secret_value(),
                "PluggyCredentialsSecret": json.dumps(
                    {"clientId": LOCAL_PLUGGY_CLIENT_ID, "clientSecret": LOCAL_PLUGGY_CLIENT_SECRET}
                ),
            },
        )
        self.aws = self._moto_cm.__enter__()
        if options.with_emulator:
            self.emulator = PluggyEmulator(
                LOCAL_PLUGGY_CLIENT_ID,
                LOCAL_PLUGGY_CLIENT_SECRET,
                seed=options.emulator_seed,
                time_scale=options.emulator_time_scale,
                signing_key=LOCAL_SIGNING_KEY,
                timed=options.emulator_timed,
                **options.emulator_options,
            )
            self.emulator.start()
        self._apply_environment()
        self._receiver = load_handler("receiver")
        self._processor = load_handler("processor")
        for function in FUNCTIONS[2:]:
            self._handlers[function] = load_handler(handler_folder(self.template, function))
        streams = make_clients(self.aws.endpoint, ("dynamodbstreams",))["dynamodbstreams"]
        self._stream_poller = StreamPoller(
            streams, self.aws.resources.streams["RecordsTable"], self._invoke_publisher, batch_size=self._stream_batch()
        )
        self._front = _Front((options.host, options.port), _FrontHandler)
        self._front.stack = self
        self._spawn("front", self._front.serve_forever)
        if options.sqs_trigger:
            self._spawn("sqs-trigger", self._poll)
            self._spawn("stream-publisher", self._publish_loop)
        if options.reconcile_every:
            self._spawn("reconcile-schedule", self._reconcile_timer)
        if self.emulator is not None:
            self.register()
        if options.state_file is not None:
            options.state_file.write_text(json.dumps(self.describe(), indent=2) + "\n")
            sam_env = self.sam_env_vars(options.sam_host)
            sam_env_file_path(options.state_file).write_text(json.dumps(sam_env, indent=2) + "\n")

    def stop(self) -> None:
        self._stop.set()
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self.emulator is not None:
            self.emulator.stop()
        if self._moto_cm is not None:
            self._moto_cm.__exit__(None, None, None)
            self._moto_cm = None
        self._restore_environment()
        state_file = self.options.state_file
        if state_file is not None:
            state_file.unlink(missing_ok=True)
            sam_env_file_path(state_file).unlink(missing_ok=True)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _apply_environment(self) -> None:
        assert self.aws is not None
        parameters = {
            "PluggyClientId": LOCAL_PLUGGY_CLIENT_ID,
            "RequireSignature": "true" if self.emulator is not None else "false",
            # Locally the peer is loopback; the allowlist path is exercised with it.
            "AllowedSourceCidrs": "127.0.0.1/32,::1/128",
            "PluggyApiBaseUrl": self.emulator.base_url if self.emulator else "https://api.pluggy.ai",
            "LogLevel": "ERROR" if self.options.quiet else "INFO",
        }
        if self.options.reconcile_after_hours is not None:
            parameters["ReconcileAfterHours"] = str(self.options.reconcile_after_hours)
        env: dict[str, str] = {}
        for function in FUNCTIONS:
            for key, value in function_environment(self.template, function, self.aws.resources, parameters).items():
                if key in env and env[key] != value:
                    raise RuntimeError(f"{key} differs between functions; they cannot share this process")
                env[key] = value
        env.update(self.aws.env)
        if self.options.quiet:
            env["POWERTOOLS_METRICS_DISABLED"] = "true"  # EMF blobs are for CloudWatch, not a terminal
        # Time compression, as for the visibility timeout: a crashed run's lease lapses before the retry.
        env["PROCESSING_LEASE_SECONDS"] = str(max(self.options.retry_delay / 2, 0.05))
        env.update(self.options.extra_env)
        self._saved_env = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        self._saved_log_level = logger.log_level
        logger.setLevel(env["POWERTOOLS_LOG_LEVEL"])  # the shared logger read its level at import
        _forget_containers()

    def _restore_environment(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        if self._saved_log_level is not None:
            logger.setLevel(self._saved_log_level)
            self._saved_log_level = None
        _forget_containers()

    # -- the functions --------------------------------------------------------------------------------

    def invoke_receiver(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self._receiver is not None
        with self._receiver_lock:
            self.invocations["receiver"] += 1
            return self._receiver(event, LocalContext("ReceiverFunction"))

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """One of the app's functions (connect token, read API), one invocation at a time like a container."""
        with self._locks[function]:
            self.invocations["app"] += 1
            answer: dict[str, Any] = self._handlers[function](event, LocalContext(function))
            return answer

    def _invoke_publisher(self, event: dict[str, Any]) -> Any:
        with self._locks["PublisherFunction"]:
            self.invocations["publisher"] += 1
            return self._handlers["PublisherFunction"](event, LocalContext("PublisherFunction"))

    def _stream_batch(self) -> int:
        events = self.template["Resources"]["PublisherFunction"]["Properties"]["Events"]
        return int(next(iter(events.values()))["Properties"].get("BatchSize", 100))

    def publish_pending(self) -> int:
        """Hand RecordsTable's new stream records to the publisher until none is left; how many it took."""
        assert self._stream_poller is not None
        return self._stream_poller.drain()

    def _publish_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.publish_pending()
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("stream publisher poll failed")
            self._stop.wait(0.2)

    def _batch_size(self) -> int:
        events = self.template["Resources"]["ProcessorFunction"]["Properties"]["Events"]
        return int(next(iter(events.values()))["Properties"].get("BatchSize", 10))

    def _poll(self) -> None:
        assert self.aws is not None and self._processor is not None
        sqs = self.aws.clients["sqs"]
        queue_url = self.aws.resources.queue_urls["EventQueue"]
        queue_arn = self.aws.resources.queue_arns["EventQueue"]
        batch_size = self._batch_size()
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=batch_size,
                    WaitTimeSeconds=1,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receive_message failed")
                time.sleep(0.5)
                continue
            if not messages:
                continue
            self._polling.set()
            try:
                self._deliver(sqs, queue_url, sqs_event(messages, queue_arn, "us-east-1"), messages)
            finally:
                self._polling.clear()

    def _deliver(self, sqs: Any, queue_url: str, event: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        assert self._processor is not None
        with self._processor_lock:
            self.invocations["processor"] += 1
            try:
                result = self._processor(event, LocalContext("ProcessorFunction"))
                failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            except Exception:
                log.exception("processor invocation failed")
                failed = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
            ]
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=max(0, round(self.options.retry_delay)),
                )

    def _reconcile_timer(self) -> None:
        interval = self.options.reconcile_every or 0
        while not self._stop.wait(interval):
            self.trigger_reconcile()

    def trigger_reconcile(self) -> None:
        """What the EventBridge rule sends every hour (template InputTemplate)."""
        assert self.aws is not None
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.aws.clients["sqs"].send_message(
            QueueUrl=self.aws.resources.queue_urls["EventQueue"],
            MessageBody=json.dumps(
                {
                    "event": "pipeline/reconcile",
                    "eventId": f"reconcile-{now}-{uuid.uuid4().hex[:6]}",
                    "scheduledAt": now,
                }
            ),
            MessageGroupId="reconcile",
        )

    # -- Pluggy side ----------------------------------------------------------------------------------

    def pluggy_client(self) -> PluggyClient:
        assert self.emulator is not None
        return PluggyClient(self.emulator.base_url, lambda: (LOCAL_PLUGGY_CLIENT_ID, LOCAL_PLUGGY_CLIENT_SECRET))

    def register(self) -> dict[str, Any]:
        """Register this stack's webhook with the emulator, exactly as `pluggy-pipeline register` does."""
        client = self.pluggy_client()
        try:
            header = os.environ.get("WEBHOOK_SECRET_HEADER", "X-Webhook-Secret")
            return register_webhook(client, self.webhook_url, header, LOCAL_WEBHOOK_SECRET, force=True)
        finally:
            client.close()

    # -- observation ----------------------------------------------------------------------------------

    def queue_depth(self, queue: str = "EventQueue") -> int:
        assert self.aws is not None
        attributes = self.aws.clients["sqs"].get_queue_attributes(
            QueueUrl=self.aws.resources.queue_urls[queue],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])

    def wait_until_idle(self, timeout: float = 60.0, settle: float = 0.3) -> bool:
        """True once Pluggy has nothing left to deliver and the queue is drained (checked twice, `settle` apart)."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            emulator_idle = self.emulator is None or self.emulator.wait_for_deliveries(timeout=0.05)
            if emulator_idle and self.queue_depth() == 0 and not self._polling.is_set():
                calm += 1
                if self.options.sqs_trigger and self.publish_pending():  # change events still to emit
                    calm = 0
                if calm >= 2:
                    return True
            else:
                calm = 0
            time.sleep(settle)
        return False

    def sam_parameters(self) -> dict[str, str]:
        """Template parameters of a `sam local` run against this stack (what --env-vars then writes)."""
        return {
            "PluggyClientId": LOCAL_PLUGGY_CLIENT_ID,
            # The events/ files and the emulator sign every delivery; events/receiver/missing-signature expects 401.
            "RequireSignature": "true",
            # Pluggy's address (the events/receiver files deliver from it) and loopback (`sam local start-api`
            # hands the function the caller's address, 127.0.0.1 or ::1).
            "AllowedSourceCidrs": f"{PLUGGY_SOURCE_IP}/32,127.0.0.1/32,::1/128",
            "PluggyApiBaseUrl": self.emulator.base_url if self.emulator else "https://api.pluggy.ai",
        }

    def sam_env_vars(self, host: str = "127.0.0.1") -> dict[str, dict[str, str]]:
        """SAM's --env-vars for running the template's functions against this stack (`sam local invoke/start-api`).

        Per function, each variable the template declares whose value must differ here: the real table and queue
        names and URLs (SAM local would pass logical ids), the moto secrets' ARNs, this stack's moto endpoint
        (AWS_ENDPOINT_URL, declared empty for this purpose), the emulator as Pluggy, the allowlist, signature and
        client id of the events/ files. Only declared variables: SAM drops any other silently. `host` is how the
        function's container reaches this machine's 127.0.0.1: itself with host networking
        (tools/sam_host_network.py), `host.docker.internal` on Docker Desktop.
        """
        assert self.aws is not None
        parameters = self.sam_parameters()
        # What SAM local resolves by itself: parameter defaults, and logical ids for resources.
        logical = LocalResources(
            tables={name: name for name in resources_of_type(self.template, "AWS::DynamoDB::Table")},
            queue_urls={name: name for name in resources_of_type(self.template, "AWS::SQS::Queue")},
            queue_arns={name: name for name in resources_of_type(self.template, "AWS::SQS::Queue")},
            secrets={name: name for name in resources_of_type(self.template, "AWS::SecretsManager::Secret")},
            buses={name: name for name in resources_of_type(self.template, "AWS::Events::EventBus")},
            streams={name: name for name in resources_of_type(self.template, "AWS::DynamoDB::Table")},
        )
        result: dict[str, dict[str, str]] = {}
        for function in SAM_FUNCTIONS:
            names = declared_variables(self.template, function)
            sam_default = function_environment(self.template, function, logical)
            local = function_environment(self.template, function, self.aws.resources, parameters)
            if "AWS_ENDPOINT_URL" in names:
                local["AWS_ENDPOINT_URL"] = self.aws.endpoint
            result[function] = {
                key: _replace_host(value, host)  # moto's endpoint and queue URLs, the emulator's URL
                for key, value in local.items()
                if key in names and value != sam_default.get(key, "")  # declared empty: absent from sam_default
            }
        return result

    def describe(self) -> dict[str, Any]:
        """What other commands need to talk to this running stack (written to .local-stack.json)."""
        assert self.aws is not None
        return {
            "webhookUrl": self.webhook_url,
            "awsEndpoint": self.aws.endpoint,
            "region": "us-east-1",
            "tables": self.aws.resources.tables,
            "queues": self.aws.resources.queue_urls,
            "secrets": self.aws.resources.secrets,
            "eventBus": self.aws.resources.buses.get("ChangeEventBus"),
            "apiBaseUrl": self.webhook_url.removesuffix(WEBHOOK_PATH),
            "pluggyBaseUrl": self.emulator.base_url if self.emulator else None,
            "pluggyClientId": LOCAL_PLUGGY_CLIENT_ID,  # not secret: `send` stamps it as the payloads' clientId
            "secretHeader": os.environ.get("WEBHOOK_SECRET_HEADER", "X-Webhook-Secret"),
            "pid": os.getpid(),
        }
