"""The image build trigger's custom resource handlers against botocore Stubbers (no network).

Every stub lists exactly the calls expected: an unexpected call fails the test (Stubber raises), and
``assert_no_pending_responses`` fails a test whose expected call did not happen.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.image_build_trigger import handler

pytestmark = pytest.mark.unit

TAG = "0123456789abcdef0123456789abcdef"
DIGEST = "sha256:" + "d" * 64
OLD_DIGEST = "sha256:" + "0" * 64
REPO = "image-repo"
PIPELINE = "fn-image"
EXECUTION = "11111111-2222-3333-4444-555555555555"
BUILD_ID = "fn-image-build:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
PROPS = {
    "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
    "ImageTag": TAG,
    "SourceVersion": "v-42",
    "PipelineName": PIPELINE,
    "SourceActionName": "Source",
    "ProjectName": "fn-image-build",
    "RepositoryName": REPO,
    "FunctionName": "fn",
    "WaitForBuild": "false",
    "DeadlineSeconds": "2940",
}
SOURCE_PROPS = {
    "ServiceToken": PROPS["ServiceToken"],
    "ImageTag": TAG,
    "AssetBucket": "cdk-hnb659fds-assets-123456789012-us-east-1",
    "AssetKey": "f00d.zip",
    "SourceBucket": "artifact-bucket",
    "SourceKey": "fn/context.zip",
}
TOKEN = "req-1-v-42"  # the request id and the source version


class Aws:
    """Stubbed clients for every service the handlers touch."""

    def __init__(self) -> None:
        self.raw = {
            name: boto3.client(name, region_name="us-east-1")  # type: ignore[call-overload]
            for name in ("ecr", "s3", "codepipeline", "lambda", "codebuild", "logs")
        }
        self.stub = {name: Stubber(client) for name, client in self.raw.items()}
        for stub in self.stub.values():
            stub.activate()
        self.clients = handler.Clients(**self.raw)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def tag_missing(self) -> None:
        self.stub["ecr"].add_client_error(
            "describe_images",
            service_error_code="ImageNotFoundException",
            http_status_code=400,
            expected_params={"repositoryName": REPO, "imageIds": [{"imageTag": TAG}]},
        )

    def tag_exists(self, digest: str = DIGEST) -> None:
        self.stub["ecr"].add_response(
            "describe_images",
            {"imageDetails": [{"imageDigest": digest, "imageTags": [TAG]}]},
            {"repositoryName": REPO, "imageIds": [{"imageTag": TAG}]},
        )

    def source_head(self, tag: str | None, version: str = "v-41") -> None:
        """HeadObject of the source key: absent (None), or holding ``tag`` in its metadata."""
        params = {"Bucket": "artifact-bucket", "Key": "fn/context.zip"}
        if tag is None:
            self.stub["s3"].add_client_error("head_object", "404", http_status_code=404, expected_params=params)
        else:
            self.stub["s3"].add_response("head_object", {"VersionId": version, "Metadata": {"image-tag": tag}}, params)

    def copy(self) -> None:
        self.stub["s3"].add_response(
            "copy_object",
            {"VersionId": "v-42"},
            {
                "Bucket": "artifact-bucket",
                "Key": "fn/context.zip",
                "CopySource": {"Bucket": SOURCE_PROPS["AssetBucket"], "Key": "f00d.zip"},
                "Metadata": {"image-tag": TAG},
                "MetadataDirective": "REPLACE",
            },
        )

    def start(self, *, update_function: bool) -> None:
        self.stub["codepipeline"].add_response(
            "start_pipeline_execution", {"pipelineExecutionId": EXECUTION}, self.start_params(update_function)
        )

    @staticmethod
    def start_params(update_function: bool) -> dict[str, Any]:
        return {
            "name": PIPELINE,
            "variables": [
                {"name": "IMAGE_TAG", "value": TAG},
                {"name": "UPDATE_FUNCTION", "value": "true" if update_function else "false"},
            ],
            "sourceRevisions": [
                {"actionName": "Source", "revisionType": "S3_OBJECT_VERSION_ID", "revisionValue": "v-42"}
            ],
            "clientRequestToken": TOKEN,
        }

    def execution(self, status: str, summary: str = "", execution_id: str = EXECUTION) -> None:
        body: dict[str, Any] = {"pipelineName": PIPELINE, "pipelineExecutionId": execution_id, "status": status}
        if summary:
            body["statusSummary"] = summary
        self.stub["codepipeline"].add_response(
            "get_pipeline_execution",
            {"pipelineExecution": body},
            {"pipelineName": PIPELINE, "pipelineExecutionId": execution_id},
        )

    def executions(
        self, executions: list[tuple[str, str, str, str]], *, stop: dict[str, str | None] | None = None
    ) -> None:
        """ListPipelineExecutions, then GetPipelineExecution of each InProgress one:
        ``(id, status, IMAGE_TAG, UPDATE_FUNCTION)``. ``stop`` maps the ids stopped to None (stopped)
        or the error code StopPipelineExecution answers."""
        self.stub["codepipeline"].add_response(
            "list_pipeline_executions",
            {"pipelineExecutionSummaries": [{"pipelineExecutionId": e[0], "status": e[1]} for e in executions]},
            {"pipelineName": PIPELINE, "maxResults": 20},
        )
        for execution_id, status, tag, update in executions:
            if status != "InProgress":
                continue
            variables = [
                {"name": "IMAGE_TAG", "resolvedValue": tag},
                {"name": "UPDATE_FUNCTION", "resolvedValue": update},
            ]
            self.stub["codepipeline"].add_response(
                "get_pipeline_execution",
                {
                    "pipelineExecution": {
                        "pipelineName": PIPELINE,
                        "pipelineExecutionId": execution_id,
                        "status": status,
                        "variables": variables,
                    }
                },
                {"pipelineName": PIPELINE, "pipelineExecutionId": execution_id},
            )
        for execution_id, error in (stop or {}).items():
            params = {"pipelineName": PIPELINE, "pipelineExecutionId": execution_id, "abandon": True, "reason": ANY}
            if error:
                self.stub["codepipeline"].add_client_error(
                    "stop_pipeline_execution", error, http_status_code=400, expected_params=params
                )
            else:
                self.stub["codepipeline"].add_response(
                    "stop_pipeline_execution", {"pipelineExecutionId": execution_id}, params
                )

    def builds(self, builds: list[tuple[str, str, str]], *, stop: dict[str, str | None] | None = None) -> None:
        """ListBuildsForProject and BatchGetBuilds: ``(id, status, IMAGE_TAG)``; ``stop`` as for executions."""
        self.stub["codebuild"].add_response(
            "list_builds_for_project",
            {"ids": [b[0] for b in builds]} if builds else {},
            {"projectName": "fn-image-build", "sortOrder": "DESCENDING"},
        )
        if builds:
            self.stub["codebuild"].add_response(
                "batch_get_builds",
                {
                    "builds": [
                        {
                            "id": build_id,
                            "buildStatus": status,
                            "environment": {
                                "type": "ARM_CONTAINER",
                                "image": "aws/codebuild/amazonlinux-aarch64-standard:3.0",
                                "computeType": "BUILD_GENERAL1_SMALL",
                                "environmentVariables": [{"name": "IMAGE_TAG", "value": tag, "type": "PLAINTEXT"}],
                            },
                        }
                        for build_id, status, tag in builds
                    ]
                },
                {"ids": [b[0] for b in builds]},
            )
        for build_id, error in (stop or {}).items():
            if error:
                self.stub["codebuild"].add_client_error(
                    "stop_build", error, http_status_code=400, expected_params={"id": build_id}
                )
            else:
                self.stub["codebuild"].add_response("stop_build", {"build": {"id": build_id}}, {"id": build_id})

    def nothing_in_flight(self) -> None:
        self.executions([])
        self.builds([])

    def verify(self) -> None:
        for stub in self.stub.values():
            stub.assert_no_pending_responses()


@pytest.fixture
def aws() -> Iterator[Aws]:
    fake = Aws()
    yield fake
    fake.verify()


def event(request: str, **props: str) -> dict[str, Any]:
    merged = PROPS | props
    out: dict[str, Any] = {
        "RequestType": request,
        "RequestId": "req-1",
        "LogicalResourceId": "Trigger",
        "ResourceProperties": merged,
    }
    if request != "Create":
        out["PhysicalResourceId"] = "image-build:fn"
        out["OldResourceProperties"] = PROPS | {"ImageTag": "f" * 32}
    return out


def poll(aws: Aws, started: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The event the provider framework passes to is_complete: the request plus on_event's result."""
    return handler.check_complete(event("Create") | started, clients=aws.clients, now=lambda: now)


