"""DynamoClient: reads receipts and writes labels in the single table (boto3 low-level client, stdlib).

Labels are written with one conditional ``PutItem`` each (``attribute_not_exists(PK)``: never
overwritten), retried in rounds with backoff and full jitter; the completion marker is one
conditional ``UpdateItem`` written after the labels; a judgement is one conditional ``UpdateItem``
of a PENDING label of the pipeline. Why this pattern, what each call costs and how it retries:
docs/data-layer.md.

Errors: throttling that outlasts the retries raises :class:`DynamoThrottledError`, other transient
failures (5xx, connection errors) :class:`AwsTransientError`, for the receipt read and every write;
label writes raise :class:`LabelWriteError` (it names what was written), loading
:class:`ItemWriteError`. ``iter_receipt_keys`` / ``iter_receipt_markers`` / ``iter_pending_receipts``
let botocore's errors through (ListReceipts' contract). Permanent errors are raised as botocore's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from receipt_dynamo import keys
from receipt_dynamo.document import parse_receipt_document
from receipt_dynamo.entities import (
    PIPELINE_PROPOSER_PREFIX,
    Item,
    LabelJudgement,
    Receipt,
    ReceiptDetails,
    ReceiptLine,
    ReceiptWord,
    ReceiptWordLabel,
    ValidationStatus,
    utc_now_iso,
    validation_stamp,
)
from receipt_dynamo.errors import (
    THROTTLING_ERROR_CODES,
    DynamoThrottledError,
    ItemWriteError,
    LabelWriteError,
    ReceiptNotFoundError,
    error_code,
    typed_aws_errors,
)

#: request-level error codes worth retrying (botocore has its own retries underneath; these are ours)
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)
BATCH_WRITE_MAX_ITEMS = 25
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class LabelWriteResult:
    added: list[ReceiptWordLabel] = field(default_factory=list)
    skipped_existing: list[ReceiptWordLabel] = field(default_factory=list)


@dataclass
class ValidationWriteResult:
    """What :meth:`DynamoClient.set_label_validations` did: ``updated`` judgements, and those
    ``skipped_changed`` (the label was no longer a PENDING label of the pipeline, or is gone)."""

    updated: list[LabelJudgement] = field(default_factory=list)
    skipped_changed: list[LabelJudgement] = field(default_factory=list)


def _error_code(exc: Exception) -> str | None:
    return error_code(exc)


def _key_tuple(key: Item) -> tuple[str, str]:
    return (key["PK"]["S"], key["SK"]["S"])


L = TypeVar("L", ReceiptWordLabel, LabelJudgement)


def _with_repeats(items: Iterable[L], type_: type[L]) -> Iterator[tuple[L, bool]]:
    """Each item and whether its key came earlier in ``items``; TypeError at the first not of ``type_``."""
    seen: set[tuple[str, str]] = set()
    for item in items:
        if not isinstance(item, type_):
            raise TypeError(f"expected {type_.__name__}, got {type(item).__name__}")
        key = _key_tuple(item.key)
        yield item, key in seen
        seen.add(key)


class DynamoClient:
    """Receipt data access for one table. The constructor does no I/O; the boto3 client is created lazily.

    ``sleep`` and ``rng`` are injectable so tests neither sleep nor depend on randomness.
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        max_attempts: int = 8,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        concurrency: int = 8,
    ) -> None:
        if not isinstance(table_name, str) or not table_name.strip():
            raise ValueError("table_name must be a non-empty string")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.table_name = table_name
        self._client = client
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.concurrency = concurrency

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("dynamodb")
        return self._client

    def _backoff(self, attempt: int) -> None:
        """Full jitter: sleep uniformly in [0, min(max_delay, base_delay * 2**attempt)]."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        self._sleep(self._rng.uniform(0, cap))

    # --- reads ---------------------------------------------------------------------------------------

    def _query(self, **kwargs: Any) -> Iterator[Item]:
        request: dict[str, Any] = {"TableName": self.table_name, **kwargs}
        while True:
            response = self.client.query(**request)
            yield from response.get("Items", [])
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def iter_receipt_keys(self, *, page_size: int | None = None) -> Iterator[tuple[str, int]]:
        """Yield ``(image_id, receipt_id)`` of every receipt: paginated Query on GSITYPE (``TYPE = RECEIPT``)."""
        for image_id, receipt_id, _ in self.iter_receipt_markers(page_size=page_size):
            yield image_id, receipt_id

    def iter_receipt_markers(self, *, page_size: int | None = None) -> Iterator[tuple[str, int, str | None]]:
        """Yield ``(image_id, receipt_id, labeled_by)`` of every receipt (``labeled_by``: the completion
        marker, None when unset); the same paginated, eventually consistent Query on GSITYPE."""
        kwargs: dict[str, Any] = {
            "IndexName": keys.GSI_TYPE_INDEX,
            "KeyConditionExpression": "#t = :t",
            "ExpressionAttributeNames": {"#t": "TYPE", "#pk": "PK", "#sk": "SK", "#by": "labeled_by"},
            "ExpressionAttributeValues": {":t": {"S": keys.TYPE_RECEIPT}},
            "ProjectionExpression": "#pk, #sk, #by",
        }
        if page_size is not None:
            kwargs["Limit"] = page_size
        for item in self._query(**kwargs):
            receipt_id, line_id, _, _ = keys.parse_sk(item["SK"]["S"])
            if line_id is None:
                labeled_by = item.get("labeled_by", {}).get("S")
                yield keys.parse_pk(item["PK"]["S"]), receipt_id, labeled_by

    def iter_pending_receipts(self, *, page_size: int | None = None) -> Iterator[tuple[str, int]]:
        """Yield ``(image_id, receipt_id)`` of every receipt with a PENDING label, once each, in index order.

        A paginated, eventually consistent Query on GSI3 (``GSI3PK = VALIDATION_STATUS#PENDING``, keys
        only); a receipt's labels are adjacent in the index (``GSI3SK`` starts with its keys).
        """
        kwargs: dict[str, Any] = {
            "IndexName": keys.GSI_STATUS_INDEX,
            "KeyConditionExpression": "#status = :status",
            "ExpressionAttributeNames": {"#status": "GSI3PK", "#pk": "PK", "#sk": "SK"},
            "ExpressionAttributeValues": {":status": {"S": keys.validation_status_pk(ValidationStatus.PENDING.value)}},
            "ProjectionExpression": "#pk, #sk",
        }
        if page_size is not None:
            kwargs["Limit"] = page_size
        previous: tuple[str, int] | None = None
        for item in self._query(**kwargs):
            receipt = (keys.parse_pk(item["PK"]["S"]), keys.parse_sk(item["SK"]["S"])[0])
            if receipt != previous:
                previous = receipt
                yield receipt

    def get_receipt_details(self, image_id: str, receipt_id: int, *, consistent_read: bool = True) -> ReceiptDetails:
        """The receipt with its lines, words and labels (sorted by ids), from one paginated Query.

        Strongly consistent by default (it sees a marker or labels written just before; twice the
        price of ``consistent_read=False``). Raises :class:`ReceiptNotFoundError` when the Receipt
        item is absent (even if stray children exist), :class:`DynamoThrottledError` /
        :class:`AwsTransientError` when throttling or a transient failure outlasted botocore's retries.
        """
        probe = Receipt(image_id, receipt_id)  # validates the arguments
        receipt: Receipt | None = None
        lines: list[ReceiptLine] = []
        words: list[ReceiptWord] = []
        labels: list[ReceiptWordLabel] = []
        items = self._query(
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": "PK", "#sk": "SK"},
            ExpressionAttributeValues={
                ":pk": {"S": keys.image_pk(image_id)},
                ":prefix": {"S": keys.receipt_sk(receipt_id)},
            },
            ConsistentRead=consistent_read,
        )
        with typed_aws_errors():
            for item in items:
                item_type = item.get("TYPE", {}).get("S")
                if item_type is None and keys.is_label_sk(item["SK"]["S"]):
                    item_type = keys.TYPE_RECEIPT_WORD_LABEL  # labels carry no TYPE (not in GSITYPE)
                if item_type == keys.TYPE_RECEIPT:
                    receipt = Receipt.from_item(item)
                elif item_type == keys.TYPE_RECEIPT_LINE:
                    lines.append(ReceiptLine.from_item(item))
                elif item_type == keys.TYPE_RECEIPT_WORD:
                    words.append(ReceiptWord.from_item(item))
                elif item_type == keys.TYPE_RECEIPT_WORD_LABEL:
                    labels.append(ReceiptWordLabel.from_item(item))
                # other item types under the receipt prefix belong to other features: ignored
        if receipt is None or receipt.key != probe.key:
            raise ReceiptNotFoundError(image_id, receipt_id)
        return ReceiptDetails(receipt=receipt, lines=lines, words=words, labels=labels)

    # --- receipt, lines, words (BatchWriteItem: plain puts, idempotent re-load) -----------------------

    def _batch_put(self, items: Sequence[Item]) -> None:
        with typed_aws_errors():
            self._batch_put_rounds(items)

    def _batch_put_rounds(self, items: Sequence[Item]) -> None:
        # BatchWriteItem rejects a request naming one key twice: the last item for a key wins, as with PutItem.
        items = list({_key_tuple(item): item for item in items}.values())
        written: list[dict[str, str]] = []
        for start in range(0, len(items), BATCH_WRITE_MAX_ITEMS):
            pending: list[Item] = list(items[start : start + BATCH_WRITE_MAX_ITEMS])
            attempt = 0
            while pending:
                try:
                    response = self.client.batch_write_item(
                        RequestItems={self.table_name: [{"PutRequest": {"Item": item}} for item in pending]}
                    )
                    unprocessed = [
                        request["PutRequest"]["Item"]
                        for request in response.get("UnprocessedItems", {}).get(self.table_name, [])
                    ]
                except Exception as exc:
                    if _error_code(exc) not in RETRYABLE_ERROR_CODES:
                        raise  # a connection error or another 5xx (botocore retried it) is typed by _batch_put
                    unprocessed = pending
                done = {_key_tuple(i) for i in pending} - {_key_tuple(i) for i in unprocessed}
                written.extend({"PK": pk, "SK": sk} for pk, sk in sorted(done))
                pending = unprocessed
                if pending:
                    attempt += 1
                    if attempt >= self.max_attempts:
                        rest = [*pending, *items[start + BATCH_WRITE_MAX_ITEMS :]]
                        raise ItemWriteError(
                            f"BatchWriteItem left items unprocessed after {attempt} attempts",
                            written_keys=written,
                            unwritten_keys=[{"PK": i["PK"]["S"], "SK": i["SK"]["S"]} for i in rest],
                        )
                    self._backoff(attempt)

    def add_receipt(self, receipt: Receipt) -> None:
        self._batch_put([receipt.to_item()])

    def add_receipt_lines(self, lines: Iterable[ReceiptLine]) -> None:
        self._batch_put([line.to_item() for line in lines])

    def add_receipt_words(self, words: Iterable[ReceiptWord]) -> None:
        self._batch_put([word.to_item() for word in words])

    def load_receipt_document(self, doc: dict[str, Any]) -> ReceiptDetails:
        """Validate a receipt document (errors name the JSON path) and write receipt, lines and words.

        Lines and words are written before the Receipt item, so a receipt that is listed is complete.
        Re-loading a document overwrites its receipt/line/word items; labels are never touched.
        Loading a document again is a new version of the receipt: the Receipt item is replaced
        whole, so its labeling completion marker (``labeled_by`` / ``labeled_at``) is cleared and
        the next pipeline run labels the receipt again (proposing only for words without a label;
        existing labels are never overwritten).
        """
        details = parse_receipt_document(doc)
        self._batch_put([line.to_item() for line in details.lines] + [word.to_item() for word in details.words])
        self._batch_put([details.receipt.to_item()])
        return details

    # --- completion marker (one conditional UpdateItem) ----------------------------------------------

    def mark_receipt_labeled(
        self, image_id: str, receipt_id: int, *, proposed_by: str, at: str | None = None
    ) -> Receipt:
        """Record on the Receipt item that labeling finished: ``labeled_by = proposed_by``, ``labeled_at = at``.

        ``at`` defaults to now (ISO 8601 UTC). One conditional ``UpdateItem`` of the two attributes: it
        never creates a receipt (:class:`ReceiptNotFoundError`) and overwrites an earlier marker.
        Retried like the label writes, then :class:`DynamoThrottledError` or :class:`AwsTransientError`.
        Returns the marked Receipt.
        """
        labeled_at = at if at is not None else utc_now_iso()
        receipt = Receipt(image_id, receipt_id, labeled_by=proposed_by, labeled_at=labeled_at)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": receipt.key,
            "UpdateExpression": "SET #by = :by, #at = :at",
            "ConditionExpression": "attribute_exists(#pk)",
            "ExpressionAttributeNames": {"#pk": "PK", "#by": "labeled_by", "#at": "labeled_at"},
            "ExpressionAttributeValues": {":by": {"S": proposed_by}, ":at": {"S": labeled_at}},
        }
        if not self._conditional_update(request):
            raise ReceiptNotFoundError(image_id, receipt_id)
        return receipt

    def _conditional_update(self, request: dict[str, Any]) -> bool:
        """One conditional ``UpdateItem``, retried in rounds; False when its condition failed.

        Throttling beyond the rounds: :class:`DynamoThrottledError`; other transient failures:
        :class:`AwsTransientError`; anything else as botocore raised it.
        """
        attempt = 0
        with typed_aws_errors():
            while True:
                try:
                    self.client.update_item(**request)
                    return True
                except Exception as exc:
                    code = _error_code(exc)
                    if code == "ConditionalCheckFailedException":
                        return False
                    if code not in RETRYABLE_ERROR_CODES:
                        raise
                    attempt += 1
                    if attempt < self.max_attempts:
                        self._backoff(attempt)
                        continue
                    if code in THROTTLING_ERROR_CODES:
                        raise DynamoThrottledError("UpdateItem", code, f"{exc} ({attempt} attempts)") from exc
                    raise

    # --- judgements (conditional UpdateItem, one per judged label) ---------------------------------

    def set_label_validations(
        self, judgements: Iterable[LabelJudgement], *, validated_by: str, validated_at: str | None = None
    ) -> ValidationWriteResult:
        """Record each judgement on its label, only while the label is a PENDING label of the pipeline.

        One ``UpdateItem`` per judgement, conditional on ``validation_status = PENDING`` and
        ``label_proposed_by`` starting with ``receipt_label:``; it sets ``validation_status``,
        ``GSI3PK = VALIDATION_STATUS#<status>`` (the label leaves the PENDING index key),
        ``validation_reason``, ``validated_by`` and ``validated_at`` (default now, ISO 8601 UTC). A
        failed condition (a person's decision, another proposer's label, a concurrent change, a
        deleted label) leaves the label as it is: ``skipped_changed``. Errors as
        :meth:`mark_receipt_labeled`; the judgements updated before an error stay updated.
        """
        pending: list[LabelJudgement] = []
        for judgement, repeated in _with_repeats(judgements, LabelJudgement):
            if repeated:
                raise ValueError(f"label judged twice: {judgement.describe()}")
            pending.append(judgement)
        by, at = validation_stamp(validated_by, validated_at)
        self.client  # noqa: B018 - create the boto3 client here, not racing in the worker threads
        applied = self._map(lambda j: self._conditional_update(self._validation_request(j, by, at)), pending)
        result = ValidationWriteResult()
        for judgement, done in zip(pending, applied, strict=True):
            (result.updated if done else result.skipped_changed).append(judgement)
        return result

    def _validation_request(self, judgement: LabelJudgement, validated_by: str, validated_at: str) -> dict[str, Any]:
        status = judgement.status.value
        return {
            "TableName": self.table_name,
            "Key": judgement.key,
            "UpdateExpression": "SET #status = :status, #gsi3pk = :gsi3pk, #reason = :reason, #by = :by, #at = :at",
            "ConditionExpression": "#status = :pending AND begins_with(#proposed_by, :pipeline)",
            "ExpressionAttributeNames": {
                "#status": "validation_status",
                "#gsi3pk": "GSI3PK",
                "#reason": "validation_reason",
                "#by": "validated_by",
                "#at": "validated_at",
                "#proposed_by": "label_proposed_by",
            },
            "ExpressionAttributeValues": {
                ":status": {"S": status},
                ":gsi3pk": {"S": keys.validation_status_pk(status)},
                ":reason": {"S": judgement.reason},
                ":by": {"S": validated_by},
                ":at": {"S": validated_at},
                ":pending": {"S": ValidationStatus.PENDING.value},
                ":pipeline": {"S": PIPELINE_PROPOSER_PREFIX},
            },
        }

    # --- labels (conditional PutItem, one per label) -----------------------------------------------

    def _put_label(self, label: ReceiptWordLabel) -> tuple[str, Exception | None]:
        """One conditional PutItem. Returns ("added" | "existing" | "retry" | "fatal", error)."""
        item = label.to_item()
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": "PK"},
            )
            return "added", None
        except Exception as exc:
            code = _error_code(exc)
            if code == "ConditionalCheckFailedException":
                return "existing", None
            if code in RETRYABLE_ERROR_CODES:
                return "retry", exc
            return "fatal", exc

    def add_receipt_word_labels(self, labels: Iterable[ReceiptWordLabel]) -> LabelWriteResult:
        """Create labels whose key does not exist; never overwrite (docs/data-layer.md).

        A label whose key already exists (in the table, or earlier in ``labels``) is returned in
        ``skipped_existing``. Throttled writes are retried in rounds with backoff and jitter; after
        ``max_attempts`` rounds, or on a non-retryable error, raises :class:`LabelWriteError`.
        """
        self.client  # noqa: B018 - create the boto3 client here, not racing in the worker threads
        result = LabelWriteResult()
        pending: list[ReceiptWordLabel] = []
        for label, repeated in _with_repeats(labels, ReceiptWordLabel):
            # A key repeated in this call: the first one wins, the others are skipped.
            (result.skipped_existing if repeated else pending).append(label)
        attempt = 0
        while pending:
            outcomes = self._run_puts(pending)
            retry: list[ReceiptWordLabel] = []
            fatal: list[tuple[ReceiptWordLabel, Exception]] = []
            last_error: Exception | None = None
            for label, (outcome, error) in zip(pending, outcomes, strict=True):
                if outcome == "added":
                    result.added.append(label)
                elif outcome == "existing":
                    result.skipped_existing.append(label)
                elif outcome == "retry":
                    retry.append(label)
                    last_error = error
                else:
                    fatal.append((label, error or RuntimeError("unknown error")))
            if fatal:
                label, error = fatal[0]
                raise LabelWriteError(
                    f"PutItem failed for {label.describe()}: {error}",
                    written=result.added,
                    not_written=[lbl for lbl, _ in fatal] + retry,
                    skipped_existing=result.skipped_existing,
                ) from error
            pending = retry
            if pending:
                attempt += 1
                if attempt >= self.max_attempts:
                    code = _error_code(last_error) if last_error is not None else None
                    state = "throttled" if code in THROTTLING_ERROR_CODES else "failing"
                    raise LabelWriteError(
                        f"PutItem still {state} ({code}) after {attempt} attempts",
                        written=result.added,
                        not_written=pending,
                        skipped_existing=result.skipped_existing,
                    ) from last_error
                self._backoff(attempt)
        return result

    def _run_puts(self, labels: list[ReceiptWordLabel]) -> list[tuple[str, Exception | None]]:
        return self._map(self._put_label, labels)

    def _map(self, call: Callable[[T], R], items: list[T]) -> list[R]:
        """``call`` on every item, up to ``concurrency`` at once; results in order (the first error is raised)."""
        if self.concurrency <= 1 or len(items) <= 1:
            return [call(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(call, items))
