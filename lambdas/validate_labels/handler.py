"""ValidateLabels Lambda (container image): judge the PENDING labels this pipeline proposed on one receipt.

Event ``{"image_id", "receipt_id"}`` or ``{"preflight": true}``; the environment (the process
function's), the result and the error classes Step Functions sees are in docs/handlers.md. The work
itself is ``receipt_label.pipeline.validate_receipt``; the wiring is ``receipt_label.lambda_wiring``.
"""

from __future__ import annotations

import logging
from typing import Any

from receipt_label import pipeline
from receipt_label.lambda_wiring import ContainerWiring
from receipt_label.pipeline import InvalidEventError, ValidateReceiptEvent

# The error a rejected event raises, as Step Functions sees it.
__all__ = ["InvalidEventError", "lambda_handler"]

logger = logging.getLogger("validate_labels")

# _dynamo, _secrets, _models, _chat_model, _tracer: created on first use, once per container; tests replace them.
wiring = ContainerWiring(globals())
dynamo, read_secret, chat_models, tracer = wiring.dynamo, wiring.read_secret, wiring.chat_models, wiring.tracer


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """The Lambda entry point (``handler.lambda_handler``)."""
    return wiring.handle(event, context, log=logger, model=ValidateReceiptEvent, work=pipeline.validate_receipt)
