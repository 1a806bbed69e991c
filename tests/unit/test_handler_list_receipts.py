"""ListReceipts handler: event parsing, the JSON Lines manifest and flat memory for 100,000 receipts (no AWS)."""

from __future__ import annotations

import json
import logging
import re
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.bench_manifest import PagedReceiptIndex  # the same DynamoDB stand-in the bench lists from
from receipt_dynamo import DynamoClient
from tests.helpers import LIST_HANDLER
from tests.helpers import load_handler as load_handler_file

pytestmark = pytest.mark.unit


def load_handler() -> ModuleType:
    return load_handler_file(LIST_HANDLER, "list_receipts_handler_unit")


handler = load_handler()


class DiskS3:
    """Receives put_object by streaming the body to a file, chunk by chunk, like a real upload."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.objects: dict[tuple[str, str], Path] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: Any, ContentType: str) -> dict[str, Any]:
        assert ContentType == "application/jsonl"
        target = self.directory / f"object-{len(self.objects)}.jsonl"
        with target.open("wb") as out:
            while chunk := Body.read(64 * 1024):
                out.write(chunk)
        self.objects[(Bucket, Key)] = target
        return {}

    def lines(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """The manifest read as the JSONL item reader reads it, checking the format on the way."""
        return jsonl_items(self.objects[(bucket, key)].read_bytes())


def jsonl_items(body: bytes) -> list[dict[str, Any]]:
    """Every line of ``body`` as one JSON object; fails unless it is strict JSON Lines as documented."""
    text = body.decode("utf-8")
    if not text:
        return []
    assert text.endswith("\n"), "the last line is not terminated"
    assert not text.lstrip().startswith("["), "a JSON array, not JSON Lines"
    items = []
    for line in text[:-1].split("\n"):
        assert line == line.strip() and line, f"blank or padded line {line!r}"
        assert ", " not in line and ": " not in line, f"not compact: {line!r}"
        item = json.loads(line)
        assert isinstance(item, dict) and set(item) == {"image_id", "receipt_id"}, line
        items.append(item)
    return items


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def wire(count: int) -> tuple[PagedReceiptIndex, DiskS3]:
        index = PagedReceiptIndex(count)
        s3 = DiskS3(tmp_path)
        monkeypatch.setenv("MANIFEST_BUCKET", "manifests-bucket")
        monkeypatch.setattr(handler, "_dynamo", DynamoClient("receipts", client=index))
        monkeypatch.setattr(handler, "_s3_client", s3)
        return index, s3

    return wire


def test_manifest_lists_every_receipt_key_one_json_object_per_line(wired: Any) -> None:
    index, s3 = wired(4)
    result = handler.lambda_handler({"execution_name": "nightly-2026-11-29"}, None)
    key = "manifests/nightly-2026-11-29/receipts.jsonl"
    assert result == {
        "receipt_count": 4,
        "receipts_to_label": 4,
        "manifest_bucket": "manifests-bucket",
        "manifest_key": key,
    }
    body = s3.objects[("manifests-bucket", key)].read_bytes()
    expected = [{"image_id": index.image_id(n), "receipt_id": n % 3 + 1} for n in range(4)]
    assert body == b"".join(
        b'{"image_id":"%s","receipt_id":%d}\n' % (e["image_id"].encode(), e["receipt_id"]) for e in expected
    )
    assert s3.lines("manifests-bucket", key) == expected


def test_every_line_is_one_object_and_the_count_matches_across_pages(wired: Any) -> None:
    index, s3 = wired(40_001)  # three pages of 15,000, the last one partial
    result = handler.lambda_handler({}, None)
    items = s3.lines("manifests-bucket", result["manifest_key"])
    assert result["receipt_count"] == len(items) == 40_001
    assert index.queries == 3
    assert items[15_000] == {"image_id": index.image_id(15_000), "receipt_id": 15_000 % 3 + 1}  # page boundary
    assert len({(i["image_id"], i["receipt_id"]) for i in items}) == 40_001


def test_empty_table_gives_an_empty_manifest(wired: Any) -> None:
    _, s3 = wired(0)
    result = handler.lambda_handler({}, None)
    assert result["receipt_count"] == 0
    assert s3.objects[("manifests-bucket", result["manifest_key"])].stat().st_size == 0  # no line, not "[]"


def test_limit_stops_reading_once_reached(wired: Any) -> None:
    index, s3 = wired(40_000)
    result = handler.lambda_handler({"limit": 10}, None)
    manifest = s3.lines("manifests-bucket", result["manifest_key"])
    assert result["receipt_count"] == 10
    assert [m["image_id"] for m in manifest] == [index.image_id(n) for n in range(10)]
    assert index.queries == 1  # the remaining pages are never requested


def test_a_limit_of_exactly_one_page_queries_no_further_page(wired: Any) -> None:
    index, s3 = wired(40_000)
    result = handler.lambda_handler({"limit": 15_000}, None)
    assert result["receipt_count"] == len(s3.lines("manifests-bucket", result["manifest_key"])) == 15_000
    assert index.queries == 1


def test_write_manifest_escapes_what_json_needs_escaping() -> None:
    import io

    out = io.BytesIO()
    count = handler.write_manifest([('odd "id"\n\u2028é', 7)], out)
    assert count == 1
    (line,) = out.getvalue().split(b"\n")[:-1]  # one line: the newline inside the id is escaped
    assert json.loads(line) == {"image_id": 'odd "id"\n\u2028é', "receipt_id": 7}
    assert out.getvalue().isascii()


def test_runs_without_an_execution_name_get_distinct_keys(wired: Any) -> None:
    wired(2)
    first = handler.lambda_handler({}, None)["manifest_key"]
    second = handler.lambda_handler({}, None)["manifest_key"]
    assert first != second
    assert first.startswith("manifests/") and first.endswith("/receipts.jsonl")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"execution_name": ""}, "execution_name"),
        ({"execution_name": "   "}, "execution_name"),
        ({"execution_name": "a" * 81}, "execution_name"),
        ({"execution_name": 7}, "execution_name"),
        (["not", "an", "object"], "event"),
    ],
)
def test_bad_events_raise_invalid_event_error_naming_the_field_and_write_nothing(
    wired: Any, event: Any, field: str
) -> None:
    index, s3 = wired(3)
    with pytest.raises(handler.InvalidEventError, match=f"^{field}:"):
        handler.lambda_handler(event, None)
    assert s3.objects == {}
    assert index.queries == 0


@pytest.mark.parametrize("name", ["../other-run", "run/1", "nightly 2026-11-29", "résumé+1", "."])
def test_an_execution_name_unsafe_for_a_key_gets_a_safe_distinct_folder(name: str) -> None:
    key = handler.manifest_key(name)
    folder = key.removeprefix("manifests/").removesuffix("/receipts.jsonl")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", folder), key
    assert key != handler.manifest_key(folder.rsplit("-", 1)[0])  # no collision with the readable part
    assert key == handler.manifest_key(name)  # stable for the same run


def test_missing_bucket_configuration_fails_loudly(wired: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wired(1)
    monkeypatch.delenv("MANIFEST_BUCKET")
    with pytest.raises(RuntimeError, match="MANIFEST_BUCKET"):
        handler.lambda_handler({}, None)


def _peak_bytes(wire: Any, count: int) -> tuple[int, int]:
    """Traced peak of one invocation over ``count`` receipts, and the manifest's size."""
    _, s3 = wire(count)
    tracemalloc.start()
    try:
        result = handler.lambda_handler({}, None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["receipt_count"] == count
    manifest = s3.objects[("manifests-bucket", result["manifest_key"])]
    return peak, manifest.stat().st_size


def test_memory_stays_flat_for_100k_receipts(wired: Any) -> None:
    small_peak, _ = _peak_bytes(wired, 30_000)  # two pages: the most ever held at once
    peak, manifest_bytes = _peak_bytes(wired, 100_000)
    # The manifest is several MB; the handler holds one DynamoDB page at a time, not the whole list:
    # more than three times the receipts must not cost noticeably more memory.
    assert manifest_bytes == 100_000 * 67  # {"image_id":"<36-char uuid>","receipt_id":N}\n
    assert peak < small_peak * 1.25
    assert peak < 64 * 2**20  # with the ~50 MB runtime + boto3 baseline this fits the default 128 MB


def lambda_json_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    """``records`` as Lambda's JSON log format writes them (the runtime's own formatter)."""
    from awslambdaric.lambda_runtime_log_utils import JsonFormatter

    formatter = JsonFormatter()
    return [json.loads(formatter.format(record)) for record in records]


def handler_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "list_receipts"]


