"""The image build trigger against moto's S3 and ECR (CodePipeline stubbed: moto does not run pipelines).

Create: the asset is really copied to the versioned source key and the pipeline is started on the
version S3 returned; the digest returned is the one ECR holds. A second deploy of the same tag, and a
rollback to it, copy nothing and start nothing.
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
PROPS = {
    "ImageTag": TAG,
    "AssetBucket": "cdk-assets",
    "AssetKey": "f00d.zip",
    "SourceBucket": "artifacts",
    "SourceKey": "fn/context.zip",
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
    aws["stubs"]["codepipeline"].add_response("start_pipeline_execution", {"pipelineExecutionId": "exec-1"})
    event = {"RequestType": "Create", "RequestId": "req-1", "ResourceProperties": PROPS}
    started = handler.handle_event(event, clients=aws["clients"], now=lambda: 100.0)

    copied = aws["s3"].get_object(Bucket="artifacts", Key="fn/context.zip")
    assert copied["Body"].read() == b"PK\x03\x04 context zip"
    (version,) = versions(aws["s3"])
    (params,) = aws["started"]
    assert params["sourceRevisions"] == [
        {"actionName": "Source", "revisionType": "S3_OBJECT_VERSION_ID", "revisionValue": version}
    ]
    assert {"name": "IMAGE_TAG", "value": TAG} in params["variables"]

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
