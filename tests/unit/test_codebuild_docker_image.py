"""CodeBuildDockerImage synthesized in a stack of its own: every resource and property the issue asks
for, IAM scoping, cdk-nag (AwsSolutions) and cfn-lint, deterministic synth.

One small test stack per mode is synthesized once per module (fixtures) over a temporary build
context with a fake Dockerfile, so these tests do not depend on the real image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Capture, Match, Template
from cdk_nag import AwsSolutionsChecks

from constructs.codebuild_docker_image import CodeBuildDockerImage, LambdaConfig
from constructs.docker_image_buildspec import build_spec_object

pytestmark = pytest.mark.unit

FUNCTION = "receipt-labeling-test-process"
DOCKERFILE = "lambdas/process_receipt/Dockerfile"
# IAM actions granted on Resource "*": ECR's registry token, and CloudWatch Logs' vended log delivery
# used by the provider's waiter state machine logging (no resource-level permissions for either).
# Lambda's JSON log format, on the image function and the trigger's handlers.
JSON_LOGGING = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"}
STAR_ONLY_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "ecr-public:GetAuthorizationToken",
    "sts:GetServiceBearerToken",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    # AWS's documented Step Functions logging policy also lists these two on "*"; CDK emits it as is.
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}


def make_context(root: Path) -> Path:
    files = {
        "receipt_dynamo/__init__.py": "from .client import DynamoClient\n",
        "receipt_dynamo/client.py": "class DynamoClient: ...\n",
        "receipt_label/__init__.py": "from .graph import label_receipt\n",
        "receipt_label/graph.py": "def label_receipt(details, *, llm): ...\n",
        DOCKERFILE: "FROM public.ecr.aws/lambda/python:3.13\nCOPY receipt_dynamo receipt_dynamo\n",
        "lambdas/process_receipt/handler.py": "def lambda_handler(event, context): ...\n",
        "lambdas/process_receipt/requirements.txt": "pydantic==2.11.0\n",
        "lambdas/list_receipts/handler.py": "def lambda_handler(event, context): ...\n",
        "README.md": "# readme\n",
        "tests/test_x.py": "def test_x(): ...\n",
        "receipt_label/__pycache__/graph.cpython-313.pyc": "\0compiled",
        ".git/HEAD": "ref: refs/heads/main\n",
        "cdk.out/manifest.json": "{}\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def synth(
    outdir: Path, context_dir: Path, *, nag: bool = False, alarm_topic: bool = False, **overrides: Any
) -> tuple[CodeBuildDockerImage, Template, dict[str, Any], Path]:
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "ImageOnly", env=cdk.Environment(account="123456789012", region="us-east-1"))
    props: dict[str, Any] = {
        "dockerfile_path": DOCKERFILE,
        "build_context_path": str(context_dir),
        "lambda_function_name": FUNCTION,
        "lambda_config": LambdaConfig(
            timeout=600,
            memory_size=1536,
            ephemeral_storage=2048,
            environment={"DYNAMODB_TABLE_NAME": "receipts"},
            tags={"component": "process-receipt"},
            reserved_concurrent_executions=5,
        ),
        "build_args": {"PYTHON_VERSION": "3.13"},
    }
    props.update(overrides)
    if alarm_topic:
        props["alarm_topic"] = sns.Topic(
            stack, "Alarms", enforce_ssl=True, master_key=kms.Key(stack, "AlarmKey", enable_key_rotation=True)
        )
    image = CodeBuildDockerImage(stack, "Image", **props)
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    template_path = outdir / "ImageOnly.template.json"
    return image, Template.from_stack(stack), json.loads(template_path.read_text()), template_path


@pytest.fixture(scope="module")
def context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_context(tmp_path_factory.mktemp("context"))


@pytest.fixture(scope="module")
def async_stack(
    tmp_path_factory: pytest.TempPathFactory, context_dir: Path
) -> tuple[CodeBuildDockerImage, Template, dict[str, Any], Path]:
    """Default mode (async), arm64, with cdk-nag's AwsSolutions pack on the app."""
    return synth(tmp_path_factory.mktemp("cdk.out"), context_dir, nag=True)


@pytest.fixture(scope="module")
def wait_stack(
    tmp_path_factory: pytest.TempPathFactory, context_dir: Path
) -> tuple[CodeBuildDockerImage, Template, dict[str, Any], Path]:
    """wait_for_build=True on linux/amd64, with a caller-provided role, DESTROY removal and an alarm topic."""
    return synth(
        tmp_path_factory.mktemp("cdk.out"),
        context_dir,
        nag=True,
        alarm_topic=True,
        wait_for_build=True,
        platform="linux/amd64",
        removal_policy=cdk.RemovalPolicy.DESTROY,
        lambda_config={"timeout": 30, "memory_size": 512, "role": None},
    )


def resources(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == kind}


def only(raw: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = resources(raw, kind)
    assert len(found) == 1, f"expected one {kind}, got {sorted(found)}"
    return next(iter(found.items()))


def statements(raw: dict[str, Any], role_logical_id: str) -> list[dict[str, Any]]:
    """The statements of every policy attached to the role ``role_logical_id``."""
    policies = Template.from_json(raw).find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": Match.array_with([{"Ref": role_logical_id}])}}
    )
    return [statement for p in policies.values() for statement in p["Properties"]["PolicyDocument"]["Statement"]]