def test_logs_through_the_list_receipts_logger_without_a_handler_of_its_own() -> None:
    assert handler.logger is logging.getLogger("list_receipts")
    assert handler.logger.handlers == [] and handler.logger.propagate


def test_the_manifest_log_line_is_one_json_object_with_the_runs_facts(
    wired: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="list_receipts")
    wired(3)
    handler.lambda_handler({"execution_name": "run-7", "limit": 5}, None)
    (line,) = lambda_json_lines(handler_records(caplog))
    assert line["level"] == "INFO" and line["message"] == "manifest written" and line["logger"] == "list_receipts"
    assert line["receipt_count"] == 3 and line["receipts_to_label"] == 3 and line["limit"] == 5
    assert line["manifest_bucket"] == "manifests-bucket"
    assert line["manifest_key"] == "manifests/run-7/receipts.jsonl"
    assert line["manifest_bytes"] > 0
    assert line["timestamp"].endswith("Z")


def test_an_invalid_event_is_logged_with_its_error(wired: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="list_receipts")
    wired(1)
    with pytest.raises(handler.InvalidEventError):
        handler.lambda_handler({"limit": 0}, None)
    (line,) = lambda_json_lines(handler_records(caplog))
    assert line["level"] == "WARNING" and line["message"] == "invalid event"
    assert line["error_type"] == "InvalidEventError" and line["error"].startswith("limit:")


