"""The image build trigger against moto's S3 and ECR (CodePipeline stubbed: moto does not run pipelines).

Create: the source resource really copies the asset to the versioned source key (a repeated request
copies nothing and returns the same version), and the pipeline is started on that version; the digest
returned is the one ECR holds. A second deploy of the same tag, and a rollback to it, copy nothing and
start nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from lambdas.image_build_trigger import handler

pytestmark = pytest.mark.integration

TAG = "0123456789abcdef0123456789abcdef"
SOURCE_PROPS = {
    "ImageTag": TAG,
    "AssetBucket": "cdk-assets",
    "AssetKey": "f00d.zip",
    "SourceBucket": "artifacts",
    "SourceKey": "fn/context.zip",
}
PROPS = {
    "ImageTag": TAG,
    "PipelineName": "fn-image",
    "SourceActionName": "Source",
    "ProjectName": "fn-image-build",
    "RepositoryName": "fn-repo",
    "FunctionName": "fn",
    "WaitForBuild": "false",
    "DeadlineSeconds": "2940",
}


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        ecr = boto3.client("ecr", region_name="us-east-1")
        s3.create_bucket(Bucket="cdk-assets")
        s3.put_object(Bucket="cdk-assets", Key="f00d.zip", Body=b"PK\x03\x04 context zip")
        s3.create_bucket(Bucket="artifacts")
        s3.put_bucket_versioning(Bucket="artifacts", VersioningConfiguration={"Status": "Enabled"})
        ecr.create_repository(repositoryName="fn-repo")
        pipeline = boto3.client("codepipeline", region_name="us-east-1")
        codebuild = boto3.client("codebuild", region_name="us-east-1")
        started: list[dict[str, Any]] = []
        pipeline.meta.events.register(
            "provide-client-params.codepipeline.StartPipelineExecution", lambda params, **_: started.append(params)
        )
        stubs = {"codepipeline": Stubber(pipeline), "codebuild": Stubber(codebuild)}
        for stub in stubs.values():
            stub.activate()
        yield {
            "s3": s3,
            "ecr": ecr,
            "stubs": stubs,
            "started": started,
            "clients": handler.Clients(s3=s3, ecr=ecr, codepipeline=pipeline, codebuild=codebuild),
        }
        for stub in stubs.values():
            stub.assert_no_pending_responses()


def push_image(ecr: Any) -> str:
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:" + "c" * 64,
        },
        "layers": [],
    }
    pushed = ecr.put_image(repositoryName="fn-repo", imageManifest=json.dumps(manifest), imageTag=TAG)
    return str(pushed["image"]["imageId"]["imageDigest"])


def versions(s3: Any) -> list[str]:
    listed = s3.list_object_versions(Bucket="artifacts", Prefix="fn/context.zip").get("Versions", [])
    return [v["VersionId"] for v in listed]


def test_first_deploy_copies_starts_on_that_version_and_returns_the_pushed_digest(aws: dict[str, Any]) -> None:
    source_event = {
        "RequestType": "Create",
        "RequestId": "req-0",
        "ResourceType": handler.SOURCE_RESOURCE_TYPE,
        "ResourceProperties": SOURCE_PROPS,
    }
    source = handler.handle_event(source_event, clients=aws["clients"])
    copied = aws["s3"].get_object(Bucket="artifacts", Key="fn/context.zip")
    assert copied["Body"].read() == b"PK\x03\x04 context zip"
    assert copied["Metadata"] == {"image-tag": TAG}
    (version,) = versions(aws["s3"])
    assert source["Data"] == {"VersionId": version}
    # The provider framework may run on_event twice for one request: S3 keeps one version.
    assert handler.handle_event(source_event, clients=aws["clients"]) == source
    assert versions(aws["s3"]) == [version]

    aws["stubs"]["codepipeline"].add_response("list_pipeline_executions", {"pipelineExecutionSummaries": []})
    aws["stubs"]["codepipeline"].add_response("start_pipeline_execution", {"pipelineExecutionId": "exec-1"})
    props = PROPS | {"SourceVersion": version}
    event = {"RequestType": "Create", "RequestId": "req-1", "ResourceProperties": props}
    started = handler.handle_event(event, clients=aws["clients"], now=lambda: 100.0)
    (params,) = aws["started"]
    assert params["sourceRevisions"] == [
        {"actionName": "Source", "revisionType": "S3_OBJECT_VERSION_ID", "revisionValue": version}
    ]
    assert {"name": "IMAGE_TAG", "value": TAG} in params["variables"]
    assert params["clientRequestToken"] == handler.request_token("req-1", version)

    # CodeBuild pushes the image; the execution succeeds.
    digest = push_image(aws["ecr"])
    aws["stubs"]["codepipeline"].add_response(
        "get_pipeline_execution",
        {"pipelineExecution": {"pipelineExecutionId": "exec-1", "status": "Succeeded"}},
        {"pipelineName": "fn-image", "pipelineExecutionId": "exec-1"},
    )
    done = handler.check_complete(event | started, clients=aws["clients"], now=lambda: 400.0)
    assert done["IsComplete"] is True
    assert done["Data"]["ImageDigest"] == digest


def test_a_new_context_is_copied_as_a_new_version_tagged_with_its_tag(aws: dict[str, Any]) -> None:
    def copy(tag: str) -> str:
        event = {
            "RequestType": "Update",
            "RequestId": f"req-{tag[:4]}",
            "ResourceType": handler.SOURCE_RESOURCE_TYPE,
            "ResourceProperties": SOURCE_PROPS | {"ImageTag": tag},
        }
        return str(handler.handle_event(event, clients=aws["clients"])["Data"]["VersionId"])

    first, second = copy(TAG), copy("f" * 32)
    assert first != second and sorted(versions(aws["s3"])) == sorted([first, second])
    head = aws["s3"].head_object(Bucket="artifacts", Key="fn/context.zip")
    assert head["VersionId"] == second and head["Metadata"] == {"image-tag": "f" * 32}


@pytest.mark.parametrize("request_type", ["Update", "Create"])
def test_a_tag_already_in_ecr_copies_nothing_and_starts_nothing(aws: dict[str, Any], request_type: str) -> None:
    digest = push_image(aws["ecr"])
    if request_type == "Update":
        aws["stubs"]["codepipeline"].add_response("list_pipeline_executions", {"pipelineExecutionSummaries": []})
        aws["stubs"]["codebuild"].add_response("list_builds_for_project", {})
    event: dict[str, Any] = {"RequestType": request_type, "RequestId": "req-2", "ResourceProperties": PROPS}
    if request_type == "Update":
        event["PhysicalResourceId"] = "image-build:fn"
    result = handler.handle_event(event, clients=aws["clients"])
    assert result["Data"]["ImageDigest"] == digest
    assert versions(aws["s3"]) == []
    assert aws["started"] == []