def actions_of(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def arn(rest: str) -> dict[str, Any]:
    """An ARN as CDK renders it for a pinned environment: ``arn:<AWS::Partition>:<rest>``."""
    return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":{rest}"]]}


def logical_id(image_construct: Any) -> str:
    return cdk.Stack.of(image_construct).get_logical_id(image_construct.node.default_child)


# ---- resources and properties -------------------------------------------------------------------


def test_repository_scans_on_push_keeps_tags_immutable_and_expires_old_images(async_stack: Any) -> None:
    _image, template, _raw, _ = async_stack
    template.resource_count_is("AWS::ECR::Repository", 1)
    policy = Capture()
    template.has_resource(
        "AWS::ECR::Repository",
        {
            "Properties": Match.object_like(
                {
                    "ImageScanningConfiguration": {"ScanOnPush": True},
                    "ImageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                    "ImageTagMutabilityExclusionFilters": [
                        {
                            "ImageTagMutabilityExclusionFilterType": "WILDCARD",
                            "ImageTagMutabilityExclusionFilterValue": "buildcache",
                        }
                    ],
                    "LifecyclePolicy": {"LifecyclePolicyText": policy},
                }
            ),
            "DeletionPolicy": "Retain",
        },
    )
    rules = json.loads(policy.as_string())["rules"]
    untagged = next(r for r in rules if r["selection"]["tagStatus"] == "untagged")
    assert untagged["selection"] | {} == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countNumber": 1,
        "countUnit": "days",
    }
    cache, *_, tagged = sorted(rules, key=lambda r: r["rulePriority"])
    assert tagged["selection"]["tagStatus"] == "tagged" and tagged["selection"]["tagPatternList"] == ["*"]
    assert tagged["selection"]["countType"] == "imageCountMoreThan"
    assert tagged["selection"]["countNumber"] == 10
    assert all(r["action"] == {"type": "expire"} for r in rules)
    # ECR: "an image that matches the tagging requirements of a rule cannot be expired by a rule with a lower
    # priority". The registry cache matches the highest-priority rule, which keeps its one image, so the
    # content-tag count never expires it and it never takes the place of a content-tagged image.
    assert cache["selection"] == {
        "tagStatus": "tagged",
        "tagPatternList": ["buildcache"],
        "countType": "imageCountMoreThan",
        "countNumber": 1,
    }
    assert cache["rulePriority"] < min(r["rulePriority"] for r in rules if r is not cache)


def test_keep_images_sets_the_lifecycle_count(wait_stack: Any) -> None:
    _, template, _, _ = wait_stack
    template.resource_count_is("AWS::ECR::Repository", 1)
    policy = Capture()
    template.has_resource(
        "AWS::ECR::Repository",
        {
            "DeletionPolicy": "Delete",  # removal_policy=DESTROY
            "Properties": Match.object_like(
                {"EmptyOnDelete": True, "LifecyclePolicy": {"LifecyclePolicyText": policy}}
            ),
        },
    )
    rules = json.loads(policy.as_string())["rules"]
    assert [r["selection"].get("countNumber") for r in rules] == [1, 1, 10]


def test_artifact_bucket_is_versioned_encrypted_private_tls_only_and_expires_old_versions(async_stack: Any) -> None:
    _image, template, _raw, _ = async_stack
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                                "Status": "Enabled",
                            }
                        )
                    ]
                )
            },
        },
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ),
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"NumericLessThan": {"s3:TlsVersion": 1.2}},
                            }
                        ),
                    ]
                )
            }
        },
    )


def artifact_lifecycle_rules(image: CodeBuildDockerImage, raw: dict[str, Any]) -> list[dict[str, Any]]:
    bucket = raw["Resources"][logical_id(image.artifact_bucket)]["Properties"]
    return list(bucket["LifecycleConfiguration"]["Rules"])


def test_pipeline_artifacts_expire_after_30_days_but_never_the_source_key(async_stack: Any) -> None:
    image, _template, raw, _ = async_stack
    expiring = [r for r in artifact_lifecycle_rules(image, raw) if "ExpirationInDays" in r]
    assert expiring == [
        {
            "Id": "expire-pipeline-artifacts",
            "Prefix": image.artifacts_prefix,
            "ExpirationInDays": 30,
            "Status": "Enabled",
        }
    ]
    assert image.artifacts_prefix == "receipt-labeling-tes/"  # the pipeline's name, cut to 20 characters
    assert not image.source_key.startswith(image.artifacts_prefix)


def test_no_artifact_expiration_when_the_source_key_is_under_the_artifact_prefix(
    tmp_path: Path, context_dir: Path
) -> None:
    """A 20-character function name: CodePipeline's artifact prefix is the source key's folder."""
    name = "twenty-chars-process"
    assert len(name) == 20
    image, _template, raw, _ = synth(tmp_path, context_dir, lambda_function_name=name)
    assert image.source_key.startswith(image.artifacts_prefix)
    rules = artifact_lifecycle_rules(image, raw)
    assert [r["Id"] for r in rules] == ["expire-old-versions"]
    assert not [r for r in rules if "ExpirationInDays" in r]


def test_project_is_a_privileged_arm_al2023_build_with_its_own_log_group(async_stack: Any) -> None:
    image, template, raw, _ = async_stack
    log_group_id = logical_id(image.build_log_group)
    template.has_resource_properties(
        "AWS::CodeBuild::Project",
        {
            "Name": f"{FUNCTION}-image-build",
            "Environment": Match.object_like(
                {
                    "Type": "ARM_CONTAINER",
                    "Image": "aws/codebuild/amazonlinux-aarch64-standard:3.0",
                    "PrivilegedMode": True,
                    "ComputeType": "BUILD_GENERAL1_SMALL",
                    "EnvironmentVariables": Match.array_with(
                        [
                            {"Name": "PLATFORM", "Type": "PLAINTEXT", "Value": "linux/arm64"},
                            {"Name": "DOCKERFILE", "Type": "PLAINTEXT", "Value": DOCKERFILE},
                            {"Name": "CACHE_TAG", "Type": "PLAINTEXT", "Value": "buildcache"},
                            {"Name": "FUNCTION_NAME", "Type": "PLAINTEXT", "Value": FUNCTION},
                        ]
                    ),
                }
            ),
            "TimeoutInMinutes": 30,
            "QueuedTimeoutInMinutes": 10,
            "LogsConfig": {"CloudWatchLogs": {"GroupName": {"Ref": log_group_id}, "Status": "ENABLED"}},
        },
    )
    assert raw["Resources"][log_group_id]["Properties"]["RetentionInDays"] == 30


def test_buildspec_is_the_tested_command_list_with_the_build_args(async_stack: Any) -> None:
    _, _, raw, _ = async_stack
    _, project = only(raw, "AWS::CodeBuild::Project")
    spec = json.loads(project["Properties"]["Source"]["BuildSpec"])
    assert spec == build_spec_object({"PYTHON_VERSION": "3.13"})
    build = " ".join(spec["phases"]["build"]["commands"])
    assert "--build-arg PYTHON_VERSION=3.13" in build
    assert all(phase["on-failure"] == "ABORT" for phase in spec["phases"].values())


def test_pipeline_is_v2_superseded_unpolled_s3_version_source_then_codebuild(async_stack: Any) -> None:
    image, template, raw, _ = async_stack
    bucket_id, project_id = logical_id(image.artifact_bucket), logical_id(image.project)
    template.has_resource_properties(
        "AWS::CodePipeline::Pipeline",
        {
            "Name": f"{FUNCTION}-image",
            "PipelineType": "V2",
            "ExecutionMode": "SUPERSEDED",
            "RestartExecutionOnUpdate": False,
            "ArtifactStore": {"Location": {"Ref": bucket_id}, "Type": "S3"},
            "Variables": [
                Match.object_like({"Name": "IMAGE_TAG", "DefaultValue": image.image_tag}),
                Match.object_like({"Name": "UPDATE_FUNCTION", "DefaultValue": "true"}),
            ],
            "Stages": [
                {
                    "Name": "Source",
                    "Actions": [
                        Match.object_like(
                            {
                                "Name": "Source",
                                "ActionTypeId": Match.object_like({"Category": "Source", "Provider": "S3"}),
                                "Configuration": {
                                    "S3Bucket": {"Ref": bucket_id},
                                    "S3ObjectKey": f"{FUNCTION}/context.zip",
                                    "PollForSourceChanges": False,
                                },
                            }
                        )
                    ],
                },
                {
                    "Name": "Build",
                    "Actions": [
                        Match.object_like(
                            {
                                "Name": "Build",
                                "ActionTypeId": Match.object_like({"Category": "Build", "Provider": "CodeBuild"}),
                                "Configuration": Match.object_like({"ProjectName": {"Ref": project_id}}),
                            }
                        )
                    ],
                },
            ],
        },
    )
    _, pipeline = only(raw, "AWS::CodePipeline::Pipeline")
    build_env = json.loads(pipeline["Properties"]["Stages"][1]["Actions"][0]["Configuration"]["EnvironmentVariables"])
    assert {(v["name"], v["value"]) for v in build_env} == {
        ("IMAGE_TAG", "#{variables.IMAGE_TAG}"),
        ("UPDATE_FUNCTION", "#{variables.UPDATE_FUNCTION}"),
    }
    # No polling and no S3 event rule: only the trigger custom resource starts the pipeline.
    template.resource_count_is("AWS::Events::Rule", 0)
    template.resource_count_is("AWS::CloudTrail::Trail", 0)


