"""DynamoDB requests and capacity units to read a 300-word receipt and write 300 labels; the PENDING key's rate.

Requests are counted with a botocore ``before-call`` hook; capacity units are computed from item sizes
with DynamoDB's published rules (docs/benchmarks.md#dynamo-capacity-units). Results: docs/data-layer.md.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import uuid
from collections import Counter
from typing import Any

from bench import Row
from local_pipeline.template import REPO_ROOT

AREA = "dynamo"
TABLE = "bench-receipts"
TS = "2026-11-29T00:00:00+00:00"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
#: DynamoDB's documented per-partition write throughput (docs/data-layer.md cites the pages).
PARTITION_WCU_PER_SECOND = 1_000
#: Seconds one receipt's LLM call takes (stated, not measured: a hosted 120B model on a ~100-word receipt).
LLM_SECONDS_PER_RECEIPT = 20.0
FAST_LLM_SECONDS_PER_RECEIPT = 5.0
MAX_CONCURRENCIES = (3, 10, 40, 100)
DEFAULT_MAX_CONCURRENCY = 3  # the stack's default (constructs/receipt_labeling_stack.py)


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


def index_entries(item: dict[str, dict[str, Any]]) -> list[str]:
    """The global secondary indexes an item is written to: those whose key attributes it carries."""
    from receipt_dynamo.schema import GLOBAL_SECONDARY_INDEXES

    return [name for name, pk, sk in GLOBAL_SECONDARY_INDEXES if pk in item and (sk is None or sk in item)]


def indexes_of(item: dict[str, dict[str, Any]]) -> int:
    return len(index_entries(item))


def fixture_words() -> list[int]:
    """Words per receipt of the fixture documents (tests/fixtures/*.json)."""
    counts = []
    for path in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        counts.append(sum(len(line["words"]) for line in doc["lines"]))
    return counts


def pending_key_rows(wcu_per_label: int) -> list[Row]:
    """WCU/s on the GSI3 partition key VALIDATION_STATUS#PENDING at several max_concurrency values.

    Sustained: ``concurrency`` receipts in flight, each writing its labels once per LLM call, so
    ``concurrency * labels * wcu_per_label / llm_seconds``. Aligned: the worst second, every
    receipt in flight finishing its LLM call together (a map run starts its items at once) and
    writing all its labels within that second (8 puts at a time, ~10 ms each: ~0.3 s for 229 labels).
    """
    words = fixture_words()
    mean_labels, max_labels = statistics.fmean(words), max(words)
    out = [
        Row(
            AREA,
            "PENDING key: labels per receipt (fixture words, every word labeled) / LLM s per receipt",
            f"mean {mean_labels:.0f}, max {max_labels} / {LLM_SECONDS_PER_RECEIPT:g} s",
            f"{len(words)} fixtures",
        )
    ]
    for concurrency in MAX_CONCURRENCIES:
        sustained_mean = concurrency * mean_labels * wcu_per_label / LLM_SECONDS_PER_RECEIPT
        sustained_max = concurrency * max_labels * wcu_per_label / LLM_SECONDS_PER_RECEIPT
        aligned = concurrency * max_labels * wcu_per_label
        default = concurrency == DEFAULT_MAX_CONCURRENCY
        out.append(
            Row(
                AREA,
                f"PENDING key WCU/s at max_concurrency={concurrency}: sustained mean / max receipt; aligned second",
                f"{sustained_mean:,.0f} / {sustained_max:,.0f}; {aligned:,}",
                f"< {PARTITION_WCU_PER_SECOND:,} per partition" + (" (default: all three)" if default else ""),
                (max(sustained_max, aligned) < PARTITION_WCU_PER_SECOND) if default else None,
            )
        )

    def bound(labels: float, seconds: float) -> int:
        return math.ceil(PARTITION_WCU_PER_SECOND * seconds / (labels * wcu_per_label))

    out.append(
        Row(
            AREA,
            f"max_concurrency reaching {PARTITION_WCU_PER_SECOND:,} WCU/s sustained, mean / max receipt, "
            f"{LLM_SECONDS_PER_RECEIPT:g} s per receipt",
            f"{bound(mean_labels, LLM_SECONDS_PER_RECEIPT)} / {bound(max_labels, LLM_SECONDS_PER_RECEIPT)}",
            "> 40: keep one PENDING key",
            bound(max_labels, LLM_SECONDS_PER_RECEIPT) > 40,
        )
    )
    out.append(
        Row(
            AREA,
            f"... the same at {FAST_LLM_SECONDS_PER_RECEIPT:g} s per receipt (a faster model)",
            f"{bound(mean_labels, FAST_LLM_SECONDS_PER_RECEIPT)} / {bound(max_labels, FAST_LLM_SECONDS_PER_RECEIPT)}",
            "shard the key (docs/data-layer.md) before running this wide",
        )
    )
    out.append(
        Row(
            AREA,
            f"max_concurrency at which one aligned second reaches {PARTITION_WCU_PER_SECOND:,} WCU, mean / max receipt",
            f"{bound(mean_labels, 1)} / {bound(max_labels, 1)}",
            "informational: a throttled second is retried (botocore, then rounds)",
        )
    )
    return out


def receipt_doc(words: int) -> dict[str, Any]:
    """A 30-line receipt with ``words`` OCR words, geometry and confidence on every line and word."""
    per_line = words // 30
    lines = []
    for line_id in range(1, 31):
        texts = [f"ITEM{line_id:02d}{w:02d}" if w < per_line else f"{line_id}.{w:02d}" for w in range(1, per_line + 1)]
        box = {"x": 0.05, "y": round(1 - line_id / 32, 4), "width": 0.9, "height": 0.025}  # y grows upwards
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
        self.pages: list[tuple[bool, list[dict[str, Any]]]] = []
        self._consistent: list[bool] = []
        client.meta.events.register("before-call.dynamodb.*", self._before)
        client.meta.events.register("provide-client-params.dynamodb.Query", self._query_params)
        client.meta.events.register("after-call.dynamodb.Query", self._after_query)

    def _before(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _query_params(self, params: dict[str, Any], **_: Any) -> None:
        self._consistent.append(bool(params.get("ConsistentRead")))

    def _after_query(self, parsed: dict[str, Any], **_: Any) -> None:
        self.pages.append((self._consistent.pop(0), parsed.get("Items", [])))

    def reset(self) -> None:
        self.calls.clear()
        self.pages.clear()
        self._consistent.clear()

    def all_consistent(self) -> bool:
        return bool(self.pages) and all(consistent for consistent, _ in self.pages)

    def query_rcu(self) -> float:
        """1 RCU (strongly consistent) or 0.5 RCU (eventually consistent) per 4 KB of each page, rounded up."""
        return sum(
            (1.0 if consistent else 0.5) * math.ceil(sum(item_size(i) for i in page) / 4096)
            for consistent, page in self.pages
        )


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
                "read 300-word receipt: RCU (strongly consistent, the default; from item sizes)",
                f"{rcu:g}",
                "<= 24 (2x eventually consistent)",
                meter.all_consistent() and rcu <= 24,
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
                "write 300 new labels: WCU (table + GSI3; from item sizes)",
                str(put_wcu),
                "<= 600 (2 per label)",
                put_wcu <= 600,
            )
        )
        entries = {tuple(index_entries(lbl.to_item())) for lbl in labels}
        per_label = indexes_of(labels[0].to_item())
        out.append(
            Row(
                AREA,
                "index entries per new label (item keys vs schema.GLOBAL_SECONDARY_INDEXES)",
                f"{per_label} ({', '.join(next(iter(entries)))})",
                "1 (GSI3)",
                entries == {("GSI3",)},
            )
        )

        def index_count(index: str, condition: str, values: dict[str, Any], **kwargs: Any) -> int:
            pages = client.get_paginator("query").paginate(
                TableName=TABLE,
                IndexName=index,
                KeyConditionExpression=condition,
                ExpressionAttributeValues=values,
                **kwargs,
            )
            return sum(page["Count"] for page in pages)

        in_type_index = index_count(
            "GSITYPE", "#t = :t", {":t": {"S": "RECEIPT_WORD_LABEL"}}, ExpressionAttributeNames={"#t": "TYPE"}
        )
        in_pending = index_count(
            "GSI3",
            "GSI3PK = :s AND begins_with(GSI3SK, :img)",
            {":s": {"S": "VALIDATION_STATUS#PENDING"}, ":img": {"S": f"IMAGE#{image_id}#"}},
        )
        out.append(
            Row(
                AREA,
                "300 written labels found in GSITYPE / in GSI3 under VALIDATION_STATUS#PENDING (moto Query)",
                f"{in_type_index} / {in_pending}",
                "0 / 300",
                (in_type_index, in_pending) == (0, 300),
            )
        )
        wcu_per_index_entry = max(math.ceil(s / 1024) for s in sizes)

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
                f"not used: +{round(100 * (tx_wcu - put_wcu) / put_wcu)}% WCU",
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
                "read 300-word receipt with 300 labels: Query requests / RCU (strongly consistent)",
                f"{meter.calls['Query']} / {rcu:g}",
                "1 / <= 48",
                meter.calls["Query"] == 1 and meter.all_consistent() and rcu <= 48,
            )
        )
    out.extend(pending_key_rows(wcu_per_index_entry))
    return out
