"""ReceiptTable: the single table (docs/data-layer.md), created or imported (with its indexes, so grants cover them)."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from constructs.receipt_table import ReceiptTable

pytestmark = pytest.mark.unit

INDEXES = {
    "GSI1": ("GSI1PK", "GSI1SK"),
    "GSI2": ("GSI2PK", "GSI2SK"),
    "GSI3": ("GSI3PK", "GSI3SK"),
    "GSITYPE": ("TYPE", None),
}


def table_template(**props: Any) -> Template:
    stack = cdk.Stack(cdk.App(), "TableTest")
    ReceiptTable(stack, "ReceiptTable", **props)
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def created() -> Template:
    template = table_template()
    template.resource_count_is("AWS::DynamoDB::GlobalTable", 1)
    return template


def test_keys_and_indexes_match_the_design(created: Template) -> None:
    created.has_resource_properties(
        "AWS::DynamoDB::GlobalTable",
        {
            "KeySchema": [{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [
                Match.object_equals(
                    {
                        "IndexName": name,
                        "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"}]
                        + ([{"AttributeName": sk, "KeyType": "RANGE"}] if sk else []),
                        "Projection": {"ProjectionType": "ALL"},
                    }
                )
                for name, (pk, sk) in INDEXES.items()
            ],
        },
    )
    (table,) = created.find_resources("AWS::DynamoDB::GlobalTable").values()
    assert all(d["AttributeType"] == "S" for d in table["Properties"]["AttributeDefinitions"])


def test_on_demand_pitr_streams_ttl_retained_and_protected(created: Template) -> None:
    created.has_resource(
        "AWS::DynamoDB::GlobalTable",
        {
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "StreamSpecification": Match.object_equals({"StreamViewType": "NEW_AND_OLD_IMAGES"}),
                "TimeToLiveSpecification": Match.object_equals({"AttributeName": "time_to_live", "Enabled": True}),
                "Replicas": [
                    {
                        "PointInTimeRecoverySpecification": Match.object_equals({"PointInTimeRecoveryEnabled": True}),
                        "DeletionProtectionEnabled": True,
                    }
                ],
            },
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )


def test_imported_table_creates_nothing_and_grants_cover_its_indexes() -> None:
    stack = cdk.Stack(cdk.App(), "Imported", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    table = ReceiptTable(stack, "ReceiptTable", existing_table_name="receipts-existing")
    role = iam.Role(stack, "Reader", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    table.table.grant_read_data(role)
    template = Template.from_stack(stack).to_json()
    assert [r["Type"] for r in template["Resources"].values() if r["Type"].startswith("AWS::DynamoDB")] == []
    assert table.imported is True
    assert table.table.table_name == "receipts-existing"
    (policy,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"]
    (statement,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if "dynamodb:Query" in s["Action"]]
    resources = sorted(render(r) for r in statement["Resource"])
    arn = "arn:${AWS::Partition}:dynamodb:eu-west-1:123456789012:table/receipts-existing"
    assert resources == [arn, f"{arn}/index/*"]


def render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if list(value) == ["Ref"]:
        return "${" + value["Ref"] + "}"
    return "".join(render(p) for p in value["Fn::Join"][1])


@pytest.mark.parametrize("name", ["", "   "])
def test_blank_existing_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="existing_table_name"):
        table_template(existing_table_name=name)
