"""The receipt table's key schema: the single source for the CDK table and for tests.

Plain data (no boto3, no aws_cdk import) so the CDK app, the Lambda code and moto-based tests can
all read it. Shapes follow the DynamoDB ``CreateTable`` API.
"""

from __future__ import annotations

from typing import Any, Final

PARTITION_KEY: Final = "PK"
SORT_KEY: Final = "SK"
TYPE_ATTRIBUTE: Final = "TYPE"
TTL_ATTRIBUTE: Final = "time_to_live"

#: (index name, partition key attribute, sort key attribute or None)
GLOBAL_SECONDARY_INDEXES: Final[tuple[tuple[str, str, str | None], ...]] = (
    ("GSI1", "GSI1PK", "GSI1SK"),
    ("GSI2", "GSI2PK", "GSI2SK"),
    ("GSI3", "GSI3PK", "GSI3SK"),
    ("GSITYPE", TYPE_ATTRIBUTE, None),
)


def attribute_definitions() -> list[dict[str, str]]:
    """Every key attribute of the table and its indexes, all strings."""
    names: list[str] = [PARTITION_KEY, SORT_KEY]
    for _, pk, sk in GLOBAL_SECONDARY_INDEXES:
        for name in (pk, sk):
            if name is not None and name not in names:
                names.append(name)
    return [{"AttributeName": n, "AttributeType": "S"} for n in names]


def key_schema(partition_key: str = PARTITION_KEY, sort_key: str | None = SORT_KEY) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    if sort_key is not None:
        schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    return schema


def create_table_kwargs(table_name: str) -> dict[str, Any]:
    """Arguments for ``client.create_table`` that build the table as deployed (on-demand)."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": attribute_definitions(),
        "KeySchema": key_schema(),
        "GlobalSecondaryIndexes": [
            {"IndexName": name, "KeySchema": key_schema(pk, sk), "Projection": {"ProjectionType": "ALL"}}
            for name, pk, sk in GLOBAL_SECONDARY_INDEXES
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }
