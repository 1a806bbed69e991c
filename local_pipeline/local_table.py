"""``make local-table`` / ``python -m local_pipeline.local_table``: a local receipt table for ``receipt_dynamo load``.

Starts an in-memory moto server on loopback, creates the table as deployed, prints the environment
to export in another shell (docs/running-locally.md) and runs until Ctrl-C or SIGTERM.
Exit status: 0 stopped by Ctrl-C / SIGTERM; 2 the port is taken or the table cannot be created.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, TextIO

DEFAULT_TABLE = "receipts"
REGION = "us-east-1"
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def environment(endpoint: str) -> dict[str, str]:
    """The variables that point boto3 (and so ``receipt_dynamo load``) at the local endpoint."""
    return {"AWS_ENDPOINT_URL_DYNAMODB": endpoint, "AWS_DEFAULT_REGION": REGION, **LOCAL_CREDENTIALS}


def export_line(endpoint: str) -> str:
    return "export " + " ".join(f"{k}={v}" for k, v in environment(endpoint).items())


def create_table(endpoint: str, table: str) -> None:
    import boto3

    from receipt_dynamo import schema

    client: Any = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_table(**schema.create_table_kwargs(table))
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    client.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE}
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_pipeline.local_table", description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=DEFAULT_TABLE, help=f"table name (default: {DEFAULT_TABLE})")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, stop: threading.Event | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto answers for the account of the credentials it is given: keep the caller's out of it.
    os.environ.update({"AWS_DEFAULT_REGION": REGION, **LOCAL_CREDENTIALS})
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    try:
        server.start()
    except OSError as error:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {error}", file=sys.stderr)
        return 2
    stop = stop or threading.Event()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        try:
            create_table(endpoint, args.table)
        except Exception as error:
            print(f"error: cannot create table {args.table} at {endpoint}: {error}", file=sys.stderr)
            return 2
        print(f"DynamoDB-compatible endpoint {endpoint} (moto, in memory) with table {args.table}.", file=out)
        print("In another shell:", file=out)
        print(export_line(endpoint), file=out)
        print(f".venv/bin/python -m receipt_dynamo load tests/fixtures/*.json --table {args.table}", file=out)
        print("Ctrl-C stops it (the data is gone then).", file=out, flush=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print("stopped", file=out, flush=True)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
