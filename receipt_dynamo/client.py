"""DynamoClient: reads receipts and writes labels in the single table (boto3 low-level client, stdlib).

Label write pattern (``add_receipt_word_labels``)
-------------------------------------------------
``TransactWriteItems`` with up to 100 ``Put`` actions per request, each with
``ConditionExpression = attribute_not_exists(PK)``: a label whose key exists is never overwritten,
whoever created it and whenever (the condition is evaluated by DynamoDB at write time, so a label
another writer created after our read is still protected). When a transaction is cancelled, the
``CancellationReasons`` (one per action, in order) say which actions failed their condition; those
labels are reported in ``skipped_existing`` and the rest are resubmitted at once. Throttling
(request errors or ``ThrottlingError`` / ``ProvisionedThroughputExceeded`` / ``TransactionConflict``
reasons) is retried with exponential backoff and full jitter, at most ``max_attempts`` times per
chunk; then :class:`LabelWriteError` names the labels written and not written. Retries of an
unchanged chunk reuse its ``ClientRequestToken``, so a transaction that committed but whose reply was
lost is not applied twice (and not misreported as "existing").

Cost (DynamoDB pricing rules; a label item is < 1 KB; it is projected into GSI3 and GSITYPE):
- requests: ceil(n / 100) ``TransactWriteItems`` when no key exists; each chunk containing existing
  keys costs one extra request per cancellation round (usually one: all failing conditions are
  reported together).
- write units: transactional writes cost 2 WCU per KB on the table, plus 1 WCU per KB for each of
  the 2 index entries (GSI3, GSITYPE): 4 WCU per new label. A cancelled transaction is also
  charged (2 WCU per action), so a chunk with existing keys costs about twice as much.
  300 new labels: 3 requests, ~1,200 WCU; per-item conditional ``PutItem`` would be 300 requests
  and ~900 WCU (1 + 2 per label). We pay ~33 % more WCU for 100x fewer round trips in a Lambda
  that otherwise waits on them serially; see ``bench/bench_dynamo.py`` for the measured counts.

Reads: ``get_receipt_details`` is one paginated Query (``PK = IMAGE#id AND begins_with(SK,
RECEIPT#00001)``); eventually consistent by default: 0.5 RCU per 4 KB of items per page.
``iter_receipt_keys`` queries the GSITYPE index (``TYPE = RECEIPT``) projecting only PK and SK.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from receipt_dynamo import keys
from receipt_dynamo.document import parse_receipt_document
from receipt_dynamo.entities import (
    Item,
    Receipt,
    ReceiptDetails,
    ReceiptLine,
    ReceiptWord,
    ReceiptWordLabel,
)
from receipt_dynamo.errors import ItemWriteError, LabelWriteError, ReceiptNotFoundError

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
#: per-action cancellation reasons worth retrying
RETRYABLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"})
TRANSACT_MAX_ITEMS = 100
BATCH_WRITE_MAX_ITEMS = 25


@dataclass
class LabelWriteResult:
    added: list[ReceiptWordLabel] = field(default_factory=list)
    skipped_existing: list[ReceiptWordLabel] = field(default_factory=list)


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _key_tuple(key: Item) -> tuple[str, str]:
    return (key["PK"]["S"], key["SK"]["S"])


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
        kwargs: dict[str, Any] = {
            "IndexName": keys.GSI_TYPE_INDEX,
            "KeyConditionExpression": "#t = :t",
            "ExpressionAttributeNames": {"#t": "TYPE", "#pk": "PK", "#sk": "SK"},
            "ExpressionAttributeValues": {":t": {"S": keys.TYPE_RECEIPT}},
            "ProjectionExpression": "#pk, #sk",
        }
        if page_size is not None:
            kwargs["Limit"] = page_size
        for item in self._query(**kwargs):
            receipt_id, line_id, _, _ = keys.parse_sk(item["SK"]["S"])
            if line_id is None:
                yield keys.parse_pk(item["PK"]["S"]), receipt_id

    def get_receipt_details(self, image_id: str, receipt_id: int, *, consistent_read: bool = False) -> ReceiptDetails:
        """The receipt with its lines, words and labels (sorted by ids), from one paginated Query.

        Raises :class:`ReceiptNotFoundError` when the Receipt item is absent (even if stray children exist).
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
        for item in items:
            item_type = item.get("TYPE", {}).get("S")
            if item_type == keys.TYPE_RECEIPT:
                receipt = Receipt.from_item(item)
            elif item_type == keys.TYPE_RECEIPT_LINE:
                lines.append(ReceiptLine.from_item(item))
            elif item_type == keys.TYPE_RECEIPT_WORD:
                words.append(ReceiptWord.from_item(item))
            elif item_type == keys.TYPE_RECEIPT_WORD_LABEL:
                labels.append(ReceiptWordLabel.from_item(item))
            # other item types under the receipt prefix belong to other features: ignored
        if receipt is None or receipt != probe:
            raise ReceiptNotFoundError(image_id, receipt_id)
        return ReceiptDetails(receipt=receipt, lines=lines, words=words, labels=labels)

    # --- receipt, lines, words (BatchWriteItem: plain puts, idempotent re-load) -----------------------

    def _batch_put(self, items: Sequence[Item]) -> None:
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
                        raise
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
        """
        details = parse_receipt_document(doc)
        self._batch_put([line.to_item() for line in details.lines] + [word.to_item() for word in details.words])
        self._batch_put([details.receipt.to_item()])
        return details

    # --- labels (conditional TransactWriteItems) ------------------------------------------------------

    def add_receipt_word_labels(self, labels: Iterable[ReceiptWordLabel]) -> LabelWriteResult:
        """Create labels whose key does not exist; never overwrite. See the module docstring for the pattern.

        A label whose key already exists (in the table, or earlier in ``labels``) is returned in
        ``skipped_existing``. Raises :class:`LabelWriteError` after ``max_attempts`` throttled tries of a chunk.
        """
        result = LabelWriteResult()
        unique: list[ReceiptWordLabel] = []
        seen: set[tuple[str, str]] = set()
        for label in labels:
            if not isinstance(label, ReceiptWordLabel):
                raise TypeError(f"expected ReceiptWordLabel, got {type(label).__name__}")
            key = _key_tuple(label.key)
            if key in seen:
                result.skipped_existing.append(label)  # the same key earlier in this call wins
            else:
                seen.add(key)
                unique.append(label)
        for start in range(0, len(unique), TRANSACT_MAX_ITEMS):
            chunk = unique[start : start + TRANSACT_MAX_ITEMS]
            try:
                self._write_label_chunk(chunk, result)
            except LabelWriteError as exc:
                raise LabelWriteError(
                    "labels not written after retries",
                    written=result.added,
                    not_written=[*exc.not_written, *unique[start + TRANSACT_MAX_ITEMS :]],
                    skipped_existing=result.skipped_existing,
                ) from exc.__cause__
        return result

    def _write_label_chunk(self, chunk: list[ReceiptWordLabel], result: LabelWriteResult) -> None:
        pending = list(chunk)
        token = str(uuid.uuid4())
        attempt = 0
        last_problem = ""
        while pending:
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table_name,
                                "Item": label.to_item(),
                                "ConditionExpression": "attribute_not_exists(#pk)",
                                "ExpressionAttributeNames": {"#pk": "PK"},
                            }
                        }
                        for label in pending
                    ],
                    ClientRequestToken=token,
                )
                result.added.extend(pending)
                return
            except Exception as exc:
                code = _error_code(exc)
                if code == "TransactionCanceledException":
                    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
                    if len(reasons) != len(pending):
                        raise LabelWriteError(
                            f"TransactWriteItems cancelled without per-item reasons: {exc}",
                            written=[],
                            not_written=pending,
                        ) from exc
                    codes = [str(r.get("Code", "None")) for r in reasons]
                    unexpected = sorted({c for c in codes} - {"None", "ConditionalCheckFailed", *RETRYABLE_REASONS})
                    if unexpected:
                        raise LabelWriteError(
                            f"TransactWriteItems cancelled: {', '.join(unexpected)}", written=[], not_written=pending
                        ) from exc
                    existing = [label for label, c in zip(pending, codes, strict=True) if c == "ConditionalCheckFailed"]
                    result.skipped_existing.extend(existing)
                    pending = [label for label, c in zip(pending, codes, strict=True) if c != "ConditionalCheckFailed"]
                    token = str(uuid.uuid4())  # a different request: a new idempotency token
                    if existing:
                        continue  # progress made; resubmit the rest at once
                    last_problem = ", ".join(sorted(set(codes) - {"None"}))
                elif code in RETRYABLE_ERROR_CODES:
                    last_problem = code or ""  # same request again: keep the token (idempotent)
                else:
                    raise LabelWriteError(f"TransactWriteItems failed: {exc}", written=[], not_written=pending) from exc
            attempt += 1
            if attempt >= self.max_attempts:
                raise LabelWriteError(
                    f"TransactWriteItems still failing ({last_problem}) after {attempt} attempts",
                    written=[],
                    not_written=pending,
                )
            self._backoff(attempt)