# ---- the source resource ------------------------------------------------------------------------------


def source_event(request: str) -> dict[str, Any]:
    return {
        "RequestType": request,
        "RequestId": "req-0",
        "ResourceType": handler.SOURCE_RESOURCE_TYPE,
        "LogicalResourceId": "Source",
        "ResourceProperties": SOURCE_PROPS,
    }


def test_source_copies_the_asset_with_its_tag_and_returns_the_new_version(aws: Aws) -> None:
    aws.source_head(None)  # HeadObject: 404 before the first copy
    aws.copy()
    result = handler.handle_event(source_event("Create"), clients=aws.clients, sleep=aws.sleep)
    assert result == {"PhysicalResourceId": "s3://artifact-bucket/fn/context.zip", "Data": {"VersionId": "v-42"}}
    # The provider framework's is-complete: nothing to wait for, no AWS call.
    assert handler.check_complete(source_event("Create") | result, clients=aws.clients) == {"IsComplete": True}


def test_source_run_twice_for_one_request_copies_once_and_returns_the_same_version(aws: Aws) -> None:
    """The provider framework re-invokes on_event after SDK errors; Lambda retries async invocations."""
    aws.source_head("f" * 32)  # an older context
    aws.copy()
    first = handler.handle_event(source_event("Update"), clients=aws.clients, sleep=aws.sleep)
    aws.source_head(TAG, version="v-42")  # the first run's copy
    second = handler.handle_event(source_event("Update"), clients=aws.clients, sleep=aws.sleep)
    assert first == second


