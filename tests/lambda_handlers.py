"""Handler loading and the Lambda test doubles, kept importable from here: tests.helpers holds them."""

from __future__ import annotations

from tests.helpers import LIST_HANDLER, PROCESS_HANDLER, WRITE_OPERATIONS, Calls, LambdaContext, load_handler

__all__ = ["LIST_HANDLER", "PROCESS_HANDLER", "WRITE_OPERATIONS", "Calls", "LambdaContext", "load_handler"]