def test_trigger_custom_resource_carries_the_tag_asset_and_source_and_ends_within_the_hour(async_stack: Any) -> None:
    image, template, raw, _ = async_stack
    assert len(image.image_tag) == 32 and int(image.image_tag, 16) >= 0
    props = Capture()
    template.has_resource("Custom::CodeBuildDockerImage", {"Properties": props})
    value = props.as_object()
    assert value["ImageTag"] == image.image_tag
    assert value["SourceVersion"] == {"Fn::GetAtt": [logical_id(image.source_object), "VersionId"]}
    assert value["PipelineName"] == {"Ref": logical_id(image.pipeline)}
    assert value["RepositoryName"] == {"Ref": logical_id(image.repository)}
    assert value["FunctionName"] == FUNCTION
    assert value["ProjectName"] == {"Ref": logical_id(image.project)}
    assert value["WaitForBuild"] == "false"
    source = Capture()
    template.has_resource("Custom::CodeBuildDockerImageSource", {"Properties": source})
    assert source.as_object() == {
        "ServiceToken": value["ServiceToken"],  # the same provider
        "ImageTag": image.image_tag,
        "AssetBucket": "cdk-hnb659fds-assets-123456789012-us-east-1",
        "AssetKey": image.context_asset.s3_object_key,
        "SourceBucket": {"Ref": logical_id(image.artifact_bucket)},
        "SourceKey": f"{FUNCTION}/context.zip",
    }
    # CloudFormation's custom resource limit is one hour: the resource, the provider's waiter and the
    # handler's own deadline all end before it.
    assert int(value["ServiceTimeout"]) < 3600
    _, machine = only(raw, "AWS::StepFunctions::StateMachine")
    definition = "".join(p for p in machine["Properties"]["DefinitionString"]["Fn::Join"][1] if isinstance(p, str))
    retry = re.search(r'"IntervalSeconds":(\d+),"MaxAttempts":(\d+),"BackoffRate":1\b', definition)
    assert retry, definition
    waiter_seconds = int(retry[1]) * int(retry[2])
    assert waiter_seconds < int(value["ServiceTimeout"]) < 3600
    assert int(value["DeadlineSeconds"]) < waiter_seconds
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    # The waiter's input is the CloudFormation request with its presigned ResponseURL: never logged.
    assert machine["Properties"]["LoggingConfiguration"]["IncludeExecutionData"] is False


def test_trigger_handlers_are_plain_python_from_lambdas_folder(async_stack: Any) -> None:
    image, template, raw, out = async_stack
    for handler, timeout in (("handler.on_event", 300), ("handler.is_complete", 60)):
        template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": handler,
                "Runtime": "python3.14",
                "Architectures": ["arm64"],
                "Timeout": timeout,
                "LoggingConfig": Match.object_like(JSON_LOGGING),
            },
        )
    key = raw["Resources"][logical_id(image.on_event_function)]["Properties"]["Code"]["S3Key"]
    manifest = json.loads((out.parent / "ImageOnly.assets.json").read_text())
    asset_dir = out.parent / manifest["files"][key.removesuffix(".zip")]["source"]["path"]
    assert sorted(p.name for p in asset_dir.iterdir()) == ["handler.py"]


def test_function_is_pinned_to_the_trigger_digest_with_the_lambda_config(async_stack: Any) -> None:
    image, template, raw, _ = async_stack
    trigger_id = logical_id(image.trigger)
    uri = Capture()
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": FUNCTION,
            "PackageType": "Image",
            "Architectures": ["arm64"],
            "Code": {"ImageUri": uri},
            "MemorySize": 1536,
            "Timeout": 600,
            "EphemeralStorage": {"Size": 2048},
            "ReservedConcurrentExecutions": 5,
            "Environment": {"Variables": {"DYNAMODB_TABLE_NAME": "receipts"}},
            "Tags": Match.array_with([{"Key": "component", "Value": "process-receipt"}]),
            "LoggingConfig": {
                "LogGroup": {"Ref": logical_id(image.lambda_function.log_group)},
                **JSON_LOGGING,
            },
        },
    )
    parts = uri.as_object()["Fn::Join"][1]
    assert parts[-2:] == ["@sha256:", {"Fn::GetAtt": [trigger_id, "DigestHex"]}]
    assert {"Ref": logical_id(image.repository)} in parts
    # The function waits for the trigger (it needs the digest), never the other way round.
    function_id = logical_id(image.lambda_function)
    assert function_id not in json.dumps(raw["Resources"][trigger_id])


def test_wait_mode_on_amd64(wait_stack: Any) -> None:
    image, template, raw, _ = wait_stack
    template.has_resource_properties("AWS::Lambda::Function", {"FunctionName": FUNCTION, "Architectures": ["x86_64"]})
    template.has_resource_properties(
        "AWS::CodeBuild::Project",
        {"Environment": Match.object_like({"Type": "LINUX_CONTAINER", "PrivilegedMode": True})},
    )
    template.has_resource_properties("Custom::CodeBuildDockerImage", {"WaitForBuild": "true"})
    template.has_resource_properties(
        "AWS::CodePipeline::Pipeline",
        {"Variables": Match.array_with([Match.object_like({"Name": "UPDATE_FUNCTION", "DefaultValue": "false"})])},
    )
    # CloudFormation updates the function in this mode: neither the build nor the trigger touch it.
    assert "lambda:" not in json.dumps(statements(raw, logical_id(image.project.role)))
    assert "lambda:" not in json.dumps(statements(raw, logical_id(image.trigger_role)))
    assert image.image_tag != arm64_tag_of(image)  # the platform is part of the tag


