"""``python -m receipt_dynamo load FILE.json... --table NAME [--endpoint-url URL] [--create-table]``.

Every file is read and validated before anything is written; errors name the file and the JSON
path of the bad field. tqdm draws the progress bar when installed (it is a dev dependency only:
the Lambda never imports this module), otherwise a plain ``loaded i/n`` counter is printed.

Exit status: 0 loaded; 1 DynamoDB refused a write; 2 invalid files, or no AWS region or credentials
(one line says what to set: ``AWS_DEFAULT_REGION`` or ``--region``, ``AWS_PROFILE`` or the access key
variables; for a local table, ``make local-table`` prints the variables to export).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from receipt_dynamo import schema
from receipt_dynamo.client import DynamoClient
from receipt_dynamo.document import parse_receipt_document
from receipt_dynamo.errors import DocumentValidationError, ReceiptDynamoError

NO_REGION = (
    "error: no AWS region: set AWS_DEFAULT_REGION (e.g. us-east-1) or pass --region; "
    "for a local table run `make local-table` and export the variables it prints"
)
NO_CREDENTIALS = (
    "error: no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); "
    "for a local table run `make local-table` and export the variables it prints"
)


def _progress(items: Sequence[Any], *, stream: TextIO, desc: str) -> Iterable[Any]:
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, stream=stream, desc=desc)
    return tqdm(items, desc=desc, unit="file", file=stream, disable=len(items) < 2)


def _plain_progress(items: Sequence[Any], *, stream: TextIO, desc: str) -> Iterator[Any]:
    total = len(items)
    for i, item in enumerate(items, start=1):
        yield item
        print(f"{desc}: {i}/{total}", file=stream, flush=True)


def read_documents(paths: Sequence[str]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Read and validate every file. Returns (documents, error messages naming file and JSON path)."""
    docs: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            errors.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            errors.append(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
            continue
        try:
            parse_receipt_document(doc)
        except DocumentValidationError as exc:
            errors.append(f"{path}: {exc.path or '$'}: {exc.problem}")
            continue
        docs.append((path, doc))
    return docs, errors


def create_table(client: Any, table_name: str, *, out: TextIO) -> None:
    """Create the table from ``schema`` unless it exists, and wait until it is active."""
    try:
        client.create_table(**schema.create_table_kwargs(table_name))
        created = True
        print(f"creating table {table_name}", file=out)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code != "ResourceInUseException":
            raise
        created = False
        print(f"table {table_name} exists", file=out)
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if created:  # as deployed: TTL on time_to_live
        client.update_time_to_live(
            TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE}
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m receipt_dynamo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="validate receipt documents and write receipt, lines and words")
    load.add_argument("files", nargs="+", metavar="FILE.json")
    load.add_argument("--table", required=True, help="DynamoDB table name")
    load.add_argument("--endpoint-url", help="DynamoDB endpoint, e.g. http://localhost:8000 for a local server")
    load.add_argument("--region", help="AWS region (default: from the environment / profile)")
    load.add_argument("--create-table", action="store_true", help="create the table from receipt_dynamo.schema")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    client_factory: Callable[..., Any] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    docs, errors = read_documents(args.files)
    if errors:
        for message in errors:
            print(f"error: {message}", file=err)
        print(f"nothing written: {len(errors)} of {len(args.files)} file(s) invalid", file=err)
        return 2
    if client_factory is None:
        import boto3

        client_factory = boto3.client
    kwargs: dict[str, Any] = {}
    if args.endpoint_url:
        kwargs["endpoint_url"] = args.endpoint_url
    if args.region:
        kwargs["region_name"] = args.region
    try:
        client = client_factory("dynamodb", **kwargs)
    except Exception as exc:
        if type(exc).__name__ != "NoRegionError":
            raise
        print(NO_REGION, file=err)
        return 2
    try:
        if args.create_table:
            create_table(client, args.table, out=out)
        dynamo = DynamoClient(args.table, client=client)
        words = 0
        for path, doc in _progress(docs, stream=err, desc="loading"):
            try:
                words += len(dynamo.load_receipt_document(doc).words)
            except ReceiptDynamoError as exc:
                print(f"error: {path}: {exc}", file=err)
                return 1
    except Exception as exc:
        if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            print(NO_CREDENTIALS, file=err)
            return 2
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code is None:
            raise
        print(f"error: DynamoDB {code}: {exc}", file=err)
        return 1
    print(f"loaded {len(docs)} receipt(s), {words} word(s) into {args.table}", file=out)
    return 0