def test_source_copy_is_retried_after_access_denied(aws: Aws) -> None:
    aws.source_head(None)
    aws.stub["s3"].add_client_error("copy_object", "AccessDenied", http_status_code=403)
    aws.copy()
    handler.handle_event(source_event("Create"), clients=aws.clients, sleep=aws.sleep)
    assert aws.sleeps == [handler.START_RETRY_DELAYS[0]]


def test_unversioned_source_bucket_is_reported(aws: Aws) -> None:
    aws.source_head(None)
    aws.stub["s3"].add_response("copy_object", {}, None)
    with pytest.raises(RuntimeError, match="versioning"):
        handler.handle_event(source_event("Create"), clients=aws.clients, sleep=aws.sleep)


def test_source_delete_keeps_the_object(aws: Aws) -> None:
    result = handler.handle_event(source_event("Delete"), clients=aws.clients, sleep=aws.sleep)
    assert result == {"PhysicalResourceId": "s3://artifact-bucket/fn/context.zip"}


# ---- on_event ----------------------------------------------------------------------------------------


def test_create_starts_the_pipeline_pinned_to_the_source_version_and_waits(aws: Aws) -> None:
    aws.tag_missing()
    aws.executions([])
    aws.start(update_function=False)  # the function does not exist yet: CloudFormation creates it
    started = handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep, now=lambda: 1000.0)
    assert started["PhysicalResourceId"] == "image-build:fn"
    assert started["Data"] == {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}

    aws.execution("InProgress")
    assert poll(aws, started, now=1060.0) == {"IsComplete": False}

    aws.execution("Succeeded")
    aws.tag_exists()
    done = poll(aws, started, now=1300.0)
    assert done == {
        "IsComplete": True,
        "Data": {
            "ImageTag": TAG,
            "ImageDigest": DIGEST,
            "DigestHex": "d" * 64,
            "PipelineExecutionId": EXECUTION,
            "Built": "true",
        },
    }
    assert aws.sleeps == []


def test_create_adopts_the_run_codepipeline_starts_when_it_creates_the_pipeline(aws: Aws) -> None:
    """CodePipeline starts an execution when a pipeline is created; its source exists (the source resource
    comes first) and its default IMAGE_TAG is this tag: the deploy waits for it, nothing is built twice."""
    aws.tag_missing()
    aws.executions([("creation-run", "InProgress", TAG, "true")])
    started = handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep, now=lambda: 1000.0)
    assert started["Data"]["PipelineExecutionId"] == "creation-run"


def test_async_update_starts_the_build_and_returns_at_once_with_the_running_digest(aws: Aws) -> None:
    aws.nothing_in_flight()
    aws.tag_missing()
    running_function(aws)
    aws.start(update_function=True)  # the build points the function at the new digest
    started = handler.handle_event(event("Update"), clients=aws.clients, sleep=aws.sleep)
    assert started["Data"]["ImageDigest"] == OLD_DIGEST
    assert started["Data"]["DigestHex"] == "0" * 64
    assert started["Data"]["PipelineExecutionId"] == EXECUTION
    # is_complete answers without a single AWS call (any call would fail on the empty stubs).
    assert handler.check_complete(event("Update") | started, clients=aws.clients) == {"IsComplete": True}