def arm64_tag_of(image: CodeBuildDockerImage) -> str:
    """The arm64 tag of the same context (the platform is part of the tag)."""
    from constructs.docker_build_context import resolve_context

    return resolve_context(
        root=image.build_context.root,
        dockerfile_path=DOCKERFILE,
        source_paths=None,
        build_args={"PYTHON_VERSION": "3.13"},
        platform="linux/arm64",
    ).image_tag


def test_caller_role_gets_log_permissions(tmp_path: Path, context_dir: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "RoleStack")
    role = iam.Role(stack, "CallerRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    image = CodeBuildDockerImage(
        stack,
        "Image",
        dockerfile_path=str(context_dir / DOCKERFILE),
        build_context_path=str(context_dir),
        lambda_function_name="fn",
        lambda_config=LambdaConfig(role=role),
    )
    raw = Template.from_stack(stack).to_json()
    function = raw["Resources"][logical_id(image.lambda_function)]
    assert function["Properties"]["Role"] == {"Fn::GetAtt": [logical_id(role), "Arn"]}
    writes = [s for s in statements(raw, logical_id(role)) if "logs:PutLogEvents" in actions_of(s)]
    assert writes and writes[0]["Resource"] == {"Fn::GetAtt": [logical_id(image.lambda_function.log_group), "Arn"]}


# ---- IAM scoping -----------------------------------------------------------------------------------


def test_no_wildcard_resource_except_where_aws_requires_it(async_stack: Any) -> None:
    _, _, raw, _ = async_stack
    for name, policy in resources(raw, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if statement["Resource"] == "*":
                assert actions_of(statement) <= STAR_ONLY_ACTIONS, (name, statement)
    assert not resources(raw, "AWS::IAM::ManagedPolicy")
    for role in resources(raw, "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]


def test_trigger_role_is_scoped_to_this_asset_bucket_pipeline_repository_project_and_function(
    async_stack: Any,
) -> None:
    image, _, raw, _ = async_stack
    by_action: dict[str, Any] = {}
    s3_get: list[Any] = []
    for statement in statements(raw, logical_id(image.trigger_role)):
        for action in actions_of(statement):
            by_action[action] = statement["Resource"]
            if action == "s3:GetObject":
                s3_get.append(statement["Resource"])
    bucket = logical_id(image.artifact_bucket)
    source_object = {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, f"/{FUNCTION}/context.zip"]]}
    assert by_action["s3:PutObject"] == source_object
    asset_object, head_source = s3_get  # GetObject of the asset; HeadObject of the source key
    assert image.context_asset.s3_object_key in json.dumps(asset_object)
    assert "cdk-hnb659fds-assets" in json.dumps(asset_object)
    assert head_source == source_object
    for action in by_action:
        if action.startswith("codepipeline:"):
            # The literal name, not a Ref: the pipeline depends on the source resource run by this role.
            assert by_action[action] == arn(f"codepipeline:us-east-1:123456789012:{image.pipeline_name}"), action
        if action.startswith("codebuild:"):
            assert by_action[action] == {"Fn::GetAtt": [logical_id(image.project), "Arn"]}, action
    assert by_action["ecr:DescribeImages"] == {"Fn::GetAtt": [logical_id(image.repository), "Arn"]}
    streams = by_action["logs:GetLogEvents"]["Fn::Join"][1]
    assert {"Ref": logical_id(image.build_log_group)} in streams and streams[-1] == ":log-stream:*"
    assert json.dumps(by_action["lambda:GetFunction"]).endswith(f':function:{FUNCTION}"]]}}')
    assert set(by_action) == {
        "s3:PutObject",
        "s3:GetObject",
        "codepipeline:StartPipelineExecution",
        "codepipeline:GetPipelineExecution",
        "codepipeline:ListActionExecutions",
        "codepipeline:ListPipelineExecutions",
        "codepipeline:StopPipelineExecution",
        "ecr:DescribeImages",
        "codebuild:BatchGetBuilds",
        "codebuild:ListBuildsForProject",
        "codebuild:StopBuild",
        "logs:GetLogEvents",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "lambda:GetFunction",
    }


def test_build_role_pushes_to_this_repository_and_updates_only_this_function(async_stack: Any) -> None:
    image, _, raw, _ = async_stack
    repo_arn = {"Fn::GetAtt": [logical_id(image.repository), "Arn"]}
    build = statements(raw, logical_id(image.build_role))
    push = next(s for s in build if "ecr:PutImage" in actions_of(s))
    assert push["Resource"] == repo_arn
    assert {"ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"} <= actions_of(push)
    update = next(s for s in build if "lambda:UpdateFunctionCode" in actions_of(s))
    assert json.dumps(update["Resource"]).endswith(f':function:{FUNCTION}"]]}}')
    assert not any(a.startswith(("lambda:", "ecr:Put")) and s["Resource"] == "*" for s in build for a in actions_of(s))


