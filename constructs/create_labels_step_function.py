"""CreateLabelsStepFunction: the labeling workflow, whose process Lambda proposes PENDING labels.

States, retries, failure tolerance and permissions: docs/state-machine.md.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam

from constructs.labeling_state_machine import LabelingStateMachine, Workflow, type_index_name
from receipt_dynamo import schema

CREATE_LABELS = Workflow(
    kind="create-labels",
    state_machine_suffix="sf",
    state_machine_comment="Labels every receipt word with an Ollama-hosted LLM; proposals are stored as PENDING labels",
    run_noun="labeling run",
    list_state="ListReceipts",
    list_comment="Write every receipt key to a JSON Lines manifest in S3, its key named after the execution",
    list_description="Writes every receipt key to a JSON Lines manifest in S3 for the Distributed Map",
    list_role_description="query receipt keys, write manifests",
    list_index=type_index_name(),
    list_query_sid="QueryReceiptKeysOnTheTypeIndex",
    has_receipts_comment="Preflight when a receipt needs labeling; skip the map when the manifest is empty",
    map_without_preflight=True,
    map_state="LabelReceipts",
    worker="process",
    worker_state="ProcessReceipt",
    worker_comment="Label one receipt; raises a typed error (never an error payload) so Retry can match it",
    worker_description="Labels the words of one receipt with an Ollama-hosted LLM (PENDING labels)",
    worker_role_id="ProcessReceiptRole",
    worker_role_description="read a receipt, write its PENDING labels, read the LLM keys",
    image_id="ProcessReceiptImage",
    image_dir="lambdas/process_receipt",
    no_receipts_comment="The table holds no receipt: nothing to label; the output has Summarize's keys, with zeros",
    worker_timeout_seconds=600,
    worker_memory_size=1536,
)


class CreateLabelsStepFunction(LabelingStateMachine):
    """The labeling pipeline: list every receipt, label each one's words (PENDING labels), summarize.

    Keyword arguments and attributes as :class:`LabelingStateMachine`'s (worker: 600 s, 1,536 MB).
    """

    workflow = CREATE_LABELS

    def _worker_table_statements(self, table: dynamodb.ITableV2) -> list[iam.PolicyStatement]:
        """Read a receipt, add its labels, set its completion marker."""
        return [
            iam.PolicyStatement(
                sid="MarkReceiptLabeled",
                # mark_receipt_labeled: one UpdateItem that SETs labeled_by / labeled_at on the Receipt
                # item. The condition keeps UpdateItem to those attributes (and the keys), so it can
                # never rewrite a label, a line or a word.
                actions=["dynamodb:UpdateItem"],
                resources=[table.table_arn],
                conditions={
                    "ForAllValues:StringEquals": {
                        "dynamodb:Attributes": [schema.PARTITION_KEY, schema.SORT_KEY, "labeled_by", "labeled_at"]
                    },
                    "StringEqualsIfExists": {"dynamodb:ReturnValues": ["NONE", "UPDATED_OLD", "UPDATED_NEW"]},
                },
            ),
            iam.PolicyStatement(
                sid="ReadReceiptsWriteNewLabels",
                # Query: get_receipt_details (one key's items); PutItem: add_receipt_word_labels writes
                # each label with attribute_not_exists(PK). No Update/Delete/Scan: it cannot overwrite.
                actions=["dynamodb:Query", "dynamodb:PutItem"],
                resources=[table.table_arn],
            ),
        ]
