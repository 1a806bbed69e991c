"""ValidatePendingLabelsStepFunction: judges this pipeline's PENDING labels into VALID, INVALID or NEEDS_REVIEW.

States, retries, failure tolerance and permissions: docs/state-machine.md.
"""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam

from constructs.labeling_state_machine import LabelingStateMachine, Workflow

#: The index of ``GSI3PK = VALIDATION_STATUS#PENDING`` (receipt_dynamo iter_pending_receipts).
PENDING_INDEX = "GSI3"

VALIDATE_LABELS = Workflow(
    kind="validate-labels",
    state_machine_suffix="validate-labels-sf",
    state_machine_comment="Judges the PENDING labels this pipeline proposed with an Ollama-hosted LLM: "
    "each becomes VALID, INVALID or NEEDS_REVIEW",
    run_noun="validation run",
    list_state="ListPendingReceipts",
    list_comment="Write the key of every receipt with a PENDING label to a JSON Lines manifest in S3, its key "
    "named after the execution",
    list_description="Writes the key of every receipt with a PENDING label to a JSON Lines manifest in S3 "
    "for the Distributed Map",
    list_role_description="query the PENDING labels' index, write manifests",
    list_index=PENDING_INDEX,
    list_query_sid="QueryPendingLabelsOnGsi3",
    list_environment={"RECEIPT_SELECTION": "pending"},
    has_receipts_comment="Preflight when a receipt has PENDING labels; skip the map when the manifest is empty",
    map_without_preflight=False,
    map_state="JudgeReceipts",
    worker="judge",
    worker_state="ValidateReceipt",
    worker_comment="Judge one receipt's PENDING labels; raises a typed error (never an error payload) so Retry "
    "can match it",
    worker_description="Judges the PENDING labels of one receipt with an Ollama-hosted LLM (VALID, INVALID, "
    "NEEDS_REVIEW)",
    worker_role_id="ValidateReceiptRole",
    worker_role_description="read a receipt and its labels, judge its PENDING labels, read the LLM keys",
    image_id="ValidateReceiptImage",
    image_dir="lambdas/validate_labels",
    no_receipts_comment="No PENDING label in the table: nothing to judge; the output has Summarize's keys, with zeros",
    worker_timeout_seconds=900,
    worker_memory_size=2048,
)


class ValidatePendingLabelsStepFunction(LabelingStateMachine):
    """The validation pipeline: list receipts with PENDING labels, judge each one's labels, summarize.

    Keyword arguments and attributes as :class:`LabelingStateMachine`'s (worker: 900 s, 2,048 MB).
    """

    workflow = VALIDATE_LABELS

    def _worker_table_statements(self, table: dynamodb.ITableV2) -> list[iam.PolicyStatement]:
        """Read a receipt and its labels; judge a label with one conditional UpdateItem."""
        return [
            iam.PolicyStatement(
                sid="ReadReceiptsAndLabels",
                # get_receipt_details (one key's items) and single items; the table only, no index.
                actions=["dynamodb:GetItem", "dynamodb:Query"],
                resources=[table.table_arn],
            ),
            iam.PolicyStatement(
                sid="JudgePendingLabels",
                # set_label_validations: one UpdateItem per label, conditioned on validation_status =
                # PENDING and this pipeline's proposer, so a person's decision is never overwritten.
                # No PutItem/DeleteItem/Scan.
                actions=["dynamodb:UpdateItem"],
                resources=[table.table_arn],
            ),
        ]