def test_no_iam_action_is_a_wildcard(async_stack: Any, wait_stack: Any) -> None:
    # CDK's automatic S3 grants (s3:GetObject*, s3:GetBucket*, s3:List*, s3:DeleteObject*, s3:Abort*) are
    # replaced by explicit actions: the build and pipeline roles are handed to the L2s without policy updates.
    for _, _, raw, _ in (async_stack, wait_stack):
        found = [
            (name, action)
            for name, policy in resources(raw, "AWS::IAM::Policy").items()
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            for action in actions_of(statement)
        ]
        assert len(found) > 30
        assert [(name, action) for name, action in found if "*" in action] == []


def test_build_and_pipeline_roles_use_explicit_s3_actions_on_the_source_key_and_artifact_prefix(
    async_stack: Any,
) -> None:
    image, _, raw, _ = async_stack
    bucket_arn = {"Fn::GetAtt": [logical_id(image.artifact_bucket), "Arn"]}
    # CodePipeline's artifact keys start with the first 20 characters of the pipeline name.
    assert image.artifacts_prefix == f"{FUNCTION}-image"[:20] + "/" == "receipt-labeling-tes/"

    def objects(key: str) -> str:
        return json.dumps({"Fn::Join": ["", [bucket_arn, f"/{key}"]]})

    def s3_grants(role: Any) -> dict[str, set[str]]:
        return {
            json.dumps(s["Resource"]): actions_of(s)
            for s in statements(raw, logical_id(role))
            if any(a.startswith("s3:") for a in actions_of(s))
        }

    assert s3_grants(image.pipeline_role) == {
        objects(f"{FUNCTION}/context.zip"): {
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:GetObjectTagging",
            "s3:GetObjectVersionTagging",
        },
        json.dumps(bucket_arn): {"s3:GetBucketVersioning", "s3:GetBucketAcl", "s3:GetBucketLocation"},
        objects("receipt-labeling-tes/*"): {
            "s3:PutObject",
            "s3:PutObjectTagging",
            "s3:GetObject",
            "s3:GetObjectVersion",
        },
    }
    assert s3_grants(image.build_role) == {
        objects("receipt-labeling-tes/*"): {"s3:GetObject", "s3:GetObjectVersion"},
        json.dumps(bucket_arn): {"s3:GetBucketAcl", "s3:GetBucketLocation"},
    }
    others = [
        s
        for s in statements(raw, logical_id(image.pipeline_role))
        if not s["Sid"].startswith(("Read", "Source", "Write"))
    ]
    assert others == [
        {
            "Action": ["codebuild:BatchGetBuilds", "codebuild:StartBuild", "codebuild:StopBuild"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [logical_id(image.project), "Arn"]},
            "Sid": "RunBuild",
        }
    ]
    # The L2 constructs run with these roles; no other role was created for them.
    (_, project), (_, pipeline) = only(raw, "AWS::CodeBuild::Project"), only(raw, "AWS::CodePipeline::Pipeline")
    assert project["Properties"]["ServiceRole"] == {"Fn::GetAtt": [logical_id(image.build_role), "Arn"]}
    assert pipeline["Properties"]["RoleArn"] == {"Fn::GetAtt": [logical_id(image.pipeline_role), "Arn"]}
    services = sorted(
        json.dumps(r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"])
        for r in resources(raw, "AWS::IAM::Role").values()
    )
    assert services.count('{"Service": "codebuild.amazonaws.com"}') == 1
    assert services.count('{"Service": "codepipeline.amazonaws.com"}') == 1
    # The first build never starts before its role's permissions exist.
    trigger = only(raw, "Custom::CodeBuildDockerImage")[1]
    build_policy = logical_id(image.build_role.node.find_child("DefaultPolicy"))
    assert {logical_id(image.build_role), build_policy} <= set(trigger["DependsOn"])


# ---- static analysis -------------------------------------------------------------------------------


def test_cdk_nag_aws_solutions_has_no_unacknowledged_finding(async_stack: Any, wait_stack: Any) -> None:
    # A finding fails app.synth() itself (the fixtures would error); the report is checked as well.
    for stack in (async_stack, wait_stack):
        report = json.loads((stack[3].parent / "validation-report.json").read_text())
        plugins = {p["pluginName"]: p for p in report["pluginReports"]}
        violations = plugins["AwsSolutions"]["violations"]
        assert plugins["AwsSolutions"]["conclusion"] == "success", json.dumps(violations)[:3000]
        assert violations == []


def test_every_acknowledgement_has_a_reason(async_stack: Any) -> None:
    image, _, _, _ = async_stack
    acknowledged: dict[str, str] = {}
    for construct in image.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                acknowledged.update({f"{construct.node.path}:{k}": v for k, v in entry.data.items()})
    assert acknowledged, "expected the construct's cdk-nag acknowledgements in construct metadata"
    for rule, reason in acknowledged.items():
        assert ":AwsSolutions::AwsSolutions-" in rule or ":Serverless::Serverless-" in rule
        assert len(reason) >= 50, (rule, reason)
    # The Serverless pack: only the construct's own deploy-time functions and the provider framework, never
    # the image function (the caller's, whose invocation pattern decides DLQ and tracing).
    serverless = {rule for rule in acknowledged if ":Serverless::" in rule}
    assert {rule.split(":Serverless::", 1)[1] for rule in serverless} == {
        "Serverless-LambdaDLQ",
        "Serverless-LambdaTracing",
        "Serverless-LambdaDefaultMemorySize",
        "Serverless-StepFunctionStateMachineXray",
    }
    assert not [rule for rule in serverless if "/Function:" in rule or rule.endswith("/Function")]
    rules = {rule.split(":AwsSolutions::", 1)[1] for rule in acknowledged if ":AwsSolutions::" in rule}
    # Each kind of acknowledgement, and nothing broader (no whole-rule IAM5 acknowledgement).
    assert {r.split("[")[0] for r in rules} == {
        "AwsSolutions-S1",
        "AwsSolutions-CB4",
        "AwsSolutions-IAM5",
        "AwsSolutions-SF2",
    }
    assert all("[" in r for r in rules if r.startswith("AwsSolutions-IAM5"))


def test_cfn_lint_is_clean(async_stack: Any, wait_stack: Any) -> None:
    from cfnlint.api import ManualArgs, lint_file

    # W3005: CDK adds an explicit DependsOn on a role (so its default policy exists first) next to
    # the GetAtt of the same role; redundant but harmless, and generated by CDK, not by us.
    config = ManualArgs(regions=["us-east-1"], ignore_checks=["W3005"])
    for stack in (async_stack, wait_stack):
        matches = lint_file(stack[3], config=config)
        assert [str(m) for m in matches] == []


# ---- build context asset and determinism ----------------------------------------------------------


def test_context_asset_is_the_minimal_staged_directory(async_stack: Any) -> None:
    _image, _, _, template_path = async_stack
    manifest = json.loads((template_path.parent / "ImageOnly.assets.json").read_text())
    sources = {k: v["source"] for k, v in manifest["files"].items()}
    context_sources = [s for s in sources.values() if s.get("packaging") == "zip"]
    staged = [template_path.parent / s["path"] for s in context_sources]
    shipped = [
        sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) for d in staged if (d / DOCKERFILE).exists()
    ]
    assert shipped == [
        sorted(
            [
                DOCKERFILE,
                "lambdas/process_receipt/handler.py",
                "lambdas/process_receipt/requirements.txt",
                "receipt_dynamo/__init__.py",
                "receipt_dynamo/client.py",
                "receipt_label/__init__.py",
                "receipt_label/graph.py",
            ]
        )
    ]


