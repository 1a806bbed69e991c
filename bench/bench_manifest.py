"""The ListReceipts manifest (JSON Lines): its size per receipt, the handler's memory and time, its limits.

Rows: bytes per receipt; peak traced memory (tracemalloc) at 100,000 and 1,000,000 receipts and their
ratio; wall time at 1,000,000; the receipts each bound allows and the item reader's documented limits.
DynamoDB and S3 are stood in for, moto being too slow at that size (docs/benchmarks.md#manifest-stand-ins).
"""

from __future__ import annotations

import os
import time
import tracemalloc
import uuid
from typing import Any
from unittest import mock

from bench import Row
from bench.bench_dynamo import item_size
from local_pipeline.template import LIST_HANDLER, load_handler

AREA = "manifest"

RECEIPTS = 1_000_000
SMALL_RECEIPTS = 100_000
MOTO_RECEIPTS = (2_000, 8_000)
#: ListReceipts runs with 256 MB (the construct); the runtime and boto3 take about 50 of it.
PEAK_MIB_TARGET = 64
#: More than 10x the receipts may cost at most this much more memory.
PEAK_RATIO_TARGET = 1.25
#: DynamoDB returns at most 1 MB of items per Query page (counted before the projection).
DYNAMO_PAGE_BYTES = 2**20

# ---- documented limits, with the page each is from ------------------------------------------------
ITEM_READER_DOC = "https://docs.aws.amazon.com/step-functions/latest/dg/input-output-itemreader.html"
ERRORS_DOC = "https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html"
S3_UPLOAD_DOC = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html"
LAMBDA_TMP_DOC = "https://docs.aws.amazon.com/lambda/latest/dg/API_EphemeralStorage.html"
#: "Step Functions supports 10 GB as the maximum size of an individual file in Amazon S3" (the same
#: note in the JSON file, JSON Lines file and CSV file sections).
ITEM_READER_MAX_FILE_BYTES = 10 * 10**9
#: "Step Functions supports reading an item of up to 8 MB from a text delimited file, JSON, or JSON
#: Lines file if you then apply the optional ItemSelector field to reduce the item's size."
ITEM_READER_MAX_ITEM_BYTES = 8 * 10**6
#: "The execution input used to start a child workflow execution can't exceed 256 KiB."
CHILD_INPUT_MAX_BYTES = 256 * 2**10
#: ReaderConfig.MaxItems: "You can specify a limit of up to 100,000,000 after which the Distributed
#: Map stops reading items."
MAX_ITEMS_LIMIT = 100_000_000
#: S3: one PUT uploads an object of up to 5 GB (larger ones need a multipart upload).
SINGLE_PUT_MAX_BYTES = 5 * 10**9
#: Lambda: /tmp is 512 MB unless the function configures more (up to 10,240 MB).
LAMBDA_TMP_DEFAULT_BYTES = 512 * 10**6


class PagedReceiptIndex:
    """Stands in for the DynamoDB client's ``query`` on GSITYPE: ``count`` receipts, ``page_size`` per page."""

    def __init__(self, count: int, page_size: int = 15_000) -> None:
        self.count, self.page_size, self.queries = count, page_size, 0

    @staticmethod
    def image_id(n: int) -> str:
        return str(uuid.UUID(int=n + 1))

    def query(self, **request: Any) -> dict[str, Any]:
        assert request["IndexName"] == "GSITYPE"
        self.queries += 1
        start = int(request.get("ExclusiveStartKey", {}).get("n", {}).get("N", "0"))
        end = min(start + self.page_size, self.count)
        items = [
            {"PK": {"S": f"IMAGE#{self.image_id(n)}"}, "SK": {"S": f"RECEIPT#{n % 3 + 1:05d}"}}
            for n in range(start, end)
        ]
        page: dict[str, Any] = {"Items": items}
        if end < self.count:
            page["LastEvaluatedKey"] = {"n": {"N": str(end)}}
        return page


class CountingS3:
    """Stands in for S3's ``put_object``: reads the body in 64 KiB chunks, counts bytes and lines."""

    def __init__(self) -> None:
        self.bytes = self.lines = 0
        self.first_line = b""
        self.content_type = ""

    def put_object(self, *, Body: Any, ContentType: str, **_: Any) -> dict[str, Any]:
        self.content_type = ContentType
        while chunk := Body.read(64 * 1024):
            if not self.bytes:
                self.first_line = chunk.split(b"\n", 1)[0]
            self.bytes += len(chunk)
            self.lines += chunk.count(b"\n")
        return {}


