"""Errors raised by receipt_dynamo. Class names are part of the contract (Step Functions matches them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from receipt_dynamo.entities import ReceiptWordLabel


class ReceiptDynamoError(Exception):
    """Base class of every error this package raises on purpose."""


class EntityValidationError(ReceiptDynamoError, ValueError):
    """An entity field has an invalid value; ``field`` names it (e.g. ``word_id``)."""

    def __init__(self, entity: str, field: str, problem: str) -> None:
        self.entity = entity
        self.field = field
        self.problem = problem
        super().__init__(f"{entity}.{field}: {problem}")


class DocumentValidationError(ReceiptDynamoError, ValueError):
    """A receipt document is invalid; ``path`` is the JSON path of the bad field (``lines[2].words[0].word_id``)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ReceiptNotFoundError(ReceiptDynamoError, LookupError):
    """The Receipt item (``IMAGE#<image_id>`` / ``RECEIPT#<receipt_id>``) does not exist."""

    def __init__(self, image_id: str, receipt_id: int) -> None:
        self.image_id = image_id
        self.receipt_id = receipt_id
        super().__init__(f"receipt not found: image_id={image_id} receipt_id={receipt_id}")


#: The shorter name, kept as an alias.
ReceiptNotFound = ReceiptNotFoundError


class LabelWriteError(ReceiptDynamoError):
    """Labels could not all be written after the bounded retries.

    ``written``: labels this call created; ``skipped_existing``: labels whose key already existed;
    ``not_written``: labels that are not in the table from this call (safe to retry: writes are conditional).
    """

    def __init__(
        self,
        message: str,
        *,
        written: Sequence[ReceiptWordLabel],
        not_written: Sequence[ReceiptWordLabel],
        skipped_existing: Sequence[ReceiptWordLabel] = (),
    ) -> None:
        self.written = list(written)
        self.not_written = list(not_written)
        self.skipped_existing = list(skipped_existing)
        sample = ", ".join(label.describe() for label in self.not_written[:5])
        more = f" (+{len(self.not_written) - 5} more)" if len(self.not_written) > 5 else ""
        super().__init__(
            f"{message}: {len(self.written)} label(s) written, {len(self.skipped_existing)} skipped as existing, "
            f"{len(self.not_written)} not written: {sample}{more}"
        )


class ItemWriteError(ReceiptDynamoError):
    """BatchWriteItem left items unprocessed after the bounded retries (receipt, lines, words)."""

    def __init__(
        self, message: str, *, written_keys: Sequence[dict[str, str]], unwritten_keys: Sequence[dict[str, str]]
    ):
        self.written_keys = list(written_keys)
        self.unwritten_keys = list(unwritten_keys)
        super().__init__(f"{message}: {len(self.written_keys)} item(s) written, {len(self.unwritten_keys)} not written")


#: DynamoDB error codes that mean "throttled" (on-demand or provisioned capacity, or the account's request rate).
THROTTLING_ERROR_CODES = frozenset(
    {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"}
)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``response["Error"]["Code"]``), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


class DynamoThrottledError(ReceiptDynamoError):
    """DynamoDB kept throttling a request after the retries (botocore's, and ours where we retry).

    The class name is what Step Functions sees (it retries it with backoff). ``operation`` is the
    API call (``Query``, ``UpdateItem``), ``code`` DynamoDB's error code; the botocore error is the
    ``__cause__``.
    """

    def __init__(self, operation: str, code: str, detail: str) -> None:
        self.operation = operation
        self.code = code
        super().__init__(f"DynamoDB {operation} throttled ({code}) after retries: {detail}")

    @classmethod
    def from_client_error(cls, exc: BaseException) -> DynamoThrottledError | None:
        """The typed error for a throttling ``ClientError``; None for any other error."""
        code = error_code(exc)
        if code not in THROTTLING_ERROR_CODES:
            return None
        operation = str(getattr(exc, "operation_name", None) or "request")
        return cls(operation, code, str(exc))