def test_two_synths_are_identical_and_unrelated_edits_keep_the_asset(
    async_stack: Any, context_dir: Path, tmp_path: Path
) -> None:
    image, _, _raw, template_path = async_stack
    (context_dir / "README.md").write_text("# readme, edited\n")
    (context_dir / "tests" / "test_x.py").write_text("def test_y(): ...\n")
    second = synth(tmp_path / "second", context_dir, nag=True)
    assert second[3].read_text() == template_path.read_text()
    assert second[0].image_tag == image.image_tag


def test_invalid_props_are_rejected(context_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "Dockerfile"
    outside.write_text("FROM scratch\n")
    stack = cdk.Stack(cdk.App(), "Invalid")
    base: dict[str, Any] = {
        "dockerfile_path": DOCKERFILE,
        "build_context_path": str(context_dir),
        "lambda_function_name": "fn",
        "lambda_config": LambdaConfig(),
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"platform": "linux/s390x"}, "platform"),
        ({"keep_images": 1}, "keep_images"),
        ({"build_timeout": cdk.Duration.minutes(55)}, "build_timeout"),
        ({"dockerfile_path": "missing/Dockerfile"}, "Dockerfile"),
        ({"dockerfile_path": str(outside)}, "outside the build context"),
        ({"source_paths": ["receipt_dynamo", "nope"]}, "does not exist"),
        ({"lambda_function_name": "x" * 65}, "lambda_function_name"),
        ({"lambda_function_name": "has space"}, "lambda_function_name"),
        ({"lambda_function_name": cdk.Fn.ref("AWS::StackName")}, "lambda_function_name"),
    ]
    for index, (override, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            CodeBuildDockerImage(stack, f"Bad{index}", **(base | override))


# ---- the real cloud: creation order, trust, logging and alarms ---------------------------------------


def test_the_pipeline_is_created_after_its_source_object_exists(async_stack: Any) -> None:
    """CodePipeline starts an execution when it creates a pipeline: the source resource (which copies the
    context to the source key) comes first, so that run builds the current tag instead of failing."""
    image, _, raw, _ = async_stack
    pipeline = raw["Resources"][logical_id(image.pipeline)]
    source_id = logical_id(image.source_object)
    assert source_id in pipeline["DependsOn"]
    assert raw["Resources"][source_id]["Type"] == "Custom::CodeBuildDockerImageSource"
    # Its default IMAGE_TAG is this tag: the creation run builds exactly what the trigger asks for.
    variables = {v["Name"]: v["DefaultValue"] for v in pipeline["Properties"]["Variables"]}
    assert variables["IMAGE_TAG"] == image.image_tag
    # The trigger comes after both: it reads the source version and starts (or adopts) the execution.
    trigger = json.dumps(raw["Resources"][logical_id(image.trigger)]["Properties"])
    assert source_id in trigger and logical_id(image.pipeline) in trigger


def test_codebuild_may_assume_the_build_role_only_for_this_project_and_account(async_stack: Any) -> None:
    """Confused-deputy guard (aws:SourceAccount, aws:SourceArn) in the CodeBuild service role's trust."""
    image, template, _, _ = async_stack
    trust = {
        "Statement": [
            {
                "Action": "sts:AssumeRole",
                "Effect": "Allow",
                "Principal": {"Service": "codebuild.amazonaws.com"},
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": "123456789012"},
                    "ArnLike": {
                        "aws:SourceArn": arn(f"codebuild:us-east-1:123456789012:project/{FUNCTION}-image-build")
                    },
                },
            }
        ],
        "Version": "2012-10-17",
    }
    roles = template.find_resources(
        "AWS::IAM::Role", {"Properties": Match.object_like({"AssumeRolePolicyDocument": trust})}
    )
    assert list(roles) == [logical_id(image.build_role)]
    template.has_resource_properties("AWS::CodeBuild::Project", {"Name": f"{FUNCTION}-image-build"})


