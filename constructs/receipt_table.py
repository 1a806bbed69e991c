"""ReceiptTable: the single DynamoDB table (docs/data-layer.md), built from receipt_dynamo.schema."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb

from constructs import Construct
from receipt_dynamo import schema


class ReceiptTable(Construct):
    """The receipt table: on-demand, PITR, streams NEW_AND_OLD_IMAGES, TTL, retained.

    Pass ``existing_table_name`` to import a table that already exists instead of creating one;
    its indexes are declared so that grants cover them.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        table_name: str | None = None,
        existing_table_name: str | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, id_)
        index_names = [name for name, _, _ in schema.GLOBAL_SECONDARY_INDEXES]
        if existing_table_name is not None:
            if not existing_table_name.strip():
                raise ValueError("existing_table_name must be a non-empty table name")
            self.table: dynamodb.ITableV2 = dynamodb.TableV2.from_table_attributes(
                self, "Imported", table_name=existing_table_name, global_indexes=index_names
            )
            self.imported = True
            return
        string = dynamodb.AttributeType.STRING
        table = dynamodb.TableV2(
            self,
            "Table",
            table_name=table_name,
            partition_key=dynamodb.Attribute(name=schema.PARTITION_KEY, type=string),
            sort_key=dynamodb.Attribute(name=schema.SORT_KEY, type=string),
            billing=dynamodb.Billing.on_demand(),
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            dynamo_stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            time_to_live_attribute=schema.TTL_ATTRIBUTE,
            deletion_protection=removal_policy == RemovalPolicy.RETAIN,
            removal_policy=removal_policy,
            global_secondary_indexes=[
                dynamodb.GlobalSecondaryIndexPropsV2(
                    index_name=name,
                    partition_key=dynamodb.Attribute(name=pk, type=string),
                    sort_key=dynamodb.Attribute(name=sk, type=string) if sk else None,
                    projection_type=dynamodb.ProjectionType.ALL,
                )
                for name, pk, sk in schema.GLOBAL_SECONDARY_INDEXES
            ],
        )
        self.table = table
        self.imported = False
