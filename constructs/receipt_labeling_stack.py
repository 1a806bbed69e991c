"""ReceiptLabelingStack: the one deployable stack. Thin: it only wires constructs."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Stack, Tags
from constructs import Construct

from constructs.receipt_table import ReceiptTable


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """Typed settings for the stack; app.py builds them from CDK context."""

    stage: str = "dev"
    table_name: str | None = None
    ollama_model: str = "gpt-oss:120b"
    ollama_base_url: str = "https://ollama.com"
    ollama_api_key_secret_name: str | None = None
    langsmith_api_key_secret_name: str | None = None
    max_concurrency: int = 3
    tolerated_failure_percentage: int = 10
    wait_for_build: bool = False

    def __post_init__(self) -> None:
        if not self.stage or not self.stage.replace("-", "").isalnum():
            raise ValueError(f"stage must be letters, digits and '-', got {self.stage!r}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if not 0 <= self.tolerated_failure_percentage <= 100:
            raise ValueError(
                f"tolerated_failure_percentage must be within 0..100, got {self.tolerated_failure_percentage}"
            )

    @property
    def name(self) -> str:
        """The prefix of every named resource: ``receipt-labeling-<stage>``."""
        return f"receipt-labeling-{self.stage}"


class ReceiptLabelingStack(Stack):
    def __init__(self, scope: Construct, id_: str, *, settings: PipelineSettings, **kwargs: object) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        self.settings = settings
        Tags.of(self).add("project", "receipt-labeling")
        Tags.of(self).add("stage", settings.stage)

        self.receipt_table = ReceiptTable(self, "ReceiptTable", existing_table_name=settings.table_name)
        CfnOutput(self, "TableName", value=self.receipt_table.table.table_name)