def running_function(aws: Aws) -> None:
    aws.stub["lambda"].add_response(
        "get_function",
        {
            "Configuration": {"FunctionName": "fn", "PackageType": "Image"},
            "Code": {"ImageUri": f"repo@{OLD_DIGEST}", "ResolvedImageUri": f"123.dkr.ecr/repo@{OLD_DIGEST}"},
        },
        {"FunctionName": "fn"},
    )


def test_on_event_run_twice_for_one_request_keeps_the_first_runs_build_and_reports_the_same(aws: Aws) -> None:
    """The provider framework re-invokes on_event after SDK errors and Lambda retries async invocations: the
    second run must neither stop the execution the first started nor start another."""
    aws.nothing_in_flight()
    aws.tag_missing()
    running_function(aws)
    aws.start(update_function=True)
    first = handler.handle_event(event("Update"), clients=aws.clients, sleep=aws.sleep)

    aws.executions([(EXECUTION, "InProgress", TAG, "true")])  # no StopPipelineExecution expected
    aws.builds([(BUILD_ID, "IN_PROGRESS", TAG)])  # no StopBuild expected
    aws.tag_missing()
    running_function(aws)
    second = handler.handle_event(event("Update"), clients=aws.clients, sleep=aws.sleep)
    assert second == first


def test_a_repeated_start_for_one_request_sends_the_same_client_request_token(aws: Aws) -> None:
    """When the first run's execution is not listed yet, the second start carries the same token (request
    id + source version), which CodePipeline answers with the same execution."""
    for _ in range(2):
        aws.executions([])
        aws.tag_missing()
        aws.start(update_function=False)  # expected_params pin clientRequestToken to TOKEN
    results = [
        handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep, now=lambda: 5.0) for _ in "ab"
    ]
    assert results[0] == results[1]


def test_wait_mode_update_waits_and_the_build_leaves_the_function_to_cloudformation(aws: Aws) -> None:
    aws.nothing_in_flight()
    aws.tag_missing()
    aws.start(update_function=False)
    started = handler.handle_event(event("Update", WaitForBuild="true"), clients=aws.clients, sleep=aws.sleep)
    assert "ImageDigest" not in started["Data"] and started["Data"]["PipelineExecutionId"] == EXECUTION


def test_async_update_of_a_function_that_does_not_exist_yet_waits(aws: Aws) -> None:
    aws.nothing_in_flight()
    aws.tag_missing()
    aws.stub["lambda"].add_client_error("get_function", "ResourceNotFoundException", http_status_code=404)
    aws.start(update_function=False)
    started = handler.handle_event(event("Update"), clients=aws.clients, sleep=aws.sleep)
    assert "ImageDigest" not in started["Data"]


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_an_existing_tag_starts_nothing_and_returns_its_digest(aws: Aws, request_type: str) -> None:
    if request_type == "Update":
        aws.nothing_in_flight()
    aws.tag_exists()  # redeploy of the same context, or a rollback to an image built before
    result = handler.handle_event(event(request_type), clients=aws.clients, sleep=aws.sleep)
    assert result["Data"]["DigestHex"] == "d" * 64
    assert result["Data"]["Built"] == "false"
    assert handler.check_complete(event(request_type) | result, clients=aws.clients) == {"IsComplete": True}


def test_delete_stops_in_flight_builds_and_touches_nothing_else(aws: Aws) -> None:
    aws.executions([(EXECUTION, "InProgress", TAG, "true")], stop={EXECUTION: None})
    aws.builds([(BUILD_ID, "IN_PROGRESS", TAG)], stop={BUILD_ID: None})
    result = handler.handle_event(event("Delete"), clients=aws.clients, sleep=aws.sleep)
    assert result == {"PhysicalResourceId": "image-build:fn"}
    assert handler.check_complete(event("Delete") | result, clients=aws.clients) == {"IsComplete": True}


def test_rollback_to_an_existing_image_stops_the_newer_async_build(aws: Aws) -> None:
    """Deploy B started an async build; the deployment rolls back to A, already in ECR: B's build
    must not repoint the function to B afterwards."""
    aws.executions(
        [("newer-exec", "InProgress", "b" * 32, "true"), ("older-exec", "Succeeded", "", "")],
        stop={"newer-exec": None},
    )
    aws.builds(
        [("fn-image-build:b", "IN_PROGRESS", "b" * 32), ("fn-image-build:a", "SUCCEEDED", TAG)],
        stop={"fn-image-build:b": None},
    )
    aws.tag_exists()
    result = handler.handle_event(event("Update"), clients=aws.clients, sleep=aws.sleep)
    assert result["Data"]["DigestHex"] == "d" * 64


