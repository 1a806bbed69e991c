"""ListReceipts Lambda: write receipt keys to a JSON Lines manifest in S3 for the Distributed Map.

``RECEIPT_SELECTION``: ``all`` (default, CreateLabels: every receipt) or ``pending`` (ValidatePendingLabels:
every receipt with a PENDING label). Contract (environment, event, manifest format, result, errors)
and memory bounds: docs/handlers.md.
Imports only the standard library, boto3 and receipt_dynamo (the function's zip holds nothing else).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import boto3

from receipt_dynamo import PIPELINE_PROPOSER_PREFIX, DynamoClient

#: The event field that carries the Step Functions execution name (pass ``$$.Execution.Name``).
EXECUTION_NAME_FIELD = "execution_name"
LIMIT_FIELD = "limit"
MANIFEST_PREFIX = "manifests/"
MANIFEST_FILE_NAME = "receipts.jsonl"
#: The completion marker of a receipt this pipeline finished labeling starts with this
#: (receipt_label.PROPOSED_BY_PREFIX; this function's code asset does not hold receipt_label).
LABELING_PIPELINE_PREFIX = PIPELINE_PROPOSER_PREFIX
SELECTION_ENV = "RECEIPT_SELECTION"
SELECTIONS = ("all", "pending")
#: The JSON Lines media type (jsonlines.org). Step Functions reads the file by the map's InputType,
#: not by this header; it tells anyone downloading the object what it holds.
MANIFEST_CONTENT_TYPE = "application/jsonl"
#: Step Functions execution names are 1..80 characters. Names made of these characters are used
#: as they are; any other name is made safe for an S3 key and suffixed with a hash of the original.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")


class InvalidEventError(ValueError):
    """The event does not match the contract; the message names the offending field."""


logger = logging.getLogger("list_receipts")


def receipt_selection(environ: Mapping[str, str] | None = None) -> str:
    """``RECEIPT_SELECTION``: ``all`` (unset or empty) or ``pending``; RuntimeError names the variable otherwise."""
    raw = (os.environ if environ is None else environ).get(SELECTION_ENV, "").strip()
    if raw in ("", *SELECTIONS):
        return raw or "all"
    raise RuntimeError(f"environment variable {SELECTION_ENV} must be one of {', '.join(SELECTIONS)}, got {raw[:40]!r}")


#: Read at cold start: a wrong value fails the function's initialisation, naming the variable.
SELECTION = receipt_selection()

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
    """List the selected receipt keys into the run's manifest; return its counts and location (docs/handlers.md)."""
    try:
        limit, execution_name = parse_event(event)
    except InvalidEventError as error:
        logger.warning("invalid event", extra={"error_type": type(error).__name__, "error": str(error)})
        raise
    bucket = _required_env("MANIFEST_BUCKET")
    key = manifest_key(execution_name)
    to_label = 0

    def listed() -> Iterator[tuple[str, int]]:
        nonlocal to_label
        if SELECTION == "pending":  # each listed receipt has a PENDING label to judge
            for image_id, receipt_id in dynamo().iter_pending_receipts():
                to_label += 1
                yield image_id, receipt_id
            return
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
            "selection": SELECTION,
        },
    )
    return {"receipt_count": count, "receipts_to_label": to_label, "manifest_bucket": bucket, "manifest_key": key}
