"""Errors raised by receipt_dynamo. Class names are part of the contract (Step Functions matches them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


# --- transient AWS failures: one typed, retryable error ---------------------------------------------

#: The DynamoDB operations whose throttling is about table or index capacity (reads and writes of
#: items). A throttling code from one of them is :class:`DynamoThrottledError`; from any other
#: operation (another service, or DynamoDB's control plane) it is :class:`AwsTransientError`.
DYNAMODB_DATA_OPERATIONS = frozenset(
    {
        "BatchExecuteStatement",
        "BatchGetItem",
        "BatchWriteItem",
        "DeleteItem",
        "ExecuteStatement",
        "ExecuteTransaction",
        "GetItem",
        "PutItem",
        "Query",
        "Scan",
        "TransactGetItems",
        "TransactWriteItems",
        "UpdateItem",
    }
)

#: Secrets Manager's read operations (used to name the service in :class:`AwsTransientError`).
SECRETS_MANAGER_READ_OPERATIONS = frozenset(
    {"BatchGetSecretValue", "DescribeSecret", "GetSecretValue", "ListSecretVersionIds", "ListSecrets"}
)

#: Transient error codes, whatever the HTTP status: the server faults of the service models
#: (DynamoDB's ``InternalServerError``, Secrets Manager's ``InternalServiceError``), DynamoDB's
#: ``ServiceUnavailable`` (503), the errors common to every AWS API (``InternalFailure`` 500,
#: ``ServiceUnavailable`` 503, ``RequestTimeoutException`` 408), botocore's standard retry mode's
#: transient codes (``RequestTimeout``, ``RequestTimeoutException``, ``PriorRequestNotComplete``) and
#: the server-side codes other services use (``InternalError``, ``InternalServerException``,
#: ``ServiceUnavailableException``).
TRANSIENT_ERROR_CODES = frozenset(
    {
        "InternalServerError",
        "InternalServiceError",
        "InternalFailure",
        "InternalError",
        "InternalServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        # DynamoDB's service model marks it retryable (a concurrent write from another Region).
        "ReplicatedWriteConflictException",
    }
)

#: Throttling codes of AWS services (botocore's standard retry mode list, without
#: ``LimitExceededException``, which Secrets Manager uses for a quota such as the number of secrets,
#: not for a request rate, and without DynamoDB's ``TransactionInProgressException``). From a DynamoDB
#: data operation, :data:`THROTTLING_ERROR_CODES` are :class:`DynamoThrottledError` instead.
AWS_THROTTLING_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)

#: HTTP 501 Not Implemented is a 5xx that no retry cures.
_PERMANENT_5XX = frozenset({501})
_MAX_CHAIN = 16


class AwsTransientError(ReceiptDynamoError):
    """An AWS call failed with a transient error (5xx, server-side code, another service's throttling,
    no connection or no response) after botocore's retries.

    The class name is what Step Functions sees (it retries it with backoff). ``service`` is the AWS
    service when known (``dynamodb``, ``secretsmanager``; None otherwise), ``operation`` the API call
    (``GetSecretValue``; None for a transport error, which botocore raises without it), ``code`` the AWS
    error code or, for a transport error, botocore's exception class (``EndpointConnectionError``),
    ``http_status`` the HTTP status when there was a response. The message names the operation and
    the code only: it never carries the service's error message, a request or a response body, so no
    secret value can reach it. The botocore error is the ``__cause__`` when raised with ``from``.
    """

    def __init__(
        self,
        service: str | None,
        operation: str | None,
        code: str,
        *,
        http_status: int | None = None,
        retries: int | None = None,
        endpoint_host: str | None = None,
    ) -> None:
        self.service = service
        self.operation = operation
        self.code = code
        self.http_status = http_status
        self.retries = retries
        self.endpoint_host = endpoint_host
        call = " ".join(part for part in (service, operation or "request") if part)
        where = f" to {endpoint_host}" if endpoint_host else ""
        status = f"HTTP {http_status}" if http_status is not None else "no response"
        tries = f"{retries} retries" if retries is not None else "botocore's retries"
        super().__init__(f"AWS {call}{where} failed with a transient error ({code}, {status}) after {tries}")


def _http_status(response: dict[str, object]) -> int | None:
    metadata = response.get("ResponseMetadata")
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, dict) else None
    return status if isinstance(status, int) else None


def _retries(response: dict[str, object]) -> int | None:
    metadata = response.get("ResponseMetadata")
    retries = metadata.get("RetryAttempts") if isinstance(metadata, dict) else None
    return retries if isinstance(retries, int) else None


def _service_of(operation: str | None) -> str | None:
    if operation in DYNAMODB_DATA_OPERATIONS:
        return "dynamodb"
    if operation in SECRETS_MANAGER_READ_OPERATIONS:
        return "secretsmanager"
    return None


def _endpoint_host(exc: BaseException) -> str | None:
    kwargs = getattr(exc, "kwargs", None)
    url = kwargs.get("endpoint_url") if isinstance(kwargs, dict) else None
    if not isinstance(url, str):
        return None
    from urllib.parse import urlsplit

    return urlsplit(url).hostname


def _service_of_host(host: str | None) -> str | None:
    """``dynamodb.us-east-1.amazonaws.com`` -> ``dynamodb``; None for a host that is not an AWS endpoint."""
    if host is None or not (host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")):
        return None
    return host.split(".", 1)[0]


def _classify_client_error(
    exc: BaseException, response: dict[str, object], service: str | None
) -> DynamoThrottledError | AwsTransientError | None:
    code = error_code(exc) or "Unknown"
    operation = getattr(exc, "operation_name", None)
    operation = str(operation) if operation else None
    service = service or _service_of(operation)
    if service == "dynamodb" and code in THROTTLING_ERROR_CODES:
        return DynamoThrottledError(operation or "request", code, str(exc))
    status = _http_status(response)
    transient = (
        code in TRANSIENT_ERROR_CODES
        or code in AWS_THROTTLING_ERROR_CODES
        or status == 429
        or (status is not None and status >= 500 and status not in _PERMANENT_5XX)
    )
    if not transient:
        return None
    return AwsTransientError(service, operation, code, http_status=status, retries=_retries(response))


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its ``__cause__`` or (unless suppressed with ``from None``) its ``__context__``, and so on."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def retryable_aws_error(
    exc: BaseException, *, service: str | None = None
) -> DynamoThrottledError | AwsTransientError | None:
    """The typed retryable error for an AWS failure that outlasted botocore's retries, else None.

    DynamoDB throttling (:data:`THROTTLING_ERROR_CODES` from a DynamoDB data operation):
    :class:`DynamoThrottledError`. HTTP 5xx (not 501) or 429, a code in :data:`TRANSIENT_ERROR_CODES` or
    :data:`AWS_THROTTLING_ERROR_CODES`, or one of botocore's connection / HTTP client errors:
    :class:`AwsTransientError`. Anything else, permanent AWS errors included: None.

    The exception chain is followed (``__cause__``, else an unsuppressed ``__context__``: Powertools'
    ``SecretsProvider.get`` hides the ``ClientError`` there); the walk stops at the first AWS error and
    at this package's errors (the typed ones are returned as they are, the others give None).
    ``service`` overrides the service inferred from the operation or endpoint. The error is returned,
    not raised: ``raise typed from exc`` keeps botocore's error as the cause. Details: docs/data-layer.md.
    """
    from botocore.exceptions import BotoCoreError, HTTPClientError  # imported here: this module loads without it
    from botocore.exceptions import ConnectionError as BotocoreConnectionError

    for link in _exception_chain(exc):
        if isinstance(link, DynamoThrottledError | AwsTransientError):
            return link
        if isinstance(link, ReceiptDynamoError):
            return None
        response = getattr(link, "response", None)
        if isinstance(response, dict) and "Error" in response:  # a botocore ClientError
            return _classify_client_error(link, response, service)
        if isinstance(link, BotocoreConnectionError | HTTPClientError):
            host = _endpoint_host(link)
            return AwsTransientError(service or _service_of_host(host), None, type(link).__name__, endpoint_host=host)
        if isinstance(link, BotoCoreError):
            return None  # botocore's own permanent errors: no credentials, invalid parameters, ...
    return None


@contextmanager
def typed_aws_errors() -> Iterator[None]:
    """Re-raise what :func:`retryable_aws_error` types as that typed error (``from`` the original); else as is."""
    try:
        yield
    except ReceiptDynamoError:  # already typed (LabelWriteError, ReceiptNotFoundError, DynamoThrottledError, ...)
        raise
    except Exception as exc:
        typed = retryable_aws_error(exc)
        if typed is None:
            raise
        raise typed from exc