@pytest.mark.parametrize("error", ["PipelineExecutionNotStoppableException", "DuplicatedStopRequestException"])
def test_one_failed_stop_pipeline_execution_does_not_skip_stopping_the_builds(aws: Aws, error: str) -> None:
    """StopPipelineExecution's documented errors: the execution is not stoppable (it already ended) or a stop
    was already requested; each stop is its own call."""
    aws.executions(
        [("old-1", "InProgress", "1" * 32, "true"), ("old-2", "InProgress", "2" * 32, "true")],
        stop={"old-1": error, "old-2": None},
    )
    aws.builds(
        [("fn-image-build:1", "IN_PROGRESS", "1" * 32), ("fn-image-build:2", "IN_PROGRESS", "2" * 32)],
        stop={"fn-image-build:1": "InvalidInputException", "fn-image-build:2": None},
    )
    stopped = handler.stop_in_flight_builds(aws.clients, PROPS, "test", keep_tag=TAG)
    assert stopped == ["old-2", "fn-image-build:2"]


def test_a_failure_to_list_old_builds_does_not_fail_the_update(aws: Aws) -> None:
    aws.stub["codepipeline"].add_client_error("list_pipeline_executions", "AccessDeniedException", 400)
    aws.stub["codebuild"].add_client_error("list_builds_for_project", "AccessDeniedException", 400)
    assert handler.stop_in_flight_builds(aws.clients, PROPS, "test") == []
    aws.stub["codepipeline"].add_client_error("list_pipeline_executions", "AccessDeniedException", 400)
    aws.builds([])
    aws.tag_exists()
    result = handler.handle_event(event("Update"), clients=aws.clients, sleep=aws.sleep)
    assert result["Data"]["Built"] == "false"


@pytest.mark.parametrize(
    "code",
    [
        "ConflictException",  # the pipeline was updated a moment ago in the same deploy
        "ConcurrentPipelineExecutionsLimitExceededException",
        "AccessDeniedException",
        "ThrottlingException",
        "PipelineNotFoundException",
    ],
)
def test_start_is_retried_after_conflict_limit_access_denied_or_throttling(aws: Aws, code: str) -> None:
    aws.tag_missing()
    aws.executions([])
    for _ in range(2):
        aws.stub["codepipeline"].add_client_error(
            "start_pipeline_execution", code, http_status_code=409, expected_params=aws.start_params(False)
        )
    aws.start(update_function=False)
    started = handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep)
    assert started["Data"]["PipelineExecutionId"] == EXECUTION
    assert aws.sleeps == list(handler.START_RETRY_DELAYS[:2])


def test_logs_go_to_the_image_build_trigger_logger_with_context_and_the_error_in_extra(
    aws: Aws, caplog: pytest.LogCaptureFixture
) -> None:
    """One named logger; a retried failure carries error_type, error and its AWS code as ``extra`` keys."""
    aws.tag_missing()
    aws.executions([])
    aws.stub["codepipeline"].add_client_error(
        "start_pipeline_execution", "ThrottlingException", "Rate exceeded", 400, expected_params=aws.start_params(False)
    )
    aws.start(update_function=False)
    with caplog.at_level("INFO", logger="image_build_trigger"):
        handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep)
    assert {r.name for r in caplog.records} == {"image_build_trigger"}
    (retry,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert (retry.error_type, retry.error_code) == ("ClientError", "ThrottlingException")  # type: ignore[attr-defined]
    assert "Rate exceeded" in retry.error  # type: ignore[attr-defined]
    (started,) = [r for r in caplog.records if r.getMessage().startswith("started ")]
    assert (started.image_tag, started.execution_id) == (TAG, EXECUTION)  # type: ignore[attr-defined]


def test_start_gives_up_after_the_bounded_retries(aws: Aws) -> None:
    aws.tag_missing()
    aws.executions([])
    for _ in range(len(handler.START_RETRY_DELAYS) + 1):
        aws.stub["codepipeline"].add_client_error("start_pipeline_execution", "ConflictException", 409)
    with pytest.raises(ClientError, match="ConflictException"):
        handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep)
    assert aws.sleeps == list(handler.START_RETRY_DELAYS)
    assert sum(aws.sleeps) < 200  # well inside the on-event function's 5 minute timeout


