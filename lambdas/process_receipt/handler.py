"""ProcessReceipt Lambda (container image): propose PENDING word labels for one receipt.

Event ``{"image_id", "receipt_id", "force"?}`` or ``{"preflight": true}``; the environment, the
result and the error classes Step Functions sees are in docs/handlers.md. The work itself is
``receipt_label.pipeline``; the table, the secrets, the tracer and the time budget are wired by
``receipt_label.lambda_wiring`` (shared with the validate_labels handler).
"""

from __future__ import annotations

import logging
from typing import Any

from receipt_label import pipeline
from receipt_label.lambda_wiring import ContainerWiring
from receipt_label.pipeline import InvalidEventError, ProcessReceiptEvent, parse_event

# The event's contract and the error a rejected event raises, as Step Functions sees them.
__all__ = ["InvalidEventError", "lambda_handler", "parse_event"]

logger = logging.getLogger("process_receipt")

# _dynamo, _secrets, _models, _chat_model, _tracer: created on first use, once per container; tests replace them.
wiring = ContainerWiring(globals())
dynamo, read_secret, chat_models, tracer = wiring.dynamo, wiring.read_secret, wiring.chat_models, wiring.tracer


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``handler.lambda_handler``)."""
    return wiring.handle(event, context, log=logger, model=ProcessReceiptEvent, work=pipeline.process_receipt)
