"""Fixtures shared by the unit test modules (session fixtures: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    """A DynamoDB client and its active Stubber; every queued response must have been used."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()
