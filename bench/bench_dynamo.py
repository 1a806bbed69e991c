"""DynamoDB requests and capacity units to read a 300-word receipt and to write 300 labels (moto).

Requests are counted with a botocore ``before-call`` hook on the client DynamoClient uses.
Capacity units are computed from the items' sizes with DynamoDB's published rules (moto's
``ConsumedCapacity`` is a fixed placeholder, not a measurement):
- item size: attribute name bytes + value bytes (S: UTF-8 length; N: ~1 byte per 2 digits + 1;
  M: 3 bytes + 1 per element + the elements);
- Query, eventually consistent: 0.5 RCU per 4 KB of the items returned in each page, rounded up;
- PutItem: 1 WCU per KB of the item on the table plus 1 WCU per KB for each index the item is
  projected into (labels: GSI3 and GSITYPE); a failed condition is charged 1 WCU per KB, no index write;
- TransactWriteItems (the alternative, not used): 2 WCU per KB on the table, plus the index writes.
"""

from __future__ import annotations

import math
import os
import uuid
from collections import Counter
from typing import Any

from bench import Row

AREA = "dynamo"
TABLE = "bench-receipts"
TS = "2026-11-29T00:00:00+00:00"
INDEX_KEYS = {"GSI1": "GSI1PK", "GSI2": "GSI2PK", "GSI3": "GSI3PK", "GSITYPE": "TYPE"}


def attribute_size(value: dict[str, Any]) -> int:
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        digits = len(raw.lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + attribute_size(v) + 1 for k, v in raw.items())
    raise ValueError(f"unsupported attribute type {kind}")


def item_size(item: dict[str, dict[str, Any]]) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def indexes_of(item: dict[str, dict[str, Any]]) -> int:
    return sum(1 for attr in INDEX_KEYS.values() if attr in item)


def receipt_doc(words: int) -> dict[str, Any]:
    """A 30-line receipt with ``words`` OCR words, geometry and confidence on every line and word."""
    per_line = words // 30
    lines = []
    for line_id in range(1, 31):
        texts = [f"ITEM{line_id:02d}{w:02d}" if w < per_line else f"{line_id}.{w:02d}" for w in range(1, per_line + 1)]
        box = {"x": 0.05, "y": round(line_id / 32, 4), "width": 0.9, "height": 0.025}
        lines.append(
            {
                "line_id": line_id,
                "text": " ".join(texts),
                "bounding_box": box,
                "confidence": 0.973,
                "words": [
                    {
                        "word_id": w,
                        "text": t,
                        "bounding_box": {
                            "x": round(0.05 + 0.09 * (w - 1), 4),
                            "y": box["y"],
                            "width": 0.08,
                            "height": 0.025,
                        },
                        "confidence": 0.981,
                    }
                    for w, t in enumerate(texts, start=1)
                ],
            }
        )
    return {"image_id": str(uuid.uuid4()), "receipt_id": 1, "lines": lines}


class Meter:
    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.pages: list[list[dict[str, Any]]] = []
        client.meta.events.register("before-call.dynamodb.*", self._before)
        client.meta.events.register("after-call.dynamodb.Query", self._after_query)

    def _before(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _after_query(self, parsed: dict[str, Any], **_: Any) -> None:
        self.pages.append(parsed.get("Items", []))

    def reset(self) -> None:
        self.calls.clear()
        self.pages.clear()

    def query_rcu(self) -> float:
        return sum(0.5 * math.ceil(sum(item_size(i) for i in page) / 4096) for page in self.pages)


def rows() -> list[Row]:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    import boto3
    from moto import mock_aws

    from receipt_dynamo import DynamoClient, ReceiptWordLabel, ValidationStatus
    from receipt_dynamo.schema import create_table_kwargs

    out: list[Row] = []
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**create_table_kwargs(TABLE))
        dynamo = DynamoClient(TABLE, client=client)
        meter = Meter(client)

        details = dynamo.load_receipt_document(receipt_doc(300))
        assert len(details.words) == 300
        out.append(
            Row(
                AREA,
                "load 300-word receipt: BatchWriteItem requests",
                str(meter.calls["BatchWriteItem"]),
                "<= 15 (25 items each; receipt item last)",
                meter.calls["BatchWriteItem"] <= 15,
            )
        )

        image_id = details.receipt.image_id
        meter.reset()
        dynamo.get_receipt_details(image_id, 1)
        rcu = meter.query_rcu()
        out.append(
            Row(
                AREA,
                "read 300-word receipt: Query requests",
                str(meter.calls["Query"]),
                "1",
                meter.calls["Query"] == 1 and sum(meter.calls.values()) == 1,
            )
        )
        out.append(
            Row(
                AREA,
                "read 300-word receipt: RCU (eventually consistent; from item sizes)",
                f"{rcu:g}",
                "<= 12",
                rcu <= 12,
            )
        )

        labels = [
            ReceiptWordLabel(
                w.image_id,
                1,
                w.line_id,
                w.word_id,
                "PRODUCT_NAME",
                f"{w.text} is on an item line",
                TS,
                ValidationStatus.PENDING,
                "receipt_label:bench",
            )
            for w in details.words
        ]
        sizes = [item_size(label.to_item()) for label in labels]
        put_wcu = sum(
            math.ceil(s / 1024) * (1 + indexes_of(lbl.to_item())) for s, lbl in zip(sizes, labels, strict=True)
        )
        meter.reset()
        result = dynamo.add_receipt_word_labels(labels)
        assert len(result.added) == 300
        out.append(
            Row(
                AREA,
                "write 300 new labels: PutItem requests (conditional)",
                str(meter.calls["PutItem"]),
                "300 (1 per label)",
                meter.calls["PutItem"] == 300 and sum(meter.calls.values()) == 300,
            )
        )
        out.append(
            Row(
                AREA,
                "write 300 new labels: WCU (table + GSI3 + GSITYPE; from item sizes)",
                str(put_wcu),
                "<= 900 (3 per label)",
                put_wcu <= 900,
            )
        )

        meter.reset()
        again = dynamo.add_receipt_word_labels(labels)
        assert len(again.skipped_existing) == 300
        fail_wcu = sum(math.ceil(s / 1024) for s in sizes)
        out.append(
            Row(
                AREA,
                "re-propose 300 existing labels: requests / WCU (condition failed)",
                f"{meter.calls['PutItem']} / {fail_wcu}",
                "300 / <= 300",
                fail_wcu <= 300,
            )
        )

        tx_requests = math.ceil(len(labels) / 100)
        tx_wcu = sum(
            math.ceil(s / 1024) * (2 + indexes_of(lbl.to_item())) for s, lbl in zip(sizes, labels, strict=True)
        )
        out.append(
            Row(
                AREA,
                "alternative TransactWriteItems, 300 new labels: requests / WCU (computed)",
                f"{tx_requests} / {tx_wcu}",
                "not used: +33% WCU",
            )
        )
        out.append(
            Row(AREA, "label item size (bytes, max of 300)", str(max(sizes)), "<= 1024 (1 WCU)", max(sizes) <= 1024)
        )

        meter.reset()
        dynamo.get_receipt_details(image_id, 1)
        rcu = meter.query_rcu()
        out.append(
            Row(
                AREA,
                "read 300-word receipt with 300 labels: Query requests / RCU",
                f"{meter.calls['Query']} / {rcu:g}",
                "1 / <= 24",
                meter.calls["Query"] == 1 and rcu <= 24,
            )
        )
    return out