def test_other_start_errors_are_not_retried(aws: Aws) -> None:
    aws.tag_missing()
    aws.executions([])
    aws.stub["codepipeline"].add_client_error("start_pipeline_execution", "ValidationException", 400)
    with pytest.raises(ClientError, match="ValidationException"):
        handler.handle_event(event("Create"), clients=aws.clients, sleep=aws.sleep)
    assert aws.sleeps == []


# ---- is_complete: superseded and cancelled executions ---------------------------------------------------


@pytest.mark.parametrize("status", ["Superseded", "Cancelled"])
def test_an_overtaken_execution_succeeds_when_the_tag_reaches_ecr(aws: Aws, status: str) -> None:
    """Superseded: a newer execution (an operator's "Release change") overtook it; Cancelled: the pipeline's
    definition was updated. Either way another execution may push the same content tag."""
    aws.execution(status)
    aws.tag_exists()
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    done = poll(aws, started, now=1100.0)
    assert done["IsComplete"] is True and done["Data"]["ImageDigest"] == DIGEST


@pytest.mark.parametrize("status", ["Superseded", "Cancelled"])
def test_an_overtaken_execution_keeps_waiting_while_another_builds_the_tag(aws: Aws, status: str) -> None:
    aws.execution(status)
    aws.tag_missing()
    aws.executions([("release-change", "InProgress", TAG, "true")])
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    assert poll(aws, started, now=1100.0) == {"IsComplete": False}


@pytest.mark.parametrize("status", ["Superseded", "Cancelled"])
def test_an_overtaken_execution_fails_when_nothing_builds_the_tag(aws: Aws, status: str) -> None:
    aws.execution(status)
    aws.tag_missing()
    aws.executions([("other-tag", "InProgress", "e" * 32, "true")])
    aws.stub["codepipeline"].add_response(
        "list_action_executions",
        {"actionExecutionDetails": []},
        {"pipelineName": PIPELINE, "filter": {"pipelineExecutionId": EXECUTION}},
    )
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError, match=f"{status.lower()}.*no other execution is building {TAG}"):
        poll(aws, started, now=1100.0)


def test_an_overtaken_execution_still_waiting_at_the_deadline_fails(aws: Aws) -> None:
    aws.execution("Superseded")
    aws.tag_missing()
    aws.executions([("release-change", "InProgress", TAG, "true")])
    aws.stub["codepipeline"].add_response(
        "list_action_executions",
        {"actionExecutionDetails": []},
        {"pipelineName": PIPELINE, "filter": {"pipelineExecutionId": EXECUTION}},
    )
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError, match="still not in ECR after 2941 s"):
        poll(aws, started, now=1000.0 + 2941)


# ---- is_complete failures -------------------------------------------------------------------------


def add_failure_details(aws: Aws) -> None:
    aws.stub["codepipeline"].add_response(
        "list_action_executions",
        {
            "actionExecutionDetails": [
                {"stageName": "Source", "actionName": "Source", "status": "Succeeded"},
                {
                    "stageName": "Build",
                    "actionName": "Build",
                    "status": "Failed",
                    "output": {
                        "executionResult": {
                            "externalExecutionId": BUILD_ID,
                            "externalExecutionSummary": "Build terminated with state: FAILED",
                        }
                    },
                },
            ]
        },
        {"pipelineName": PIPELINE, "filter": {"pipelineExecutionId": EXECUTION}},
    )
    aws.stub["codebuild"].add_response(
        "batch_get_builds",
        {
            "builds": [
                {
                    "id": BUILD_ID,
                    "phases": [
                        {"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED"},
                        {
                            "phaseType": "BUILD",
                            "phaseStatus": "FAILED",
                            "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": "exit status 1"}],
                        },
                    ],
                    "logs": {
                        "groupName": "build-logs",
                        "streamName": "aaaaaaaa-bbbb",
                        "deepLink": "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEvent:x",
                    },
                }
            ]
        },
        {"ids": [BUILD_ID]},
    )
    lines = [f"step {i}" for i in range(20)] + ["ERROR: failed to solve: pip install exited 1"]
    aws.stub["logs"].add_response(
        "get_log_events",
        {"events": [{"timestamp": i, "message": line + "\n"} for i, line in enumerate(lines)]},
        {"logGroupName": "build-logs", "logStreamName": "aaaaaaaa-bbbb", "limit": ANY, "startFromHead": False},
    )


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_failed_execution_raises_with_the_log_tail_and_a_console_link(aws: Aws, status: str) -> None:
    aws.execution(status, summary="Build action failed")
    add_failure_details(aws)
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError) as raised:
        poll(aws, started, now=1100.0)
    reason = str(raised.value)
    assert f"image build {TAG} {status.lower()}" in reason
    assert EXECUTION in reason and "BUILD: exit status 1" in reason
    assert "Console: https://console.aws.amazon.com/cloudwatch/home" in reason
    assert reason.rstrip().endswith("ERROR: failed to solve: pip install exited 1")
    assert "step 19" in reason
    assert json_bytes(reason) <= handler.REASON_BUDGET_BYTES
    assert "[..." not in reason  # short enough: nothing cut


