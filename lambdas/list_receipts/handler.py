"""ListReceipts Lambda: write every receipt key to a JSON Lines manifest in S3 for the Distributed Map.

Contract (docs/handlers.md):

- environment: ``DYNAMODB_TABLE_NAME`` (the receipt table), ``MANIFEST_BUCKET`` (where manifests go).
- event: ``{}``; optional ``"limit"`` (int >= 1: at most that many receipts) and optional
  ``"execution_name"`` (the Step Functions execution name, ``$$.Execution.Name``), which names the
  manifest; without it the manifest key gets a random uuid.
- writes ``s3://$MANIFEST_BUCKET/manifests/<execution_name or uuid>/receipts.jsonl``, JSON Lines
  (``ContentType: application/jsonl``): UTF-8, one compact object per receipt, each line ended by
  ``\\n``, no enclosing array, nothing else::

      {"image_id":"3f2b6c1e-...","receipt_id":1}
      {"image_id":"3f2b6c1e-...","receipt_id":2}

  An empty table gives an empty (0-byte) object. The Distributed Map reads it with
  ``ReaderConfig.InputType = JSONL``: one child execution per line.
- returns ``{"receipt_count": int, "receipts_to_label": int, "manifest_bucket": str, "manifest_key": str}``;
  ``receipts_to_label`` counts the listed receipts whose completion marker does not name this
  pipeline (``labeled_by`` not starting with ``receipt_label:``), as the type index saw them. The
  state machine skips the LLM preflight when it is 0: a re-run over a labeled table asks no LLM.
- raises ``InvalidEventError`` for a malformed event; never returns an error payload. Nothing is
  uploaded unless every key was listed (no manifest over a partial list).

Memory stays flat in the number of receipts: keys stream from ``iter_receipt_keys`` (a paginated
Query; at most two pages of about 1 MB held at once) into a temporary file under /tmp, which is then sent
with one ``PutObject`` whose body botocore reads from the file in chunks. A receipt is about 67
bytes of manifest, so 1,000,000 receipts are about 67 MB (``make bench``). The bounds, lowest
first: the function's /tmp (512 MB by default: about 7.6 million receipts), then the 5 GB of a
single ``PutObject`` and the item reader's 10 GB per file (docs/state-machine.md). A multipart
upload would only lift the 5 GB limit, which /tmp reaches first, and would hold parts in memory.
The function's code asset holds only this file and receipt_dynamo, so it imports nothing but the
standard library, boto3 and receipt_dynamo.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import boto3

from receipt_dynamo import DynamoClient

#: The event field that carries the Step Functions execution name (pass ``$$.Execution.Name``).
EXECUTION_NAME_FIELD = "execution_name"
LIMIT_FIELD = "limit"
MANIFEST_PREFIX = "manifests/"
MANIFEST_FILE_NAME = "receipts.jsonl"
#: The completion marker of a receipt this pipeline finished labeling starts with this
#: (receipt_label.PROPOSED_BY_PREFIX; this function's code asset does not hold receipt_label).
LABELING_PIPELINE_PREFIX = "receipt_label:"
#: The JSON Lines media type (jsonlines.org). Step Functions reads the file by the map's InputType,
#: not by this header; it tells anyone downloading the object what it holds.
MANIFEST_CONTENT_TYPE = "application/jsonl"
#: Step Functions execution names are 1..80 characters. Names made of these characters are used
#: as they are; any other name is made safe for an S3 key and suffixed with a hash of the original.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


class InvalidEventError(ValueError):
    """The event does not match the contract; the message names the offending field."""


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: level, message, logger, time and any ``extra`` fields."""

    _STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _make_logger() -> logging.Logger:
    log = logging.getLogger("list_receipts")
    if not log.handlers:
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(JsonFormatter())
        log.addHandler(stream)
    log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    log.propagate = False  # the Lambda runtime's root handler would print it a second time
    return log


logger = _make_logger()

# Created on first use, once per container; tests replace them.
_s3_client: Any = None
_dynamo: DynamoClient | None = None


def s3_client() -> Any:
    global _s3_client
    if _s3_client is None:
        _s3_client = boto3.client("s3")
    return _s3_client


def dynamo() -> DynamoClient:
    global _dynamo
    if _dynamo is None:
        _dynamo = DynamoClient(_required_env("DYNAMODB_TABLE_NAME"))
    return _dynamo


def _required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"environment variable {name} is not set")
    return value


def parse_event(event: Any) -> tuple[int | None, str | None]:
    """Return (limit, execution_name) from the event, or raise InvalidEventError naming the field."""
    if event is None:
        return None, None
    if not isinstance(event, Mapping):
        raise InvalidEventError(f"event: expected a JSON object, got {type(event).__name__}")
    limit = event.get(LIMIT_FIELD)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidEventError(f"{LIMIT_FIELD}: expected an integer >= 1")
    name = event.get(EXECUTION_NAME_FIELD)
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 80 or not name.strip()):
        raise InvalidEventError(f"{EXECUTION_NAME_FIELD}: expected the execution name, a string of 1 to 80 characters")
    return limit, name


def run_folder(execution_name: str) -> str:
    """An S3-key-safe folder name for the run: the execution name itself when it is safe."""
    if _SAFE_NAME.fullmatch(execution_name):
        return execution_name
    readable = _UNSAFE_CHARACTERS.sub("_", execution_name).strip("._-")[:60] or "run"
    digest = hashlib.sha256(execution_name.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def manifest_key(execution_name: str | None) -> str:
    """The manifest's key, unique to the run: from the execution name, otherwise a random uuid."""
    folder = run_folder(execution_name) if execution_name is not None else str(uuid.uuid4())
    return f"{MANIFEST_PREFIX}{folder}/{MANIFEST_FILE_NAME}"


_LINE_ENCODER = json.JSONEncoder(separators=(",", ":"))


def write_manifest(keys: Iterable[tuple[str, int]], out: IO[bytes], *, limit: int | None = None) -> int:
    """Write ``keys`` to ``out`` as JSON Lines, one ``{"image_id", "receipt_id"}`` per line; return the count.

    At most ``limit`` keys are taken from ``keys`` (none beyond it, so no further page is queried).
    """
    count = 0
    for image_id, receipt_id in itertools.islice(keys, limit):
        line = _LINE_ENCODER.encode({"image_id": image_id, "receipt_id": receipt_id})
        out.write(line.encode() + b"\n")
        count += 1
    return count


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    limit, execution_name = parse_event(event)
    bucket = _required_env("MANIFEST_BUCKET")
    key = manifest_key(execution_name)
    to_label = 0

    def listed() -> Iterator[tuple[str, int]]:
        nonlocal to_label
        for image_id, receipt_id, labeled_by in dynamo().iter_receipt_markers():
            if not (labeled_by or "").startswith(LABELING_PIPELINE_PREFIX):
                to_label += 1
            yield image_id, receipt_id

    with tempfile.TemporaryFile(prefix="manifest-", suffix=".jsonl") as spool:
        count = write_manifest(listed(), spool, limit=limit)
        size = spool.tell()
        spool.seek(0)
        s3_client().put_object(Bucket=bucket, Key=key, Body=spool, ContentType=MANIFEST_CONTENT_TYPE)
    logger.info(
        "manifest written",
        extra={
            "receipt_count": count,
            "receipts_to_label": to_label,
            "manifest_bucket": bucket,
            "manifest_key": key,
            "manifest_bytes": size,
            "limit": limit,
            "aws_request_id": getattr(context, "aws_request_id", None),
        },
    )
    return {"receipt_count": count, "receipts_to_label": to_label, "manifest_bucket": bucket, "manifest_key": key}
