"""The Lambda handler files, and loading a fresh copy of one as a module.

Both handlers are files named ``handler.py`` in folders that are not packages (as in Lambda, where
the folder is the task root), so tests load them from their path under a name of their own.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LIST_HANDLER = REPO_ROOT / "lambdas" / "list_receipts" / "handler.py"
PROCESS_HANDLER = REPO_ROOT / "lambdas" / "process_receipt" / "handler.py"
WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


def load_handler(path: Path | str, name: str) -> ModuleType:
    """Import the handler at ``path`` as a new module called ``name`` (its cached clients start empty)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class LambdaContext:
    """The attributes of a Lambda context object that the handlers and Powertools read."""

    function_name: str = "ProcessReceipt"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:ProcessReceipt"
    memory_limit_in_mb: int = 1536
    aws_request_id: str = "req-local"
    log_group_name: str = "/aws/lambda/ProcessReceipt"
    log_stream_name: str = "stream"
    timeout_seconds: float = 600.0
    _start: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        """As Lambda's: the milliseconds left before the function's timeout, counting down from creation."""
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._start)) * 1000))


@dataclass
class Calls:
    """AWS API operations a client made (one per API call, not per HTTP attempt); register ``hook``
    on the client's ``before-call`` event."""

    names: list[str] = field(default_factory=list)

    def hook(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)

    def writes(self) -> list[str]:
        return [n for n in self.names if n in WRITE_OPERATIONS]
