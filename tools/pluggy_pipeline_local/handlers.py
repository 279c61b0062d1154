"""Loading the functions' handlers the way Lambda does, for in-process local runs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pluggy_pipeline_local.template import REPO_ROOT


def load_handler(function: str) -> Callable[[dict[str, Any], Any], Any]:
    """A function's lambda_handler from functions/<name>/app.py (they are not packages)."""
    spec = importlib.util.spec_from_file_location(f"{function}_app", REPO_ROOT / "functions" / function / "app.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"functions/{function}/app.py not found")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Callable[[dict[str, Any], Any], Any] = module.lambda_handler
    return handler


class LocalContext:
    """The attributes of Lambda's context object that Powertools reads."""

    memory_limit_in_mb = 256
    aws_request_id = "local"

    def __init__(self, function_name: str = "local", timeout_seconds: int = 90) -> None:
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self._deadline_ms = timeout_seconds * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self._deadline_ms