def test_lambda_may_pull_from_the_repository_only_for_this_function(async_stack: Any) -> None:
    _, template, _, _ = async_stack
    function = f"lambda:us-east-1:123456789012:function:{FUNCTION}"
    template.has_resource_properties(
        "AWS::ECR::Repository",
        {
            "RepositoryPolicyText": Match.object_like(
                {
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": [
                                "ecr:BatchCheckLayerAvailability",
                                "ecr:GetDownloadUrlForLayer",
                                "ecr:BatchGetImage",
                            ],
                            "Condition": {"StringLike": {"aws:sourceArn": [arn(function), arn(f"{function}:*")]}},
                        }
                    ]
                }
            )
        },
    )


def test_build_role_may_log_in_to_ecr_public_with_the_two_documented_actions(async_stack: Any) -> None:
    """ECR Public's GetAuthorizationToken needs ecr-public:GetAuthorizationToken and sts:GetServiceBearerToken;
    neither has resource-level permissions."""
    image, _, raw, _ = async_stack
    public = [s for s in statements(raw, logical_id(image.build_role)) if s.get("Sid") == "PullPublicBaseImages"]
    assert public == [
        {
            "Sid": "PullPublicBaseImages",
            "Action": ["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"],
            "Effect": "Allow",
            "Resource": "*",
        }
    ]
    env = {
        v["Name"]: v["Value"]
        for v in raw["Resources"][logical_id(image.project)]["Properties"]["Environment"]["EnvironmentVariables"]
    }
    assert env["BUILDKIT_IMAGE"] == "moby/buildkit:buildx-stable-1"


def test_the_waiter_state_machine_logs_under_vendedlogs(async_stack: Any) -> None:
    """Step Functions adds other log groups to the account's CloudWatch Logs resource policy (5,120
    characters); names under /aws/vendedlogs/ do not grow it."""
    _, template, _, _ = async_stack
    (waiter,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    (destination,) = waiter["Properties"]["LoggingConfiguration"]["Destinations"]
    group, _ = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"]
    name = f"/aws/vendedlogs/states/{FUNCTION}-image-build-waiter"
    assert list(template.find_resources("AWS::Logs::LogGroup", {"Properties": {"LogGroupName": name}})) == [group]


def test_failed_pipeline_executions_and_builds_reach_the_alarm_topic(wait_stack: Any) -> None:
    image, _, raw, _ = wait_stack
    topic_id = next(iter(resources(raw, "AWS::SNS::Topic")))
    rules = resources(raw, "AWS::Events::Rule")
    patterns = sorted(
        ((r["Properties"]["EventPattern"], r["Properties"]["Targets"]) for r in rules.values()),
        key=lambda pattern: json.dumps(pattern[0]["source"]),
    )
    assert [p for p, _ in patterns] == [
        {
            "detail": {"build-status": ["FAILED"], "project-name": [f"{FUNCTION}-image-build"]},
            "detail-type": ["CodeBuild Build State Change"],
            "source": ["aws.codebuild"],
        },
        {
            "detail": {"pipeline": [image.pipeline_name], "state": ["FAILED"]},
            "detail-type": ["CodePipeline Pipeline Execution State Change"],
            "source": ["aws.codepipeline"],
        },
    ]
    for _, (target,) in patterns:
        assert target["Arn"] == {"Ref": topic_id}
        assert "FAILED" in json.dumps(target["InputTransformer"])
    # EventBridge may publish to the topic (its resource policy).
    (policy,) = resources(raw, "AWS::SNS::TopicPolicy").values()
    assert any(
        s.get("Principal") == {"Service": "events.amazonaws.com"} and s["Action"] == "sns:Publish"
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_no_alarm_topic_no_rules(async_stack: Any) -> None:
    image, template, _, _ = async_stack
    assert image.failure_rules == []
    template.resource_count_is("AWS::Events::Rule", 0)
