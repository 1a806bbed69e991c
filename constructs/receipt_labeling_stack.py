"""ReceiptLabelingStack: the one deployable stack. Thin: it only wires constructs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, CfnOutput, RemovalPolicy, Stack, Tags, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions

from constructs import Construct
from constructs.create_labels_step_function import CreateLabelsStepFunction
from constructs.labeling_state_machine import MapLimits
from constructs.receipt_table import ReceiptTable
from constructs.validate_pending_labels_step_function import ValidatePendingLabelsStepFunction

EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+")


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """Typed settings for the stack; app.py builds them from CDK context."""

    stage: str = "dev"
    table_name: str | None = None
    ollama_model: str = "gpt-oss:120b"
    ollama_base_url: str = "https://ollama.com"
    ollama_api_key_secret_name: str | None = None
    langsmith_api_key_secret_name: str | None = None
    langsmith_tracing: bool = False
    max_concurrency: int = 3
    tolerated_failure_percentage: int = 10
    tolerated_failure_count: int = 100
    wait_for_build: bool = False
    alarm_email: str | None = None

    def __post_init__(self) -> None:
        if not self.stage or not self.stage.replace("-", "").isalnum():
            raise ValueError(f"stage must be letters, digits and '-', got {self.stage!r}")
        if len(self.name) > 36:
            # The longest derived names, "<name>-create-labels-process" and "<name>-validate-labels-judge",
            # must fit Lambda's 64 characters.
            raise ValueError(f"stage must be at most {36 - len('receipt-labeling-')} characters, got {self.stage!r}")
        MapLimits(self.max_concurrency, self.tolerated_failure_percentage, self.tolerated_failure_count)
        if self.alarm_email is not None and not EMAIL.fullmatch(self.alarm_email):
            raise ValueError(f"alarm_email must be one e-mail address, got {self.alarm_email!r}")
        # The Lambda sends the API key as a bearer token: never over plain HTTP.
        if not self.ollama_base_url.startswith("https://"):
            raise ValueError(f"ollama_base_url must be an https:// URL, got {self.ollama_base_url!r}")

    @property
    def name(self) -> str:
        """The prefix of every named resource: ``receipt-labeling-<stage>``."""
        return f"receipt-labeling-{self.stage}"

    @property
    def langsmith_enabled(self) -> bool:
        return self.langsmith_tracing or self.langsmith_api_key_secret_name is not None


class ReceiptLabelingStack(Stack):
    """The receipt table, the LLM key secrets and the two state machines (create, validate), with their outputs."""

    def __init__(self, scope: Construct, id_: str, *, settings: PipelineSettings, **kwargs: object) -> None:
        super().__init__(scope, id_, **kwargs)  # type: ignore[arg-type]
        self.settings = settings
        name = settings.name
        Tags.of(self).add("project", "receipt-labeling")
        Tags.of(self).add("stage", settings.stage)

        self.receipt_table = ReceiptTable(self, "ReceiptTable", existing_table_name=settings.table_name)

        self.ollama_api_key_secret = self._secret(
            "OllamaApiKey",
            existing_name=settings.ollama_api_key_secret_name,
            new_name=f"{name}/ollama-api-key",
            description="Ollama API key (sent as 'Authorization: Bearer'). Set its value with "
            "'aws secretsmanager put-secret-value' (see README, Deploying).",
        )
        self.langsmith_api_key_secret = (
            self._secret(
                "LangSmithApiKey",
                existing_name=settings.langsmith_api_key_secret_name,
                new_name=f"{name}/langsmith-api-key",
                description="LangSmith API key for tracing the labeling LLM calls. Set its value with "
                "'aws secretsmanager put-secret-value' (see README, Deploying).",
            )
            if settings.langsmith_enabled
            else None
        )

        self.alarm_topic = self._alarm_topic(name, settings.alarm_email)
        # The same table, secrets, model, map limits and alarm topic for both state machines.
        shared: dict[str, Any] = {
            "name": name,
            "table": self.receipt_table.table,
            "ollama_api_key_secret": self.ollama_api_key_secret,
            "ollama_model": settings.ollama_model,
            "ollama_base_url": settings.ollama_base_url,
            "langsmith_api_key_secret": self.langsmith_api_key_secret,
            "max_concurrency": settings.max_concurrency,
            "tolerated_failure_percentage": settings.tolerated_failure_percentage,
            "tolerated_failure_count": settings.tolerated_failure_count,
            "wait_for_build": settings.wait_for_build,
            "alarm_topic": self.alarm_topic,
        }
        self.create_labels = CreateLabelsStepFunction(self, "CreateLabels", **shared)
        self.validate_labels = ValidatePendingLabelsStepFunction(self, "ValidateLabels", **shared)
        labels, validate = self.create_labels, self.validate_labels
        outputs = {
            "StateMachineArn": (labels.state_machine.state_machine_arn, "Start executions here"),
            "ListFunctionName": (labels.list_function.function_name, "Writes the receipt manifest"),
            "ProcessFunctionName": (labels.worker_function.function_name, "Labels one receipt"),
            "RepositoryUri": (labels.worker_image.repository.repository_uri, "The process Lambda's images"),
            "PipelineName": (labels.worker_image.pipeline.pipeline_name, "Builds the process Lambda's image"),
            "TableName": (self.receipt_table.table.table_name, "The receipt table"),
            "ManifestBucketName": (labels.manifest_bucket.bucket_name, "Manifests and per-receipt results"),
            "OllamaApiKeySecretArn": (self.ollama_api_key_secret.secret_arn, "Holds the Ollama API key"),
            "AlarmTopicArn": (self.alarm_topic.topic_arn, "Failed image builds and labeling runs (subscribe here)"),
            "ValidateStateMachineArn": (validate.state_machine.state_machine_arn, "Start validation runs here"),
            "ValidateStateMachineName": (validate.state_machine.state_machine_name, "The validation state machine"),
            "ValidateListFunctionName": (validate.list_function.function_name, "Writes the PENDING receipts' manifest"),
            "ValidateJudgeFunctionName": (
                validate.worker_function.function_name,
                "Judges one receipt's PENDING labels",
            ),
            "ValidateRepositoryUri": (validate.worker_image.repository.repository_uri, "The judge Lambda's images"),
            "ValidatePipelineName": (validate.worker_image.pipeline.pipeline_name, "Builds the judge Lambda's image"),
            "ValidateManifestBucketName": (validate.manifest_bucket.bucket_name, "Validation manifests and results"),
        }
        if self.langsmith_api_key_secret is not None:
            outputs["LangSmithApiKeySecretArn"] = (self.langsmith_api_key_secret.secret_arn, "Holds the LangSmith key")
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)

    def _alarm_topic(self, name: str, email: str | None) -> sns.Topic:
        """The stack's one alarm channel: an SNS topic encrypted with its own KMS key, TLS only.

        EventBridge publishes to it (failed image builds, failed labeling runs), so the key is customer
        managed: the AWS managed ``alias/aws/sns`` key's policy cannot let ``events.amazonaws.com`` use it.
        """
        key = kms.Key(
            self,
            "AlarmTopicKey",
            description=f"Encrypts the {name} alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="EventBridgePublishesAlarms",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": self.account}},
            )
        )
        topic = sns.Topic(
            self,
            "AlarmTopic",
            topic_name=f"{name}-alarms",
            display_name=f"{name} alarms",
            master_key=key,
            enforce_ssl=True,
        )
        if email:
            topic.add_subscription(subscriptions.EmailSubscription(email))
        return topic

    def _secret(
        self, id_: str, *, existing_name: str | None, new_name: str, description: str
    ) -> secretsmanager.ISecret:
        """An existing secret imported by name, or a new one whose value is generated at deploy time.

        A new secret's template holds only a generation rule, never a value; the operator replaces
        the generated placeholder with the real key (README, Deploying).
        """
        if existing_name:
            return secretsmanager.Secret.from_secret_name_v2(self, id_, existing_name)
        secret = secretsmanager.Secret(self, id_, secret_name=new_name, description=description)
        Validations.of(secret).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SMG4",
                reason="A third-party API key (issued by Ollama / LangSmith) that AWS cannot rotate: a rotation "
                "Lambda could not mint a new key. It is rotated by issuing a new key and running "
                "put-secret-value; the Lambda re-reads it within an hour (Powertools cache max_age).",
            )
        )
        return secret
