"""CodeBuildDockerImage: a container-image Lambda whose image CodeBuild builds at deploy time.

No local Docker. See docs/image-build.md for how a deploy proceeds, the two modes
(``wait_for_build``), IAM, and what each deployed resource is for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import (
    Acknowledgment,
    ArnFormat,
    CfnElement,
    CustomResource,
    Duration,
    RemovalPolicy,
    Size,
    Stack,
    Tags,
    Token,
    Validations,
)
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr

from constructs import Construct, IConstruct
from constructs.docker_build_context import BuildContext, resolve_context, stage_context
from constructs.docker_image_buildspec import CACHE_TAG, build_spec_object

SOURCE_RESOURCE_TYPE = "Custom::CodeBuildDockerImageSource"
TRIGGER_RESOURCE_TYPE = "Custom::CodeBuildDockerImage"

PROJECT_DIR = Path(__file__).resolve().parent.parent  # relative build context paths start here
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
TRIGGER_CODE_DIR = PROJECT_DIR / "lambdas" / "image_build_trigger"

PLATFORMS: dict[str, lambda_.Architecture] = {
    "linux/arm64": lambda_.Architecture.ARM_64,
    "linux/amd64": lambda_.Architecture.X86_64,
}
# The whole custom resource (copy, start, queue, build, push) must end before CloudFormation's
# one-hour custom-resource limit: the provider gives up after TOTAL_TIMEOUT and reports FAILED.
TOTAL_TIMEOUT = Duration.minutes(50)
SERVICE_TIMEOUT = Duration.minutes(55)
#: BuildKit's own image, the one ``docker buildx create --driver docker-container`` pulls by default.
DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"
QUERY_INTERVAL = Duration.seconds(20)
QUEUED_TIMEOUT = Duration.minutes(10)
DEFAULT_BUILD_TIMEOUT = Duration.minutes(30)
MAX_BUILD_TIMEOUT_MINUTES = 35  # + QUEUED_TIMEOUT + source stage and polling slack < TOTAL_TIMEOUT
#: Days after which a pipeline run's artifacts (under ``artifacts_prefix``) expire.
ARTIFACT_EXPIRATION_DAYS = 30
#: Lambda's JSON log format for every function the construct runs our code in.
JSON_LOGGING: Mapping[str, Any] = {
    "logging_format": lambda_.LoggingFormat.JSON,
    "application_log_level_v2": lambda_.ApplicationLogLevel.INFO,
    "system_log_level_v2": lambda_.SystemLogLevel.WARN,
}

ALARM_RULE_DLQ_REASON = (
    "The rule's only target is the stack's SNS alarm topic: EventBridge retries a failed delivery with "
    "backoff for 24 hours (185 attempts, its default retry policy), and a dead-letter queue for alarms would "
    "itself need an alarm nobody receives when the topic is the one that fails."
)
_DEPLOY_DLQ = (
    "Custom resource handler of the image build trigger: a failure is reported to CloudFormation, which "
    "fails the deployment with the error in the stack events; the request carries a presigned response "
    "URL that expires, so a DLQ copy could not be replayed."
)
_DEPLOY_TRACING = (
    "Custom resource handler that runs a few times per deployment and logs to its own log group with "
    "retention; X-Ray would add wildcard xray permissions to its role for no insight."
)
_VERSION_WILDCARD = (
    "custom_resources.Provider grant: the framework may invoke any version of the handler function "
    "(<function arn>:*); scoped to this construct's handler"
)
_AWS = "AwsSolutions::AwsSolutions-"
_SLS = "Serverless::Serverless-"
_ARTIFACTS_IAM5 = _AWS + "IAM5[Resource::<{bucket}.Arn>/{artifacts_prefix}*]"

#: Every cdk-nag acknowledgement of this module: part -> {rule id -> reason}. ``{placeholders}`` in a
#: rule id name the part's resources; ``CodeBuildDockerImage._acknowledge_findings`` resolves them.
NAG_ACKNOWLEDGEMENTS: Mapping[str, Mapping[str, str]] = {
    "alarm_rule": {_SLS + "EventBusDLQ": ALARM_RULE_DLQ_REASON},
    "artifact_bucket": {
        _AWS + "S1": "Private, versioned build-artifact bucket written only by this pipeline and the trigger "
        "(IAM-scoped); a server access log bucket would cost more than the artifacts; CloudTrail data "
        "events cover audits when needed",
    },
    "project": {
        _AWS + "CB4": "Build artifacts are build contexts and logs without secrets; they are encrypted with the "
        "AWS managed S3 key (alias/aws/s3); a customer managed KMS key would add cost and key policy "
        "management for no confidentiality gain",
    },
    "pipeline_role": {
        _ARTIFACTS_IAM5: "CodePipeline writes the source stage's output artifact under a key it generates per "
        "execution (<pipeline name, first 20 characters>/<artifact>/<id>): explicit object actions on "
        "that prefix of the construct's private artifact bucket only",
    },
    "build_role": {
        _ARTIFACTS_IAM5: "CodeBuild reads its input artifact at a key CodePipeline generates per execution "
        "(<pipeline name, first 20 characters>/<artifact>/<id>): s3:GetObject and s3:GetObjectVersion "
        "on that prefix of the construct's private artifact bucket only",
        _AWS + "IAM5[Resource::*]": "ecr:GetAuthorizationToken does not support resource-level permissions "
        "(AWS requires Resource '*'); push/pull actions are scoped to this repository",
    },
    "trigger_role": {
        _AWS + "IAM5[Resource::{logs_arn}<{build_logs}>:log-stream:*]": "The trigger reads the tail of a "
        "failed build's log: stream names are CodeBuild build ids, known only at run time; limited to the "
        "streams of the build log group",
    },
    "on_event_function": {_SLS + "LambdaDLQ": _DEPLOY_DLQ, _SLS + "LambdaTracing": _DEPLOY_TRACING},
    "is_complete_function": {_SLS + "LambdaDLQ": _DEPLOY_DLQ, _SLS + "LambdaTracing": _DEPLOY_TRACING},
    "framework_roles": {
        _AWS + "IAM5[Resource::<{on_event}.Arn>:*]": _VERSION_WILDCARD,
        _AWS + "IAM5[Resource::<{is_complete}.Arn>:*]": _VERSION_WILDCARD,
    },
    # framework-onEvent/isComplete/onTimeout and the waiter state machine
    "provider": {
        _SLS + "LambdaDLQ": _DEPLOY_DLQ,
        _SLS + "LambdaTracing": _DEPLOY_TRACING,
        _SLS + "LambdaDefaultMemorySize": "Framework functions created by aws_cdk.custom_resources.Provider, "
        "whose API has no memory setting; they only relay one CloudFormation event per deployment to "
        "the trigger handlers, for which the default 128 MB is enough.",
        _SLS + "StepFunctionStateMachineXray": "The provider framework's waiter state machine only polls the "
        "is-complete handler during deployments and logs ALL events (without execution data, which "
        "would hold the presigned CloudFormation response URL); X-Ray adds cost and no insight here "
        "(the same reason as its AwsSolutions-SF2 acknowledgement).",
    },
    "waiter": {
        _AWS + "SF2": "The provider framework's waiter state machine only loops over the is-complete handler; "
        "it logs ALL events (without execution data: its input holds the presigned CloudFormation "
        "response URL); X-Ray adds cost and no insight here",
        _AWS + "IAM5[Resource::*]": "CloudWatch Logs vended-log delivery actions (logs:CreateLogDelivery and "
        "related) do not support resource-level permissions; required for the waiter's logging",
        _AWS + "IAM5[Resource::<{framework_is_complete}.Arn>:*]": _VERSION_WILDCARD,
        _AWS + "IAM5[Resource::<{framework_on_timeout}.Arn>:*]": _VERSION_WILDCARD,
    },
}


def _acknowledge(scope: IConstruct, findings: Mapping[str, str], **names: str) -> None:
    """Acknowledge ``findings`` (rule id -> reason) on ``scope`` and its children; ``names`` fill rule ids."""
    Validations.of(scope).acknowledge(
        *[Acknowledgment(id=rule.format(**names), reason=reason) for rule, reason in findings.items()]
    )


@dataclass(frozen=True, kw_only=True)
class LambdaConfig:
    """Settings of the container-image function the construct creates.

    ``timeout`` is a Duration or seconds; ``ephemeral_storage`` a Size or MiB; ``role`` the
    execution role (one with only log-writing permissions is created when omitted).
    """

    role: iam.IRole | None = None
    timeout: Duration | int = 60
    memory_size: int = 1024
    ephemeral_storage: Size | int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    reserved_concurrent_executions: int | None = None
    description: str | None = None
    log_retention: logs.RetentionDays = logs.RetentionDays.TWO_WEEKS

    def timeout_duration(self) -> Duration:
        """``timeout`` as a Duration."""
        return self.timeout if isinstance(self.timeout, Duration) else Duration.seconds(self.timeout)

    def ephemeral_storage_size(self) -> Size | None:
        """``ephemeral_storage`` as a Size (None: Lambda's default)."""
        if self.ephemeral_storage is None or isinstance(self.ephemeral_storage, Size):
            return self.ephemeral_storage
        return Size.mebibytes(self.ephemeral_storage)


def alarm_rule(
    scope: Construct,
    id_: str,
    *,
    topic: sns.ITopic,
    description: str,
    source: str,
    detail_type: str,
    detail: Mapping[str, Any],
    message: str,
) -> events.Rule:
    """An EventBridge rule that sends matching events to the alarm ``topic`` as the text ``message``
    (``events.EventField`` placeholders allowed)."""
    rule = events.Rule(
        scope,
        id_,
        description=description,
        event_pattern=events.EventPattern(source=[source], detail_type=[detail_type], detail=dict(detail)),
    )
    rule.add_target(targets.SnsTopic(topic, message=events.RuleTargetInput.from_text(message)))
    _acknowledge(rule, NAG_ACKNOWLEDGEMENTS["alarm_rule"])
    return rule


def _validate(*, platform: str, keep_images: int, build_timeout: Duration, function_name: str) -> None:
    """Raise ValueError for a prop the construct cannot honour."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {sorted(PLATFORMS)}, got {platform!r}")
    if keep_images < 2:
        # The newest image (it carries the cache tag) and the one before it (rollback target).
        raise ValueError(f"keep_images must be >= 2, got {keep_images}")
    if build_timeout.to_minutes() > MAX_BUILD_TIMEOUT_MINUTES:
        raise ValueError(
            f"build_timeout must be at most {MAX_BUILD_TIMEOUT_MINUTES} minutes so that a waiting deploy "
            f"fails before CloudFormation's one-hour custom resource limit"
        )
    if Token.is_unresolved(function_name) or not FUNCTION_NAME.fullmatch(function_name):
        # A literal: it also names the pipeline, the project and the source key at synth time.
        raise ValueError(f"lambda_function_name must be 1..64 letters, digits, '-' or '_', got {function_name!r}")


class CodeBuildDockerImage(Construct):
    """Builds ``dockerfile_path`` in CodeBuild and runs it as the Lambda ``lambda_function_name``.

    Attributes: ``repository``, ``artifact_bucket``, ``context_asset``, ``project``, ``build_role``,
    ``build_log_group``, ``pipeline``, ``pipeline_role``, ``trigger`` (the custom resource),
    ``source_object`` (the custom resource that puts the build context at ``source_key``),
    ``provider``, ``trigger_role``, ``lambda_function``, ``image_tag`` (the content tag),
    ``build_context`` (the selected files), ``artifacts_prefix``, ``failure_rules`` (EventBridge rules
    to ``alarm_topic``, empty without one).

    ``buildkit_image``: the BuildKit image of the build's ``docker-container`` builder (a mirror in
    your own registry avoids Docker Hub's anonymous pull limits). ``alarm_topic`` receives failed
    pipeline executions and builds. Props are documented in docs/image-build.md.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        dockerfile_path: str,
        build_context_path: str = ".",
        source_paths: list[str] | None = None,
        lambda_function_name: str,
        lambda_config: LambdaConfig | Mapping[str, Any],
        platform: str = "linux/arm64",
        wait_for_build: bool = False,
        build_args: Mapping[str, str] | None = None,
        compute_type: codebuild.ComputeType = codebuild.ComputeType.SMALL,
        build_timeout: Duration | None = None,
        keep_images: int = 10,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        buildkit_image: str = DEFAULT_BUILDKIT_IMAGE,
        alarm_topic: sns.ITopic | None = None,
    ) -> None:
        super().__init__(scope, id_)
        build_timeout = build_timeout or DEFAULT_BUILD_TIMEOUT
        _validate(
            platform=platform, keep_images=keep_images, build_timeout=build_timeout, function_name=lambda_function_name
        )
        self.function_name = name = lambda_function_name
        self.wait_for_build = wait_for_build
        self.platform = platform
        self.pipeline_name = f"{name}-image"
        self.project_name = f"{name}-image-build"
        self.source_key = f"{name}/context.zip"
        # CodePipeline stores each artifact under "<first 20 characters of the pipeline name>/<artifact
        # name, shortened>/<random id>": the source key is not under it unless the name has 20 characters.
        self.artifacts_prefix = f"{self.pipeline_name[:20]}/"
        self.function_arn = Stack.of(self).format_arn(
            service="lambda", resource="function", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        build_args = dict(build_args or {})
        root = Path(build_context_path)
        self.build_context: BuildContext = resolve_context(
            root=root if root.is_absolute() else PROJECT_DIR / root,
            dockerfile_path=dockerfile_path,
            source_paths=source_paths,
            build_args=build_args,
            platform=platform,
        )
        self.image_tag: str = self.build_context.image_tag

        self.repository = self._repository(keep_images=keep_images, removal_policy=removal_policy)
        self.artifact_bucket = self._artifact_bucket(removal_policy=removal_policy)
        self.project = self._build_project(
            compute_type=compute_type,
            build_timeout=build_timeout,
            build_args=build_args,
            buildkit_image=buildkit_image,
            log_retention=log_retention,
        )
        self.pipeline = self._pipeline()
        self.on_event_function, self.is_complete_function = self._trigger_handlers(log_retention=log_retention)
        self.provider = self._provider(log_retention=log_retention)
        self.trigger = self._trigger()
        self.lambda_function = self._function(
            lambda_config if isinstance(lambda_config, LambdaConfig) else LambdaConfig(**lambda_config)
        )
        self.failure_rules = self._alarm_on_failures(alarm_topic)
        self._acknowledge_findings()

    @property
    def image_uri(self) -> str:
        """``<repository uri>@sha256:<digest>`` the function is pinned to (a deploy-time token)."""
        return f"{self.repository.repository_uri}@sha256:{self.trigger.get_att_string('DigestHex')}"

    # ---- repository -------------------------------------------------------------------------------

    def _repository(self, *, keep_images: int, removal_policy: RemovalPolicy) -> ecr.Repository:
        """The ECR repository: immutable content tags, scan on push, old images expired."""
        return ecr.Repository(
            self,
            "Repository",
            image_scan_on_push=True,
            # Content tags never move; only the registry cache tag is rewritten on every build.
            image_tag_mutability=ecr.TagMutability.IMMUTABLE_WITH_EXCLUSION,
            image_tag_mutability_exclusion_filters=[ecr.ImageTagMutabilityExclusionFilter.wildcard(CACHE_TAG)],
            removal_policy=removal_policy,
            empty_on_delete=removal_policy == RemovalPolicy.DESTROY,
            lifecycle_rules=[
                # ECR applies rules by priority and "an image that matches the tagging requirements of a
                # rule cannot be expired by a rule with a lower priority": the registry cache manifest
                # (rewritten by every build, never run) matches this rule and is never counted below.
                ecr.LifecycleRule(
                    rule_priority=1,
                    description=f"Keep the registry build cache ({CACHE_TAG}) out of the image count",
                    tag_status=ecr.TagStatus.TAGGED,
                    tag_pattern_list=[CACHE_TAG],
                    max_image_count=1,
                ),
                ecr.LifecycleRule(
                    rule_priority=2,
                    description="Expire untagged images one day after push",
                    tag_status=ecr.TagStatus.UNTAGGED,
                    max_image_age=Duration.days(1),
                ),
                ecr.LifecycleRule(
                    rule_priority=3,
                    description=f"Keep the last {keep_images} content-tagged images",
                    tag_status=ecr.TagStatus.TAGGED,
                    tag_pattern_list=["*"],
                    max_image_count=keep_images,
                ),
            ],
        )

    # ---- artifact bucket and the build context asset -----------------------------------------------

    def _artifact_bucket(self, *, removal_policy: RemovalPolicy) -> s3.Bucket:
        """The versioned bucket of the pipeline's source and artifacts; stages the context asset."""
        self.context_asset = s3_assets.Asset(
            self,
            "ContextAsset",
            path=str(stage_context(self.build_context)),
            asset_hash=self.image_tag,
            display_name=f"{self.function_name} build context",
        )
        bucket = s3.Bucket(
            self,
            "ArtifactBucket",
            versioned=True,  # the pipeline's S3 source is pinned to an object version
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal_policy,
            auto_delete_objects=removal_policy == RemovalPolicy.DESTROY,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                    expired_object_delete_marker=True,
                )
            ],
        )
        # A run's artifacts are read only during that run. Never the source key, which every run reads.
        if not self.source_key.startswith(self.artifacts_prefix):
            bucket.add_lifecycle_rule(
                id="expire-pipeline-artifacts",
                prefix=self.artifacts_prefix,
                expiration=Duration.days(ARTIFACT_EXPIRATION_DAYS),
            )
        return bucket

    # ---- build project ------------------------------------------------------------------------------

    def _build_project(
        self,
        *,
        compute_type: codebuild.ComputeType,
        build_timeout: Duration,
        build_args: Mapping[str, str],
        buildkit_image: str,
        log_retention: logs.RetentionDays,
    ) -> codebuild.PipelineProject:
        """The privileged CodeBuild project that builds and pushes the image, with its log group and role."""
        self.build_log_group = self._log_group("BuildLogs", log_retention)
        self.build_role = self._build_role()
        arm = self.platform == "linux/arm64"

        def variable(value: str) -> codebuild.BuildEnvironmentVariable:
            return codebuild.BuildEnvironmentVariable(value=value)

        project = codebuild.PipelineProject(
            self,
            "Project",
            project_name=self.project_name,
            # Without policy updates: the role's explicit grants replace CDK's automatic ones.
            role=self.build_role.without_policy_updates(),
            description=f"Builds the {self.platform} container image of the Lambda function {self.function_name}",
            environment=codebuild.BuildEnvironment(
                build_image=(
                    codebuild.LinuxArmBuildImage.AMAZON_LINUX_2023_STANDARD_3_0
                    if arm
                    else codebuild.LinuxBuildImage.AMAZON_LINUX_2023_5
                ),
                compute_type=compute_type,
                privileged=True,  # the Docker daemon needs it
            ),
            environment_variables={
                "REPOSITORY_URI": variable(self.repository.repository_uri),
                "REPOSITORY_NAME": variable(self.repository.repository_name),
                "PLATFORM": variable(self.platform),
                "DOCKERFILE": variable(self.build_context.dockerfile),
                "CACHE_TAG": variable(CACHE_TAG),
                "FUNCTION_NAME": variable(self.function_name),
                "BUILDKIT_IMAGE": variable(buildkit_image),
            },
            build_spec=codebuild.BuildSpec.from_object(build_spec_object(build_args)),
            timeout=build_timeout,
            queued_timeout=QUEUED_TIMEOUT,
            grant_report_group_permissions=False,
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self.build_log_group)
            ),
        )
        return project

    def _build_role(self) -> iam.Role:
        """CodeBuild's role: only this project may assume it; explicit actions only (docs/image-build.md)."""
        stack = Stack.of(self)
        project_arn = stack.format_arn(service="codebuild", resource="project", resource_name=self.project_name)
        role = iam.Role(
            self,
            "BuildRole",
            # Confused-deputy guard: CodeBuild may assume the role only for this project of this account.
            assumed_by=iam.ServicePrincipal(
                "codebuild.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": project_arn},
                },
            ),
            description=f"CodeBuild: builds and pushes the image of {self.function_name}",
        )
        self.build_log_group.grant_write(role)  # logs:CreateLogStream, logs:PutLogEvents
        self.repository.grant_pull_push(role)  # includes ecr:GetAuthorizationToken on "*"
        self.repository.grant(role, "ecr:DescribeImages")
        statements = [
            # Authenticated pulls of the ECR Public base images; no resource-level permissions.
            ("PullPublicBaseImages", ["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"], "*"),
            ("ReadInputArtifact", ["s3:GetObject", "s3:GetObjectVersion"], self._artifact_objects),
            ("ArtifactBucketIdentity", ["s3:GetBucketAcl", "s3:GetBucketLocation"], self.artifact_bucket.bucket_arn),
        ]
        for sid, actions_, resource in statements:
            role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions_, resources=[resource]))
        if not self.wait_for_build:
            # Async mode: the build points the function at the new digest and waits for the update.
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["lambda:UpdateFunctionCode", "lambda:GetFunction", "lambda:GetFunctionConfiguration"],
                    resources=[self.function_arn],
                )
            )
        return role

    @property
    def _artifact_objects(self) -> str:
        """ARN of the objects CodePipeline writes for each run (under ``artifacts_prefix``)."""
        return self.artifact_bucket.arn_for_objects(f"{self.artifacts_prefix}*")

    # ---- pipeline -----------------------------------------------------------------------------------

    def _pipeline(self) -> codepipeline.Pipeline:
        """CodePipeline V2: the S3 object version of the source key -> the CodeBuild project."""
        tag_variable = codepipeline.Variable(
            variable_name="IMAGE_TAG", default_value=self.image_tag, description="Content tag to build and push"
        )
        update_variable = codepipeline.Variable(
            variable_name="UPDATE_FUNCTION",
            default_value="false" if self.wait_for_build else "true",
            description="true: the build points the Lambda function at the pushed digest",
        )
        source_output = codepipeline.Artifact("Context")
        self.pipeline_role = self._pipeline_role()
        source = actions.S3SourceAction(
            action_name="Source",
            bucket=self.artifact_bucket,
            bucket_key=self.source_key,
            trigger=actions.S3Trigger.NONE,  # started only by the trigger custom resource
            output=source_output,
        )
        build = actions.CodeBuildAction(
            action_name="Build",
            project=self.project,
            input=source_output,
            environment_variables={
                "IMAGE_TAG": codebuild.BuildEnvironmentVariable(value=tag_variable.reference()),
                "UPDATE_FUNCTION": codebuild.BuildEnvironmentVariable(value=update_variable.reference()),
            },
        )
        return codepipeline.Pipeline(
            self,
            "Pipeline",
            pipeline_name=self.pipeline_name,
            role=self.pipeline_role.without_policy_updates(),
            pipeline_type=codepipeline.PipelineType.V2,
            execution_mode=codepipeline.ExecutionMode.SUPERSEDED,
            artifact_bucket=self.artifact_bucket,
            restart_execution_on_update=False,
            cross_account_keys=False,
            use_pipeline_role_for_actions=True,
            variables=[tag_variable, update_variable],
            stages=[
                codepipeline.StageProps(stage_name="Source", actions=[source]),
                codepipeline.StageProps(stage_name="Build", actions=[build]),
            ],
        )

    def _pipeline_role(self) -> iam.Role:
        """CodePipeline's role, with the actions AWS documents for an S3 source, the artifact store and a
        CodeBuild action, each scoped to its object, prefix, bucket or project."""
        role = iam.Role(
            self,
            "PipelineRole",
            assumed_by=iam.ServicePrincipal("codepipeline.amazonaws.com"),
            description=f"CodePipeline: the image build of {self.function_name}",
        )
        source_object = self.artifact_bucket.arn_for_objects(self.source_key)
        statements = [
            (
                "ReadSourceObject",
                ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
                source_object,
            ),
            (
                "SourceAndArtifactBucket",
                ["s3:GetBucketVersioning", "s3:GetBucketAcl", "s3:GetBucketLocation"],
                self.artifact_bucket.bucket_arn,
            ),
            # The source stage writes its output artifact; tags read from the source object may come along.
            (
                "WriteArtifacts",
                ["s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:GetObjectVersion"],
                self._artifact_objects,
            ),
            (
                "RunBuild",
                ["codebuild:BatchGetBuilds", "codebuild:StartBuild", "codebuild:StopBuild"],
                self.project.project_arn,
            ),
        ]
        for sid, actions_, resource in statements:
            role.add_to_policy(iam.PolicyStatement(sid=sid, actions=actions_, resources=[resource]))
        return role

    # ---- trigger: custom resources and their provider ----------------------------------------------

    def _provider(self, *, log_retention: logs.RetentionDays) -> cr.Provider:
        """The custom resource provider of both custom resources: the trigger handlers and CDK's framework."""
        # Own roles for the provider framework's functions: inline log permissions instead of the
        # AWSLambdaBasicExecutionRole managed policy; the framework adds its invoke permissions.
        provider_logs = self._log_group("TriggerProviderLogs", log_retention)
        self._framework_roles = [
            iam.Role(
                self,
                role_id,
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"Custom resource provider framework ({what}) of the {self.function_name} image build",
            )
            for role_id, what in (
                ("TriggerFrameworkOnEventRole", "onEvent"),
                ("TriggerFrameworkIsCompleteRole", "isComplete/onTimeout"),
            )
        ]
        for framework_role in self._framework_roles:
            provider_logs.grant_write(framework_role)
        return cr.Provider(
            self,
            "TriggerProvider",
            on_event_handler=self.on_event_function,
            is_complete_handler=self.is_complete_function,
            query_interval=QUERY_INTERVAL,
            total_timeout=TOTAL_TIMEOUT,
            log_group=provider_logs,
            framework_on_event_role=self._framework_roles[0],
            framework_complete_and_timeout_role=self._framework_roles[1],
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                # Under /aws/vendedlogs/: Step Functions adds any other log group to the account's CloudWatch
                # Logs resource policy (5,120 characters at most).
                destination=logs.LogGroup(
                    self,
                    "TriggerWaiterLogs",
                    log_group_name=f"/aws/vendedlogs/states/{self.function_name}-image-build-waiter",
                    retention=log_retention,
                    removal_policy=RemovalPolicy.DESTROY,
                ),
                level=sfn.LogLevel.ALL,
                # Never the execution data: the waiter's input holds the presigned ResponseURL.
                include_execution_data=False,
            ),
        )

    def _trigger_handlers(self, *, log_retention: logs.RetentionDays) -> tuple[lambda_.Function, lambda_.Function]:
        """The on-event and is-complete functions (lambdas/image_build_trigger) and ``trigger_role``."""
        self.trigger_role = iam.Role(
            self,
            "TriggerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Starts and watches the image build of {self.function_name}",
        )
        common: dict[str, Any] = {
            "runtime": lambda_.Runtime.PYTHON_3_14,
            "architecture": lambda_.Architecture.ARM_64,
            "code": lambda_.Code.from_asset(str(TRIGGER_CODE_DIR), exclude=["__pycache__", "*.pyc", "tests"]),
            "role": self.trigger_role,
            "memory_size": 256,
            **JSON_LOGGING,
        }
        on_event, is_complete = (
            lambda_.Function(
                self,
                f"Trigger{part}",
                handler=f"handler.{entry}",
                timeout=timeout,
                description=f"{does} the image build of {self.function_name}{when}",
                log_group=self._log_group(f"Trigger{part}Logs", log_retention),
                **common,
            )
            for part, entry, timeout, does, when in (
                ("OnEvent", "on_event", Duration.minutes(5), "Starts", " when its content tag is not in ECR"),
                ("IsComplete", "is_complete", Duration.minutes(1), "Polls", ""),
            )
        )
        self._grant_trigger(on_event, is_complete)
        return on_event, is_complete

    def _grant_trigger(self, *handlers: lambda_.Function) -> None:
        """The trigger role's permissions: its logs, the asset, the source key, pipeline, project and repository."""
        role, stack = self.trigger_role, Stack.of(self)
        for handler in handlers:
            handler.log_group.grant_write(role)
        asset_object = self.context_asset.bucket.arn_for_objects(self.context_asset.s3_object_key)
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[asset_object]))
        # HeadObject (s3:GetObject) tells whether the source key already holds this tag (a repeated request).
        source_object = self.artifact_bucket.arn_for_objects(self.source_key)
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject"], resources=[source_object]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "codepipeline:StartPipelineExecution",
                    "codepipeline:GetPipelineExecution",
                    "codepipeline:ListActionExecutions",
                    "codepipeline:ListPipelineExecutions",
                    "codepipeline:StopPipelineExecution",
                ],
                # From the literal name, not a reference: the pipeline depends on the source resource,
                # which runs with this role.
                resources=[stack.format_arn(service="codepipeline", resource=self.pipeline_name)],
            )
        )
        self.repository.grant(role, "ecr:DescribeImages")
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["codebuild:BatchGetBuilds", "codebuild:ListBuildsForProject", "codebuild:StopBuild"],
                resources=[self.project.project_arn],
            )
        )
        # Build log stream names are build ids, known only at run time: the streams of this one group.
        build_log_streams = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{self.build_log_group.log_group_name}:log-stream:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        role.add_to_policy(iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[build_log_streams]))
        if not self.wait_for_build:
            role.add_to_policy(iam.PolicyStatement(actions=["lambda:GetFunction"], resources=[self.function_arn]))

    def _trigger(self) -> CustomResource:
        """The trigger custom resource (starts or adopts the build, returns the digest), after ``source_object``."""
        # The build context at the source key before the pipeline exists: the execution CodePipeline starts
        # by itself when it creates the pipeline then builds this tag instead of failing.
        self.source_object = CustomResource(
            self,
            "Source",
            service_token=self.provider.service_token,
            resource_type=SOURCE_RESOURCE_TYPE,
            properties={
                "ImageTag": self.image_tag,
                "AssetBucket": self.context_asset.s3_bucket_name,
                "AssetKey": self.context_asset.s3_object_key,
                "SourceBucket": self.artifact_bucket.bucket_name,
                "SourceKey": self.source_key,
            },
        )
        self.source_object.node.add_dependency(self.trigger_role)
        self.pipeline.node.add_dependency(self.source_object)
        # The handler fails with a precise message this long after the start, before the provider's
        # own (message-less) timeout.
        deadline_seconds = TOTAL_TIMEOUT.to_seconds() - 3 * QUERY_INTERVAL.to_seconds()
        trigger = CustomResource(
            self,
            "Trigger",
            service_token=self.provider.service_token,
            resource_type=TRIGGER_RESOURCE_TYPE,
            service_timeout=SERVICE_TIMEOUT,
            properties={
                "ImageTag": self.image_tag,
                "SourceVersion": self.source_object.get_att_string("VersionId"),
                "PipelineName": self.pipeline.pipeline_name,
                "SourceActionName": "Source",
                "ProjectName": self.project.project_name,
                "RepositoryName": self.repository.repository_name,
                "FunctionName": self.function_name,
                "WaitForBuild": "true" if self.wait_for_build else "false",
                "DeadlineSeconds": str(int(deadline_seconds)),
            },
        )
        # The trigger must not run before its permissions, and those of the build it starts, exist.
        trigger.node.add_dependency(self.trigger_role, self.build_role)
        return trigger

    # ---- the function -------------------------------------------------------------------------------

    def _function(self, config: LambdaConfig) -> lambda_.DockerImageFunction:
        """The DockerImageFunction, pinned to the digest the trigger returns, logging JSON to its log group."""
        function_logs = logs.LogGroup(
            self,
            "FunctionLogs",
            log_group_name=f"/aws/lambda/{self.function_name}",
            retention=config.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = config.role or iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of {self.function_name}",
        )
        function_logs.grant_write(role)
        digest_hex = self.trigger.get_att_string("DigestHex")
        function = lambda_.DockerImageFunction(
            self,
            "Function",
            function_name=self.function_name,
            code=lambda_.DockerImageCode.from_ecr(self.repository, tag_or_digest=f"sha256:{digest_hex}"),
            architecture=PLATFORMS[self.platform],
            role=role,
            timeout=config.timeout_duration(),
            memory_size=config.memory_size,
            ephemeral_storage_size=config.ephemeral_storage_size(),
            environment=dict(config.environment),
            reserved_concurrent_executions=config.reserved_concurrent_executions,
            description=config.description,
            log_group=function_logs,
            **JSON_LOGGING,
        )
        for key in sorted(config.tags):
            Tags.of(function).add(key, config.tags[key])
        self._condition_lambda_pull()
        return function

    def _condition_lambda_pull(self) -> None:
        """Limit the repository policy statement CDK adds for ``lambda.amazonaws.com`` to this function.

        CDK renders that statement as the policy's only one and offers no way to condition it: an
        override of statement 0, which a test pins to the Lambda principal.
        """
        repository = self.repository.node.default_child
        assert isinstance(repository, ecr.CfnRepository)
        repository.add_property_override(
            "RepositoryPolicyText.Statement.0.Condition",
            {"StringLike": {"aws:sourceArn": [self.function_arn, f"{self.function_arn}:*"]}},
        )

    # ---- alarms and cdk-nag -------------------------------------------------------------------------

    def _alarm_on_failures(self, topic: sns.ITopic | None) -> list[events.Rule]:
        """EventBridge rules: a FAILED pipeline execution and a FAILED build of this image reach ``topic``."""
        if topic is None:
            return []
        field = events.EventField.from_path
        name = self.function_name
        pipeline_failed = alarm_rule(
            self,
            "PipelineFailedRule",
            topic=topic,
            description=f"Image build pipeline of {name}: execution FAILED",
            source="aws.codepipeline",
            detail_type="CodePipeline Pipeline Execution State Change",
            detail={"state": ["FAILED"], "pipeline": [self.pipeline_name]},
            message=(
                f"The image build of the Lambda function {name} FAILED: pipeline {field('$.detail.pipeline')} "
                f"execution {field('$.detail.execution-id')} in {field('$.region')}. The function keeps its "
                "previous image. Open the execution in the CodePipeline console for the build log."
            ),
        )
        build_failed = alarm_rule(
            self,
            "BuildFailedRule",
            topic=topic,
            description=f"Image build project of {name}: build FAILED",
            source="aws.codebuild",
            detail_type="CodeBuild Build State Change",
            detail={"build-status": ["FAILED"], "project-name": [self.project_name]},
            message=(
                f"A CodeBuild build of the {name} image FAILED: {field('$.detail.build-id')}. Its log: "
                f"{field('$.detail.additional-information.logs.deep-link')}"
            ),
        )
        return [pipeline_failed, build_failed]

    def _acknowledge_findings(self) -> None:
        """Apply ``NAG_ACKNOWLEDGEMENTS`` to each part, its rule ids resolved to this construct's resources."""
        stack = Stack.of(self)

        def ref(resource: IConstruct) -> str:
            child = resource.node.default_child
            assert isinstance(child, CfnElement)
            return stack.get_logical_id(child)

        def literal(value: str, pseudo: str) -> str:
            return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value

        names = {
            "bucket": ref(self.artifact_bucket),
            "artifacts_prefix": self.artifacts_prefix,
            "logs_arn": f"arn:{literal(stack.partition, 'Partition')}:logs:{literal(stack.region, 'Region')}:"
            f"{literal(stack.account, 'AccountId')}:log-group:",
            "build_logs": ref(self.build_log_group),
            "on_event": ref(self.on_event_function),
            "is_complete": ref(self.is_complete_function),
            "framework_is_complete": ref(self.provider.node.find_child("framework-isComplete")),
            "framework_on_timeout": ref(self.provider.node.find_child("framework-onTimeout")),
        }
        parts: dict[str, list[IConstruct]] = {
            "artifact_bucket": [self.artifact_bucket],
            "project": [self.project],
            "pipeline_role": [self.pipeline_role],
            "build_role": [self.build_role],
            "trigger_role": [self.trigger_role],
            "on_event_function": [self.on_event_function],
            "is_complete_function": [self.is_complete_function],
            "framework_roles": list(self._framework_roles),
            "provider": [self.provider],
            "waiter": [self.provider.node.find_child("waiter-state-machine")],
        }
        for part, scopes in parts.items():
            for scope in scopes:
                _acknowledge(scope, NAG_ACKNOWLEDGEMENTS[part], **names)

    def _log_group(self, id_: str, retention: logs.RetentionDays) -> logs.LogGroup:
        """A log group with ``retention``, deleted with the stack."""
        return logs.LogGroup(self, id_, retention=retention, removal_policy=RemovalPolicy.DESTROY)