def stand_in_seconds(receipts: int, page_size: int) -> float:
    """Time the DynamoDB stand-in takes to build every page on its own (part of the handler's wall time)."""
    index = PagedReceiptIndex(receipts, page_size)
    started = time.perf_counter()
    request: dict[str, Any] = {"IndexName": "GSITYPE"}
    while True:
        page = index.query(**request)
        if "LastEvaluatedKey" not in page:
            return time.perf_counter() - started
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def receipt_item_bytes() -> int:
    """DynamoDB's size of one Receipt item as a first run finds it (not yet labeled): what a page is counted in."""
    from receipt_dynamo.entities import Receipt

    return item_size(Receipt(str(uuid.UUID(int=1)), 1).to_item())


def load_list_handler(name: str = "list_receipts_handler_bench") -> Any:
    module: Any = load_handler(LIST_HANDLER, name)
    module.logger.disabled = True
    return module


def _environ(**values: str) -> Any:
    """The Lambda environment for the block (restored afterwards)."""
    return mock.patch.dict(os.environ, values)


def run_list_handler(receipts: int, page_size: int, *, traced: bool) -> dict[str, Any]:
    """One ListReceipts invocation over the stand-ins: peak traced bytes (if ``traced``), seconds, sizes."""
    from receipt_dynamo import DynamoClient

    module = load_list_handler()
    index = PagedReceiptIndex(receipts, page_size)
    sink = CountingS3()
    module._dynamo = DynamoClient("receipts", client=index)
    module._s3_client = sink
    peak = 0
    with _environ(MANIFEST_BUCKET="bench-bucket"):
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        try:
            result = module.lambda_handler({"execution_name": "bench"}, None)
            seconds = time.perf_counter() - started
            if traced:
                _, peak = tracemalloc.get_traced_memory()
        finally:
            if traced:
                tracemalloc.stop()
    if not (result["receipt_count"] == sink.lines == receipts):
        raise RuntimeError(f"manifest has {sink.lines} lines for {result['receipt_count']} of {receipts} receipts")
    if not result["manifest_key"].endswith(".jsonl") or sink.content_type != "application/jsonl":
        raise RuntimeError(f"not a JSON Lines manifest: {result['manifest_key']} ({sink.content_type})")
    return {"peak": peak, "seconds": seconds, "bytes": sink.bytes, "queries": index.queries}


def moto_rates(receipts: int) -> tuple[float, float]:
    """(receipts loaded / s, receipts listed / s) with moto's DynamoDB and S3 and ``receipts`` in the table."""
    import boto3
    from moto import mock_aws

    from receipt_dynamo import DynamoClient
    from receipt_dynamo.entities import Receipt
    from receipt_dynamo.schema import create_table_kwargs

    with (
        mock_aws(),
        _environ(DYNAMODB_TABLE_NAME="bench-moto", MANIFEST_BUCKET="bench-moto", AWS_DEFAULT_REGION="us-east-1"),
    ):
        ddb = boto3.client("dynamodb")
        ddb.create_table(**create_table_kwargs("bench-moto"))
        boto3.client("s3").create_bucket(Bucket="bench-moto")
        items = [Receipt(PagedReceiptIndex.image_id(n), 1).to_item() for n in range(receipts)]
        started = time.perf_counter()
        for start in range(0, receipts, 25):
            batch = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            ddb.batch_write_item(RequestItems={"bench-moto": batch})
        loaded = time.perf_counter() - started
        module = load_list_handler("list_receipts_handler_bench_moto")
        module._dynamo = DynamoClient("bench-moto", client=ddb)
        module._s3_client = boto3.client("s3")
        started = time.perf_counter()
        result = module.lambda_handler({}, None)
        listed = time.perf_counter() - started
    if result["receipt_count"] != receipts:
        raise RuntimeError(f"moto listed {result['receipt_count']} of {receipts} receipts")
    return receipts / loaded, receipts / listed


SOURCES = {
    "sfn-itemreader": ITEM_READER_DOC,
    "sfn-errors": ERRORS_DOC,
    "s3-upload": S3_UPLOAD_DOC,
    "lambda-tmp": LAMBDA_TMP_DOC,
}