def json_bytes(text: str) -> int:
    """What the reason costs in the JSON response body sent to CloudFormation."""
    return len(json.dumps(text).encode("utf-8"))


# A build command as CodeBuild quotes it in phase messages and CodePipeline in its summaries (~410 chars).
BUILDX = (
    'if [ "$IMAGE_EXISTS" != "true" ]; then docker buildx build --platform "$PLATFORM" --provenance=false'
    ' --cache-from "type=registry,ref=$REPOSITORY_URI:$CACHE_TAG" --cache-to type=inline'
    " --build-arg 'PIP_INDEX_URL=https://pypi.org/simple' --build-arg 'PYTHON_VERSION=3.12'"
    ' --build-arg \'EXTRA={"a": "b\\\\c"}\' --file "$DOCKERFILE" --tag "$REPOSITORY_URI:$IMAGE_TAG"'
    ' --tag "$REPOSITORY_URI:$CACHE_TAG" --load .; fi'
)
PHASE_MESSAGE = f"Error while executing command: {BUILDX}. Reason: exit status 1"
ACTION_SUMMARY = (
    f"Build terminated with state: FAILED. Phase: BUILD, Code: COMMAND_EXECUTION_ERROR, Message: {PHASE_MESSAGE}"
)
DEEP_LINK = (
    "https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/"
    "$252Faws$252Fcodebuild$252Ffn-image-build/log-events/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
)
LAST_LINE = (
    'ERROR: failed to solve: process "/bin/sh -c pip install -r requirements.txt" did not complete: exit code: 1'
)
LOG_LINE_STYLES = {
    "ascii": lambda i: f"#12 {i:5d}.3 Collecting package-{i} (from -r requirements.txt (line {i}))",
    "non-ascii and emoji": lambda i: f"#12 {i:5d} 🐳 Größe für Paket {i}: 12 МБ — ✅ 🚀 日本語のログ行",
    "json escapes": lambda i: f'#12 {i:5d} {{"path": "C:\\\\tmp\\\\x{i}", "msg": "say \\"hi\\""}}\t\\u00e9 \\\\',
}


def long_log(style: str, lines: int = 10_000) -> list[str]:
    return [LOG_LINE_STYLES[style](i) for i in range(lines)] + [LAST_LINE]


@pytest.mark.parametrize("style", sorted(LOG_LINE_STYLES))
def test_a_real_sized_failure_reason_fits_the_budget_with_the_link_and_the_last_log_lines(style: str) -> None:
    log = long_log(style)
    parts = [
        f"image build {TAG} failed: pipeline {PIPELINE} execution {EXECUTION}",
        ACTION_SUMMARY,  # the pipeline's statusSummary
        ACTION_SUMMARY,  # the Build action's externalExecutionSummary
        f"BUILD: {PHASE_MESSAGE}",
        f"POST_BUILD: {PHASE_MESSAGE}",
    ]
    reason = handler.compose_failure_reason(parts, DEEP_LINK, "\n".join(log))
    assert json_bytes(reason) <= handler.REASON_BUDGET_BYTES
    assert f"Console: {DEEP_LINK}" in reason
    assert reason.startswith(parts[0])
    assert reason.endswith("\n" + "\n".join(log[-3:]))  # whole last lines, the error last
    assert "exit status 1" in reason  # a phase message keeps its end, cut in its middle
    assert "[...] " in reason  # where something was cut, it says so
    assert reason.count("Build terminated with state: FAILED") == 1  # the repeated summary once


