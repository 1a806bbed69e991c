"""CodeBuildDockerImage: a container-image Lambda whose image is built in CodeBuild at deploy time.

No local Docker: the minimal build context is a content-hashed S3 asset; a custom resource copies
it to ``<name>/context.zip`` in a versioned artifact bucket and starts a CodePipeline V2 pinned to
that object version; CodeBuild (ARM, privileged) runs ``docker buildx build`` and pushes the image
to ECR under a content tag. When the tag already exists in ECR nothing is built.

Modes:
- ``wait_for_build=True``: every deploy that changes the context waits for the build and the
  function is pinned to ``<repository>@sha256:<digest>`` by CloudFormation.
- ``wait_for_build=False`` (default): the first deploy waits (the function cannot be created from
  an empty repository); later deploys start the build and return at once, the function keeps its
  current digest in the template and CodeBuild updates it when the image is pushed.
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

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
TRIGGER_CODE_DIR = REPO_ROOT / "lambdas" / "image_build_trigger"

PLATFORMS: dict[str, lambda_.Architecture] = {
    "linux/arm64": lambda_.Architecture.ARM_64,
    "linux/amd64": lambda_.Architecture.X86_64,
}
# The whole custom resource (copy, start, queue, build, push) must end before CloudFormation's
# one-hour custom-resource limit: the provider gives up after TOTAL_TIMEOUT and reports FAILED.
TOTAL_TIMEOUT = Duration.minutes(50)
#: BuildKit's own image, the one ``docker buildx create --driver docker-container`` pulls by default.
DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"
QUERY_INTERVAL = Duration.seconds(20)
QUEUED_TIMEOUT = Duration.minutes(10)
DEFAULT_BUILD_TIMEOUT = Duration.minutes(30)
MAX_BUILD_TIMEOUT_MINUTES = 35  # + QUEUED_TIMEOUT + source stage and polling slack < TOTAL_TIMEOUT
#: Days after which a pipeline run's artifacts (under ``artifacts_prefix``) expire.
ARTIFACT_EXPIRATION_DAYS = 30


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
        return self.timeout if isinstance(self.timeout, Duration) else Duration.seconds(self.timeout)

    def ephemeral_storage_size(self) -> Size | None:
        if self.ephemeral_storage is None or isinstance(self.ephemeral_storage, Size):
            return self.ephemeral_storage
        return Size.mebibytes(self.ephemeral_storage)


ALARM_RULE_DLQ_REASON = (
    "The rule's only target is the stack's SNS alarm topic: EventBridge retries a failed delivery with "
    "backoff for 24 hours (185 attempts, its default retry policy), and a dead-letter queue for alarms would "
    "itself need an alarm nobody receives when the topic is the one that fails."
)


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
    # cdk-nag Serverless-EventBusDLQ: the only target is the alarm topic (reason above).
    Validations.of(rule).acknowledge(
        Acknowledgment(id="Serverless::Serverless-EventBusDLQ", reason=ALARM_RULE_DLQ_REASON)
    )
    return rule


class CodeBuildDockerImage(Construct):
    """Builds ``dockerfile_path`` in CodeBuild and runs it as the Lambda ``lambda_function_name``.

    Attributes: ``repository``, ``artifact_bucket``, ``project``, ``pipeline``, ``lambda_function``,
    ``image_tag`` (the content tag), ``build_context`` (selected files), ``trigger`` (the custom
    resource), ``provider``, ``source_key``, ``build_role`` and ``pipeline_role`` (the project's and the
    pipeline's roles, with explicit actions only), ``artifacts_prefix``, ``source_object`` (the custom
    resource that puts the build context at ``source_key`` before the pipeline exists),
    ``failure_rules`` (EventBridge rules to ``alarm_topic``, empty without one).

    ``buildkit_image`` is the BuildKit image of the build's ``docker-container`` builder (the one that
    can export a registry cache of every stage); point it at a mirror in your own registry to avoid
    Docker Hub's anonymous pull limits. ``alarm_topic`` receives failed pipeline executions and builds.
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
        if Token.is_unresolved(lambda_function_name) or not FUNCTION_NAME.fullmatch(lambda_function_name):
            # A literal: it also names the pipeline, the project and the source key at synth time.
            raise ValueError(
                f"lambda_function_name must be 1..64 letters, digits, '-' or '_', got {lambda_function_name!r}"
            )
        config = lambda_config if isinstance(lambda_config, LambdaConfig) else LambdaConfig(**lambda_config)
        build_args = dict(build_args or {})
        stack = Stack.of(self)
        name = lambda_function_name
        self.wait_for_build = wait_for_build
        self.platform = platform

        # ---- build context: minimal, content-hashed, staged, uploaded as an asset -----------------
        root = Path(build_context_path)
        if not root.is_absolute():
            root = REPO_ROOT / root
        self.build_context: BuildContext = resolve_context(
            root=root,
            dockerfile_path=dockerfile_path,
            source_paths=source_paths,
            build_args=build_args,
            platform=platform,
        )
        self.image_tag: str = self.build_context.image_tag
        self.context_asset = s3_assets.Asset(
            self,
            "ContextAsset",
            path=str(stage_context(self.build_context)),
            asset_hash=self.image_tag,
            display_name=f"{name} build context",
        )
        self.source_key = f"{name}/context.zip"

        # ---- ECR repository -------------------------------------------------------------------------
        self.repository = ecr.Repository(
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

        # ---- artifact bucket (pipeline source + artifacts) ----------------------------------------
        self.artifact_bucket = s3.Bucket(
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

        # ---- CodeBuild project ---------------------------------------------------------------------
        self.build_log_group = logs.LogGroup(
            self, "BuildLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        function_arn = stack.format_arn(
            service="lambda", resource="function", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        self.function_arn = function_arn
        pipeline_name = f"{name}-image"
        self.pipeline_name = pipeline_name
        # CodePipeline stores each artifact under "<first 20 characters of the pipeline name>/<artifact
        # name, shortened>/<random id>" in its artifact store: the source key (<name>/context.zip) is not
        # under this prefix unless the name is exactly 20 characters long.
        self.artifacts_prefix = f"{pipeline_name[:20]}/"
        # Each pipeline run's artifacts are read only during that run: they expire after 30 days (the
        # version rule above then removes them). Never the source key, which every run reads: when it is
        # under the prefix (a 20-character name) there is no such rule.
        if not self.source_key.startswith(self.artifacts_prefix):
            self.artifact_bucket.add_lifecycle_rule(
                id="expire-pipeline-artifacts",
                prefix=self.artifacts_prefix,
                expiration=Duration.days(ARTIFACT_EXPIRATION_DAYS),
            )
        artifact_objects = self.artifact_bucket.arn_for_objects(f"{self.artifacts_prefix}*")
        # The build's and the pipeline's roles are handed to the L2 constructs without policy updates:
        # their automatic grants (Bucket.grant_read / grant_read_write: s3:GetObject*, s3:GetBucket*,
        # s3:List*, s3:DeleteObject*, s3:Abort*, and the default /aws/codebuild/<project> log group) are
        # replaced by the explicit actions each service uses, granted below and listed in the README.
        project_name = f"{name}-image-build"
        project_arn = stack.format_arn(service="codebuild", resource="project", resource_name=project_name)
        self.build_role = iam.Role(
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
            description=f"CodeBuild: builds and pushes the image of {name}",
        )
        arm = platform == "linux/arm64"
        self.project = codebuild.PipelineProject(
            self,
            "Project",
            project_name=project_name,
            role=self.build_role.without_policy_updates(),
            description=f"Builds the {platform} container image of the Lambda function {name}",
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
                "REPOSITORY_URI": codebuild.BuildEnvironmentVariable(value=self.repository.repository_uri),
                "REPOSITORY_NAME": codebuild.BuildEnvironmentVariable(value=self.repository.repository_name),
                "PLATFORM": codebuild.BuildEnvironmentVariable(value=platform),
                "DOCKERFILE": codebuild.BuildEnvironmentVariable(value=self.build_context.dockerfile),
                "CACHE_TAG": codebuild.BuildEnvironmentVariable(value=CACHE_TAG),
                "FUNCTION_NAME": codebuild.BuildEnvironmentVariable(value=name),
                "BUILDKIT_IMAGE": codebuild.BuildEnvironmentVariable(value=buildkit_image),
            },
            build_spec=codebuild.BuildSpec.from_object(build_spec_object(build_args)),
            timeout=build_timeout,
            queued_timeout=QUEUED_TIMEOUT,
            grant_report_group_permissions=False,
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self.build_log_group)
            ),
        )
        self.build_log_group.grant_write(self.build_role)  # logs:CreateLogStream, logs:PutLogEvents
        self.repository.grant_pull_push(self.build_role)  # includes ecr:GetAuthorizationToken on "*"
        self.repository.grant(self.build_role, "ecr:DescribeImages")
        # Authenticated pulls of the ECR Public base images (the account's pull quota instead of the
        # anonymous per-address one). Neither action supports resource-level permissions.
        self.build_role.add_to_policy(
            iam.PolicyStatement(
                sid="PullPublicBaseImages",
                actions=["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"],
                resources=["*"],
            )
        )
        # CodeBuild reads its input artifact (the source zip the pipeline copied) with this role.
        self.build_role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadInputArtifact",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[artifact_objects],
            )
        )
        self.build_role.add_to_policy(
            iam.PolicyStatement(
                sid="ArtifactBucketIdentity",
                actions=["s3:GetBucketAcl", "s3:GetBucketLocation"],
                resources=[self.artifact_bucket.bucket_arn],
            )
        )
        if not wait_for_build:
            # Async mode: the build points the function at the new digest and waits for the update.
            self.build_role.add_to_policy(
                iam.PolicyStatement(
                    actions=["lambda:UpdateFunctionCode", "lambda:GetFunction", "lambda:GetFunctionConfiguration"],
                    resources=[function_arn],
                )
            )

        # ---- CodePipeline V2: S3 object version -> CodeBuild --------------------------------------
        tag_variable = codepipeline.Variable(
            variable_name="IMAGE_TAG", default_value=self.image_tag, description="Content tag to build and push"
        )
        update_variable = codepipeline.Variable(
            variable_name="UPDATE_FUNCTION",
            default_value="false" if wait_for_build else "true",
            description="true: the build points the Lambda function at the pushed digest",
        )
        source_output = codepipeline.Artifact("Context")
        self.pipeline_role = iam.Role(
            self,
            "PipelineRole",
            assumed_by=iam.ServicePrincipal("codepipeline.amazonaws.com"),
            description=f"CodePipeline: the image build of {name}",
        )
        self._grant_pipeline(artifact_objects)
        self.pipeline = codepipeline.Pipeline(
            self,
            "Pipeline",
            pipeline_name=pipeline_name,
            role=self.pipeline_role.without_policy_updates(),
            pipeline_type=codepipeline.PipelineType.V2,
            execution_mode=codepipeline.ExecutionMode.SUPERSEDED,
            artifact_bucket=self.artifact_bucket,
            restart_execution_on_update=False,
            cross_account_keys=False,
            use_pipeline_role_for_actions=True,
            variables=[tag_variable, update_variable],
            stages=[
                codepipeline.StageProps(
                    stage_name="Source",
                    actions=[
                        actions.S3SourceAction(
                            action_name="Source",
                            bucket=self.artifact_bucket,
                            bucket_key=self.source_key,
                            trigger=actions.S3Trigger.NONE,  # started only by the trigger custom resource
                            output=source_output,
                        )
                    ],
                ),
                codepipeline.StageProps(
                    stage_name="Build",
                    actions=[
                        actions.CodeBuildAction(
                            action_name="Build",
                            project=self.project,
                            input=source_output,
                            environment_variables={
                                "IMAGE_TAG": codebuild.BuildEnvironmentVariable(value=tag_variable.reference()),
                                "UPDATE_FUNCTION": codebuild.BuildEnvironmentVariable(
                                    value=update_variable.reference()
                                ),
                            },
                        )
                    ],
                ),
            ],
        )

        # ---- trigger custom resource -----------------------------------------------------------------
        self.trigger_role = iam.Role(
            self,
            "TriggerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Starts and watches the image build of {name}",
        )
        trigger_code = lambda_.Code.from_asset(str(TRIGGER_CODE_DIR), exclude=["__pycache__", "*.pyc", "tests"])
        handler_props: dict[str, Any] = {
            "runtime": lambda_.Runtime.PYTHON_3_14,
            "architecture": lambda_.Architecture.ARM_64,
            "code": trigger_code,
            "role": self.trigger_role,
            "memory_size": 256,
        }
        on_event_logs = logs.LogGroup(
            self, "TriggerOnEventLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        is_complete_logs = logs.LogGroup(
            self, "TriggerIsCompleteLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.on_event_function = lambda_.Function(
            self,
            "TriggerOnEvent",
            handler="handler.on_event",
            timeout=Duration.minutes(5),
            description=f"Starts the image build of {name} when its content tag is not in ECR",
            log_group=on_event_logs,
            **handler_props,
        )
        self.is_complete_function = lambda_.Function(
            self,
            "TriggerIsComplete",
            handler="handler.is_complete",
            timeout=Duration.minutes(1),
            description=f"Polls the image build of {name}",
            log_group=is_complete_logs,
            **handler_props,
        )
        self._grant_trigger(function_arn)
        # Own roles for the provider framework's functions: inline log permissions instead of the
        # AWSLambdaBasicExecutionRole managed policy; the framework adds its invoke permissions.
        provider_logs = logs.LogGroup(
            self, "TriggerProviderLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        framework_roles = [
            iam.Role(
                self,
                role_id,
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"Custom resource provider framework ({what}) of the {name} image build",
            )
            for role_id, what in (
                ("TriggerFrameworkOnEventRole", "onEvent"),
                ("TriggerFrameworkIsCompleteRole", "isComplete/onTimeout"),
            )
        ]
        self._framework_roles = framework_roles
        for framework_role in framework_roles:
            provider_logs.grant_write(framework_role)
        self.provider = cr.Provider(
            self,
            "TriggerProvider",
            on_event_handler=self.on_event_function,
            is_complete_handler=self.is_complete_function,
            query_interval=QUERY_INTERVAL,
            total_timeout=TOTAL_TIMEOUT,
            log_group=provider_logs,
            framework_on_event_role=framework_roles[0],
            framework_complete_and_timeout_role=framework_roles[1],
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                # Under /aws/vendedlogs/: Step Functions adds any other log group to the account's CloudWatch
                # Logs resource policy, limited to 5,120 characters; deploys then fail in accounts with
                # many logged state machines.
                destination=logs.LogGroup(
                    self,
                    "TriggerWaiterLogs",
                    log_group_name=f"/aws/vendedlogs/states/{name}-image-build-waiter",
                    retention=log_retention,
                    removal_policy=RemovalPolicy.DESTROY,
                ),
                level=sfn.LogLevel.ALL,
                # Never the execution data: the waiter is started with the whole CloudFormation request,
                # whose presigned ResponseURL would let any reader of the logs forge the resource's reply.
                include_execution_data=False,
            ),
        )
        # The handler fails with a precise message this long after the start, before the provider's
        # own (message-less) timeout.
        deadline_seconds = TOTAL_TIMEOUT.to_seconds() - 3 * QUERY_INTERVAL.to_seconds()
        # The build context at the source key before the pipeline exists: the execution CodePipeline starts
        # by itself when it creates the pipeline then builds this tag (the trigger waits for that run)
        # instead of failing on a missing source object.
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
        self.trigger = CustomResource(
            self,
            "Trigger",
            service_token=self.provider.service_token,
            resource_type="Custom::CodeBuildDockerImage",
            service_timeout=Duration.minutes(55),
            properties={
                "ImageTag": self.image_tag,
                "SourceVersion": self.source_object.get_att_string("VersionId"),
                "PipelineName": self.pipeline.pipeline_name,
                "SourceActionName": "Source",
                "ProjectName": self.project.project_name,
                "RepositoryName": self.repository.repository_name,
                "FunctionName": name,
                "WaitForBuild": "true" if wait_for_build else "false",
                "DeadlineSeconds": str(int(deadline_seconds)),
            },
        )
        # The trigger must not run before its permissions, and those of the build it starts, exist.
        self.trigger.node.add_dependency(self.trigger_role, self.build_role)

        # ---- the function -------------------------------------------------------------------------
        digest_hex = self.trigger.get_att_string("DigestHex")
        function_logs = logs.LogGroup(
            self,
            "FunctionLogs",
            log_group_name=f"/aws/lambda/{name}",
            retention=config.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = config.role
        if role is None:
            role = iam.Role(
                self,
                "FunctionRole",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"Execution role of {name}",
            )
        function_logs.grant_write(role)
        self.lambda_function = lambda_.DockerImageFunction(
            self,
            "Function",
            function_name=name,
            code=lambda_.DockerImageCode.from_ecr(self.repository, tag_or_digest=f"sha256:{digest_hex}"),
            architecture=PLATFORMS[platform],
            role=role,
            timeout=config.timeout_duration(),
            memory_size=config.memory_size,
            ephemeral_storage_size=config.ephemeral_storage_size(),
            environment=dict(config.environment),
            reserved_concurrent_executions=config.reserved_concurrent_executions,
            description=config.description,
            log_group=function_logs,
        )
        for key in sorted(config.tags):
            Tags.of(self.lambda_function).add(key, config.tags[key])
        self._condition_lambda_pull(function_arn)
        self.failure_rules = self._alarm_on_failures(alarm_topic, name, project_name)
        self._acknowledge_nag_findings()
        self._acknowledge_serverless_findings()

    def _condition_lambda_pull(self, function_arn: str) -> None:
        """Limit the repository policy statement CDK adds for ``lambda.amazonaws.com`` (BatchGetImage,
        GetDownloadUrlForLayer, BatchCheckLayerAvailability) to this function, by ``aws:sourceArn``.

        CDK renders that statement as the policy's only one and offers no way to condition it: an
        override of statement 0, which a test pins to the Lambda principal.
        """
        repository = self.repository.node.default_child
        assert isinstance(repository, ecr.CfnRepository)
        repository.add_property_override(
            "RepositoryPolicyText.Statement.0.Condition",
            {"StringLike": {"aws:sourceArn": [function_arn, f"{function_arn}:*"]}},
        )

    def _alarm_on_failures(self, topic: sns.ITopic | None, name: str, project_name: str) -> list[events.Rule]:
        """EventBridge rules: a FAILED pipeline execution and a FAILED build of this image reach ``topic``.

        In async mode nobody watches the build a deploy started: these are how a failure reaches a person.
        """
        if topic is None:
            return []
        field = events.EventField.from_path
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
            detail={"build-status": ["FAILED"], "project-name": [project_name]},
            message=(
                f"A CodeBuild build of the {name} image FAILED: {field('$.detail.build-id')}. Its log: "
                f"{field('$.detail.additional-information.logs.deep-link')}"
            ),
        )
        return [pipeline_failed, build_failed]

    def _acknowledge(self, scope: IConstruct, findings: Mapping[str, str]) -> None:
        """Acknowledge cdk-nag (AwsSolutions) findings on ``scope`` and its children, each with its reason."""
        Validations.of(scope).acknowledge(
            *[Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=why) for rule, why in findings.items()]
        )

    def _acknowledge_serverless_findings(self) -> None:
        """cdk-nag Serverless pack: the deploy-time trigger's functions and the provider framework.

        The construct's own parts, acknowledged here so that the construct used alone is clean; the
        image function is the caller's, whose invocation pattern decides DLQ and tracing.
        """
        deploy_dlq = (
            "Custom resource handler of the image build trigger: a failure is reported to CloudFormation, which "
            "fails the deployment with the error in the stack events; the request carries a presigned response "
            "URL that expires, so a DLQ copy could not be replayed."
        )
        deploy_tracing = (
            "Custom resource handler that runs a few times per deployment and logs to its own log group with "
            "retention; X-Ray would add wildcard xray permissions to its role for no insight."
        )
        findings: list[tuple[IConstruct, dict[str, str]]] = [
            (self.on_event_function, {"LambdaDLQ": deploy_dlq, "LambdaTracing": deploy_tracing}),
            (self.is_complete_function, {"LambdaDLQ": deploy_dlq, "LambdaTracing": deploy_tracing}),
            (
                self.provider,  # framework-onEvent/isComplete/onTimeout and the waiter state machine
                {
                    "LambdaDLQ": deploy_dlq,
                    "LambdaTracing": deploy_tracing,
                    "LambdaDefaultMemorySize": "Framework functions created by aws_cdk.custom_resources.Provider, "
                    "whose API has no memory setting; they only relay one CloudFormation event per deployment to "
                    "the trigger handlers, for which the default 128 MB is enough.",
                    "StepFunctionStateMachineXray": "The provider framework's waiter state machine only polls the "
                    "is-complete handler during deployments and logs ALL events (without execution data, which "
                    "would hold the presigned CloudFormation response URL); X-Ray adds cost and no insight here "
                    "(the same reason as its AwsSolutions-SF2 acknowledgement).",
                },
            ),
        ]
        for scope, rules in findings:
            Validations.of(scope).acknowledge(
                *[Acknowledgment(id=f"Serverless::Serverless-{rule}", reason=why) for rule, why in rules.items()]
            )

    def _acknowledge_nag_findings(self) -> None:
        stack = Stack.of(self)

        def ref(resource: IConstruct) -> str:
            child = resource.node.default_child
            assert isinstance(child, CfnElement)
            return stack.get_logical_id(child)

        def literal(value: str, pseudo: str) -> str:
            return f"<AWS::{pseudo}>" if Token.is_unresolved(value) else value

        logs_arn = (
            f"arn:{literal(stack.partition, 'Partition')}:logs:{literal(stack.region, 'Region')}:"
            f"{literal(stack.account, 'AccountId')}:log-group:"
        )
        bucket = ref(self.artifact_bucket)
        artifacts = f"IAM5[Resource::<{bucket}.Arn>/{self.artifacts_prefix}*]"
        self._acknowledge(
            self.artifact_bucket,
            {
                "S1": "Private, versioned build-artifact bucket written only by this pipeline and the trigger "
                "(IAM-scoped); a server access log bucket would cost more than the artifacts; CloudTrail data "
                "events cover audits when needed",
            },
        )
        self._acknowledge(
            self.project,
            {
                "CB4": "Build artifacts are build contexts and logs without secrets; they are encrypted with the "
                "AWS managed S3 key (alias/aws/s3); a customer managed KMS key would add cost and key policy "
                "management for no confidentiality gain",
            },
        )
        self._acknowledge(
            self.pipeline_role,
            {
                artifacts: "CodePipeline writes the source stage's output artifact under a key it generates per "
                "execution (<pipeline name, first 20 characters>/<artifact>/<id>): explicit object actions on "
                "that prefix of the construct's private artifact bucket only",
            },
        )
        self._acknowledge(
            self.build_role,
            {
                artifacts: "CodeBuild reads its input artifact at a key CodePipeline generates per execution "
                "(<pipeline name, first 20 characters>/<artifact>/<id>): s3:GetObject and s3:GetObjectVersion "
                "on that prefix of the construct's private artifact bucket only",
                "IAM5[Resource::*]": "ecr:GetAuthorizationToken does not support resource-level permissions "
                "(AWS requires Resource '*'); push/pull actions are scoped to this repository",
            },
        )
        self._acknowledge(
            self.trigger_role,
            {
                f"IAM5[Resource::{logs_arn}<{ref(self.build_log_group)}>:log-stream:*]": (
                    "The trigger reads the tail of a failed build's log: stream names are CodeBuild build ids, "
                    "known only at run time; limited to the streams of the build log group"
                ),
            },
        )
        on_event, is_complete = ref(self.on_event_function), ref(self.is_complete_function)
        version_wildcard = (
            "custom_resources.Provider grant: the framework may invoke any version of the handler function "
            "(<function arn>:*); scoped to this construct's handler"
        )
        framework = {
            f"IAM5[Resource::<{on_event}.Arn>:*]": version_wildcard,
            f"IAM5[Resource::<{is_complete}.Arn>:*]": version_wildcard,
        }
        for role in self._framework_roles:
            self._acknowledge(role, framework)
        waiter = self.provider.node.find_child("waiter-state-machine")
        framework_is_complete = ref(self.provider.node.find_child("framework-isComplete"))
        framework_on_timeout = ref(self.provider.node.find_child("framework-onTimeout"))
        self._acknowledge(
            waiter,
            {
                "SF2": "The provider framework's waiter state machine only loops over the is-complete handler; "
                "it logs ALL events (without execution data: its input holds the presigned CloudFormation "
                "response URL); X-Ray adds cost and no insight here",
                "IAM5[Resource::*]": "CloudWatch Logs vended-log delivery actions (logs:CreateLogDelivery and "
                "related) do not support resource-level permissions; required for the waiter's logging",
                f"IAM5[Resource::<{framework_is_complete}.Arn>:*]": version_wildcard,
                f"IAM5[Resource::<{framework_on_timeout}.Arn>:*]": version_wildcard,
            },
        )

    @property
    def image_uri(self) -> str:
        """``<repository uri>@sha256:<digest>`` the function is pinned to (a deploy-time token)."""
        return f"{self.repository.repository_uri}@sha256:{self.trigger.get_att_string('DigestHex')}"

    def _grant_pipeline(self, artifact_objects: str) -> None:
        """The pipeline role's permissions, as AWS documents them for an S3 source action, the artifact store
        and a CodeBuild action, each scoped to the object, prefix, bucket or project it is used on."""
        role = self.pipeline_role
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadSourceObject",
                actions=["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging"],
                resources=[self.artifact_bucket.arn_for_objects(self.source_key)],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="SourceAndArtifactBucket",
                actions=["s3:GetBucketVersioning", "s3:GetBucketAcl", "s3:GetBucketLocation"],
                resources=[self.artifact_bucket.bucket_arn],
            )
        )
        # The source stage writes its output artifact; tags read from the source object may come along.
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteArtifacts",
                actions=["s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:GetObjectVersion"],
                resources=[artifact_objects],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="RunBuild",
                actions=["codebuild:BatchGetBuilds", "codebuild:StartBuild", "codebuild:StopBuild"],
                resources=[self.project.project_arn],
            )
        )

    def _grant_trigger(self, function_arn: str) -> None:
        role = self.trigger_role
        self.on_event_function.log_group.grant_write(role)
        self.is_complete_function.log_group.grant_write(role)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[self.context_asset.bucket.arn_for_objects(self.context_asset.s3_object_key)],
            )
        )
        # HeadObject (s3:GetObject) tells whether the source key already holds this tag (a repeated request).
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[self.artifact_bucket.arn_for_objects(self.source_key)],
            )
        )
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
                resources=[Stack.of(self).format_arn(service="codepipeline", resource=self.pipeline_name)],
            )
        )
        self.repository.grant(role, "ecr:DescribeImages")
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["codebuild:BatchGetBuilds", "codebuild:ListBuildsForProject", "codebuild:StopBuild"],
                resources=[self.project.project_arn],
            )
        )
        build_log_streams = Stack.of(self).format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{self.build_log_group.log_group_name}:log-stream:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        # Build log stream names are build ids, known only at run time: the streams of this one group.
        role.add_to_policy(iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[build_log_streams]))
        if not self.wait_for_build:
            role.add_to_policy(iam.PolicyStatement(actions=["lambda:GetFunction"], resources=[function_arn]))