def rows() -> list[Row]:
    item_bytes = receipt_item_bytes()
    page_size = DYNAMO_PAGE_BYTES // item_bytes
    timed = run_list_handler(RECEIPTS, page_size, traced=False)
    stand_in = stand_in_seconds(RECEIPTS, page_size)
    small = run_list_handler(SMALL_RECEIPTS, page_size, traced=True)
    large = run_list_handler(RECEIPTS, page_size, traced=True)
    per_receipt = large["bytes"] / RECEIPTS
    ratio = large["peak"] / small["peak"]
    moto = {receipts: moto_rates(receipts) for receipts in MOTO_RECEIPTS}

    def receipts_within(limit_bytes: int) -> str:
        return f"{limit_bytes / per_receipt / 1e6:,.1f} million receipts"

    out = [
        Row(
            AREA,
            'bytes per receipt, JSON Lines: {"image_id":"<uuid>","receipt_id":N}\\n, N < 10',
            f"{per_receipt:.1f} B",
        ),
        Row(AREA, f"manifest size, {RECEIPTS:,} receipts", f"{large['bytes'] / 1e6:.1f} MB"),
    ]
    for receipts, run in ((SMALL_RECEIPTS, small), (RECEIPTS, large)):
        out.append(
            Row(
                AREA,
                f"ListReceipts peak traced memory, {receipts:,} receipts ({run['bytes'] / 1e6:.1f} MB manifest)",
                f"{run['peak'] / 2**20:.1f} MiB",
                f"< {PEAK_MIB_TARGET} MiB",
                run["peak"] / 2**20 < PEAK_MIB_TARGET,
            )
        )
    slowest_list = min(rate for _, rate in moto.values())
    load_rate = min(rate for rate, _ in moto.values())
    out += [
        Row(
            AREA,
            f"ListReceipts peak memory, {RECEIPTS:,} / {SMALL_RECEIPTS:,} receipts",
            f"{ratio:.2f}x",
            f"<= {PEAK_RATIO_TARGET}x (flat)",
            ratio <= PEAK_RATIO_TARGET,
        ),
        Row(
            AREA,
            f"ListReceipts wall time, {RECEIPTS:,} receipts (no tracemalloc, no network; "
            f"{stand_in:.2f} s of it is the stand-in building pages)",
            f"{timed['seconds']:.2f} s ({(timed['seconds'] - stand_in) / RECEIPTS * 1e6:.2f} us/receipt handler)",
        ),
        Row(
            AREA,
            f"DynamoDB stood in: {page_size:,} keys per Query page (1 MB / {item_bytes}-byte receipt item), "
            f"{large['queries']} pages",
            "stand-in",
        ),
    ]
    for receipts, (loaded, listed) in moto.items():
        out.append(
            Row(
                AREA,
                f"why stood in: moto, {receipts:,} receipts: BatchWriteItem load / ListReceipts (a full scan per page)",
                f"{loaded:,.0f} / {listed:,.0f} receipts/s",
            )
        )
    out += [
        Row(
            AREA,
            f"why stood in: moto for {RECEIPTS:,} receipts at the rates above (the list rate falls as the table grows)",
            f">= {RECEIPTS / load_rate / 60:.0f} min load + {RECEIPTS / slowest_list / 60:.0f} min list",
        ),
        Row(AREA, "bound: Lambda /tmp, 512 MB by default [lambda-tmp]", receipts_within(LAMBDA_TMP_DEFAULT_BYTES)),
        Row(AREA, "bound: one S3 PutObject, 5 GB [s3-upload]", receipts_within(SINGLE_PUT_MAX_BYTES)),
        Row(
            AREA,
            "bound: item reader file size, 10 GB, JSON and JSONL alike [sfn-itemreader]",
            receipts_within(ITEM_READER_MAX_FILE_BYTES),
        ),
        Row(AREA, "documented: ReaderConfig.MaxItems at most [sfn-itemreader]", f"{MAX_ITEMS_LIMIT:,} items"),
        Row(
            AREA,
            "documented: item read from a CSV/JSON/JSONL file, when ItemSelector shrinks it [sfn-itemreader]",
            f"{ITEM_READER_MAX_ITEM_BYTES / 1e6:.0f} MB",
        ),
        Row(
            AREA,
            f"documented: child execution input (a manifest line: {per_receipt:.0f} B) [sfn-itemreader]",
            f"{CHILD_INPUT_MAX_BYTES // 2**10} KiB",
        ),
        Row(AREA, "documented: a JSON file holds an array or an object; read whole? [sfn-itemreader]", "not stated"),
        Row(
            AREA,
            "documented: JSONL blank or non-JSON line [sfn-itemreader]; the error if any [sfn-errors]",
            "not stated",
        ),
    ]
    out += [Row(AREA, f"source [{tag}]", url) for tag, url in SOURCES.items()]
    return out