@pytest.mark.parametrize("style", sorted(LOG_LINE_STYLES))
def test_a_failed_build_with_real_sized_messages_raises_a_reason_within_the_budget(aws: Aws, style: str) -> None:
    """Through the handler: the long buildx command in the pipeline summary, the action summary and two
    failed phases, and the last 25 events of a 10,000-line log."""
    aws.execution("Failed", summary=ACTION_SUMMARY)
    aws.stub["codepipeline"].add_response(
        "list_action_executions",
        {
            "actionExecutionDetails": [
                {
                    "stageName": "Build",
                    "actionName": "Build",
                    "status": "Failed",
                    "output": {
                        "executionResult": {"externalExecutionId": BUILD_ID, "externalExecutionSummary": ACTION_SUMMARY}
                    },
                }
            ]
        },
        {"pipelineName": PIPELINE, "filter": {"pipelineExecutionId": EXECUTION}},
    )
    failed_phase = {
        "phaseStatus": "FAILED",
        "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": PHASE_MESSAGE}],
    }
    aws.stub["codebuild"].add_response(
        "batch_get_builds",
        {
            "builds": [
                {
                    "id": BUILD_ID,
                    "phases": [{"phaseType": "BUILD", **failed_phase}, {"phaseType": "POST_BUILD", **failed_phase}],
                    "logs": {"groupName": "build-logs", "streamName": "aaaaaaaa-bbbb", "deepLink": DEEP_LINK},
                }
            ]
        },
        {"ids": [BUILD_ID]},
    )
    # CodeBuild writes a buildx step's output as one event: each event carries hundreds of lines.
    log = long_log(style)
    events = ["\n".join(log[i : i + 400]) for i in range(0, len(log), 400)][-handler.LOG_TAIL_LINES :]
    aws.stub["logs"].add_response(
        "get_log_events",
        {"events": [{"timestamp": i, "message": message + "\n"} for i, message in enumerate(events)]},
        {"logGroupName": "build-logs", "logStreamName": "aaaaaaaa-bbbb", "limit": 25, "startFromHead": False},
    )
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError) as raised:
        poll(aws, started, now=1100.0)
    reason = str(raised.value)
    assert json_bytes(reason) <= handler.REASON_BUDGET_BYTES
    assert f"Console: {DEEP_LINK}" in reason
    assert reason.startswith(f"image build {TAG} failed: pipeline {PIPELINE} execution {EXECUTION}")
    assert reason.endswith("\n" + "\n".join(log[-3:]))
    assert "BUILD: Error while executing command" in reason


def test_a_link_longer_than_the_budget_still_yields_a_reason_within_it() -> None:
    reason = handler.compose_failure_reason(["image build failed"], "https://x/" + "é" * 1000, "ERROR: boom")
    assert json_bytes(reason) <= handler.REASON_BUDGET_BYTES
    assert reason.startswith("image build failed") and reason.endswith("ERROR: boom")


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.text(max_size=1500), max_size=6),
    tail=st.lists(st.text(max_size=300).map(lambda t: t.replace("\n", " ")), max_size=40).map("\n".join),
    budget=st.integers(min_value=1200, max_value=4000),
)
def test_any_reason_fits_its_budget_and_keeps_the_link(parts: list[str], tail: str, budget: int) -> None:
    reason = handler.compose_failure_reason(parts, DEEP_LINK, tail, budget_bytes=budget)
    assert json_bytes(reason) <= budget
    assert f"Console: {DEEP_LINK}" in reason
    last_line = tail.rstrip().rpartition("\n")[2]
    if json_bytes(last_line) <= 300:  # a short last log line survives whole (longer ones keep their end)
        assert reason.endswith(last_line)


def test_failure_reason_survives_unreadable_logs(aws: Aws) -> None:
    aws.execution("Failed")
    aws.stub["codepipeline"].add_client_error("list_action_executions", "AccessDeniedException", 400)
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError, match="could not read the build log: AccessDeniedException"):
        poll(aws, started, now=1100.0)


def test_a_build_that_never_finishes_fails_at_the_deadline_instead_of_hanging(aws: Aws) -> None:
    aws.execution("InProgress")
    aws.stub["codepipeline"].add_response(
        "list_action_executions",
        {"actionExecutionDetails": []},
        {"pipelineName": PIPELINE, "filter": {"pipelineExecutionId": EXECUTION}},
    )
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError, match=r"timed out.*still InProgress after 2941 s") as raised:
        poll(aws, started, now=1000.0 + 2941)
    assert f"codepipeline/pipelines/{PIPELINE}/executions/{EXECUTION}" in str(raised.value)


def test_success_without_the_tag_in_ecr_is_an_error(aws: Aws) -> None:
    aws.execution("Succeeded")
    aws.tag_missing()
    started = {"Data": {"PipelineExecutionId": EXECUTION, "ImageTag": TAG, "StartedAt": "1000"}}
    with pytest.raises(handler.BuildFailedError, match="is not in ECR"):
        poll(aws, started, now=1100.0)