# ---- RECEIPT_SELECTION: every receipt, or the receipts with a PENDING label -----------------------------


class PendingIndex:
    """GSI3 as DynamoDB pages it: ``labels`` PENDING label entries per receipt, ``page_size`` entries a page."""

    def __init__(self, receipts: list[tuple[str, int]], labels: int, page_size: int) -> None:
        self.entries = [
            {
                "PK": {"S": f"IMAGE#{image_id}"},
                "SK": {"S": f"RECEIPT#{receipt_id:05d}#LINE#00001#WORD#{w:05d}#LABEL#TAX"},
            }
            for image_id, receipt_id in receipts
            for w in range(1, labels + 1)
        ]
        self.page_size = page_size
        self.requests: list[dict[str, Any]] = []

    def query(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        start = int(request.get("ExclusiveStartKey", {}).get("n", {}).get("N", 0))
        page = self.entries[start : start + self.page_size]
        more = start + self.page_size < len(self.entries)
        return {"Items": page, **({"LastEvaluatedKey": {"n": {"N": str(start + self.page_size)}}} if more else {})}


def load_with_selection(monkeypatch: pytest.MonkeyPatch, value: str | None) -> ModuleType:
    if value is None:
        monkeypatch.delenv("RECEIPT_SELECTION", raising=False)
    else:
        monkeypatch.setenv("RECEIPT_SELECTION", value)
    return load_handler_file(LIST_HANDLER, "list_receipts_handler_selection")


def test_pending_selection_lists_each_receipt_with_a_pending_label_once_and_all_are_to_label(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pending = load_with_selection(monkeypatch, "pending")
    receipts = [("4ba71ab7-ac05-44a5-acc6-be1805fdf179", 1), ("4ba71ab7-ac05-44a5-acc6-be1805fdf179", 2)]
    receipts.append(("9d1c7a44-2b3e-4f5a-8c6d-7e8f9a0b1c2d", 1))
    index = PendingIndex(receipts, labels=3, page_size=4)  # a receipt's labels split across pages
    s3 = DiskS3(tmp_path)
    monkeypatch.setenv("MANIFEST_BUCKET", "manifests-bucket")
    monkeypatch.setattr(pending, "_dynamo", DynamoClient("receipts", client=index))
    monkeypatch.setattr(pending, "_s3_client", s3)

    result = pending.lambda_handler({"execution_name": "judge-1"}, None)

    assert result == {
        "receipt_count": 3,
        "receipts_to_label": 3,
        "manifest_bucket": "manifests-bucket",
        "manifest_key": "manifests/judge-1/receipts.jsonl",
    }
    assert s3.lines("manifests-bucket", result["manifest_key"]) == [
        {"image_id": image_id, "receipt_id": receipt_id} for image_id, receipt_id in receipts
    ]
    assert {r["IndexName"] for r in index.requests} == {"GSI3"} and len(index.requests) == 3


@pytest.mark.parametrize("value", [None, "", "all", "pending"])
def test_the_selection_defaults_to_all(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    selection = load_with_selection(monkeypatch, value).SELECTION
    assert selection == (value or "all")


@pytest.mark.parametrize("value", ["PENDING", "some", "none", "all,pending"])
def test_any_other_selection_fails_at_cold_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    with pytest.raises(RuntimeError, match=r"RECEIPT_SELECTION must be one of all, pending"):
        load_with_selection(monkeypatch, value)
