"""Custom resource handlers of CodeBuildDockerImage (``custom_resources.Provider`` on-event / is-complete).

``Custom::CodeBuildDockerImageSource`` puts the build context at the pipeline's source key;
``Custom::CodeBuildDockerImage`` starts (or adopts) the image build and, when the deploy waits, polls
it. What each request does and why: docs/image-build.md ("How a deploy proceeds").

Properties (strings): ImageTag, SourceVersion, PipelineName, SourceActionName, ProjectName,
RepositoryName, FunctionName, WaitForBuild ("true"/"false"), DeadlineSeconds; the source resource:
ImageTag, AssetBucket, AssetKey, SourceBucket, SourceKey.
Attributes: ImageTag, ImageDigest ("sha256:..."), DigestHex, PipelineExecutionId, Built ("true"/"false");
the source resource: VersionId.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import boto3
from botocore.exceptions import ClientError

logger = logging.getLogger("image_build_trigger")

RETRYABLE_START_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "PipelineNotFoundException",  # a pipeline created a moment ago
        # StartPipelineExecution, as botocore's model lists it: the pipeline is busy right after its
        # definition was updated (every deploy that changes the context updates its default tag).
        "ConflictException",
        "ConcurrentPipelineExecutionsLimitExceededException",
    }
)
SOURCE_RESOURCE_TYPE = "Custom::CodeBuildDockerImageSource"
TAG_METADATA = "image-tag"  # user metadata of the source object: the content tag it holds
# Pipeline execution statuses after which another execution may still push the tag.
OVERTAKEN = frozenset({"Superseded", "Cancelled"})
START_RETRY_DELAYS = (2.0, 4.0, 8.0, 15.0, 20.0, 30.0, 30.0, 30.0)  # ~140 s: IAM propagation, a busy pipeline
RUNNING = "InProgress"
LOG_TAIL_LINES = 25
LOG_TAIL_CHARS = 1800  # the build log's last characters kept before the byte budget applies
REASON_PART_CHARS = 300  # each summary / phase message (they repeat the ~450-char buildx command)
# JSON bytes of the failure reason: the rest of the provider's 4,096-byte response needs ~1.5 KB.
REASON_BUDGET_BYTES = 2500
PART_CUT_MARKER = " [...] "
SUMMARY_CUT_MARKER = " [... cut to fit the 4 KB response ...]"
LOG_CUT_MARKER = "[... earlier log lines cut ...]\n"


class BuildFailedError(RuntimeError):
    """The image build failed, was stopped, superseded or did not finish in time."""


class Clients:
    """The AWS clients the handlers use; tests pass stubbed ones."""

    def __init__(self, **clients: Any) -> None:
        self._clients = dict(clients)

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._clients:
            self._clients[service] = boto3.client(service)
        return self._clients[service]


_CLIENTS = Clients()


def _region(clients: Clients) -> str:
    """The region the clients call."""
    return str(clients.codepipeline.meta.region_name or os.environ.get("AWS_REGION", "us-east-1"))


def _error_code(err: ClientError) -> str:
    """The AWS error code of ``err``."""
    return str(err.response.get("Error", {}).get("Code", ""))


def _failure(err: ClientError) -> dict[str, str]:
    """The ``extra`` keys of a logged AWS error."""
    return {"error_type": type(err).__name__, "error": str(err), "error_code": _error_code(err)}


def _with_retries(call: Callable[[], Any], what: str, sleep: Callable[[float], None]) -> Any:
    """Run ``call``, retrying AccessDenied / throttling (fresh IAM policies take seconds to apply)."""
    for delay in (*START_RETRY_DELAYS, None):
        try:
            return call()
        except ClientError as err:
            code = _error_code(err)
            if code not in RETRYABLE_START_ERRORS or delay is None:
                raise
            logger.warning(
                "%s failed with %s; retrying in %.0f s",
                what,
                code,
                delay,
                extra={"call": what, "retry_in_seconds": delay, **_failure(err)},
            )
            sleep(delay)
    raise AssertionError("unreachable")


def find_image_digest(clients: Clients, repository: str, tag: str) -> str | None:
    """The digest of ``repository:tag`` or None when the tag does not exist."""
    try:
        response = clients.ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ClientError as err:
        if _error_code(err) == "ImageNotFoundException":
            return None
        raise
    details = response.get("imageDetails") or []
    return str(details[0]["imageDigest"]) if details else None


def current_function_digest(clients: Clients, function_name: str) -> str | None:
    """The digest the function runs now, or None when the function does not exist."""
    try:
        response = clients.__getattr__("lambda").get_function(FunctionName=function_name)
    except ClientError as err:
        if _error_code(err) == "ResourceNotFoundException":
            return None
        raise
    resolved = str(response.get("Code", {}).get("ResolvedImageUri") or response.get("Code", {}).get("ImageUri", ""))
    _, _, digest = resolved.partition("@")
    return digest if digest.startswith("sha256:") else None


def _result(tag: str, digest: str, *, execution_id: str = "", built: bool) -> dict[str, str]:
    """The resource's attributes for an image in ECR."""
    return {
        "ImageTag": tag,
        "ImageDigest": digest,
        "DigestHex": digest.removeprefix("sha256:"),
        "PipelineExecutionId": execution_id,
        "Built": "true" if built else "false",
    }


def copy_source(props: Mapping[str, Any], *, clients: Clients, sleep: Callable[[float], None]) -> str:
    """The version of the source key holding ``ImageTag``: the current one if it does, else a fresh copy."""
    bucket, key, tag = props["SourceBucket"], props["SourceKey"], str(props["ImageTag"])
    try:
        head = clients.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if _error_code(err) not in ("404", "NoSuchKey", "NotFound"):
            raise
        head = {}
    if head.get("Metadata", {}).get(TAG_METADATA) == tag and head.get("VersionId"):
        logger.info(
            "s3://%s/%s version %s already holds %s: not copied again",
            bucket,
            key,
            head["VersionId"],
            tag,
            extra={"image_tag": tag, "source_key": key, "source_version": head["VersionId"]},
        )
        return str(head["VersionId"])
    copied = _with_retries(
        lambda: clients.s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": props["AssetBucket"], "Key": props["AssetKey"]},
            Metadata={TAG_METADATA: tag},
            MetadataDirective="REPLACE",
        ),
        "CopyObject",
        sleep,
    )
    version_id = copied.get("VersionId")
    if not version_id:
        raise RuntimeError(f"s3://{bucket}/{key} has no version id: is versioning on?")
    logger.info(
        "copied the build context of %s to s3://%s/%s version %s",
        tag,
        bucket,
        key,
        version_id,
        extra={"image_tag": tag, "source_key": key, "source_version": version_id},
    )
    return str(version_id)


def handle_source_event(
    event: Mapping[str, Any], *, clients: Clients, sleep: Callable[[float], None]
) -> dict[str, Any]:
    """``Custom::CodeBuildDockerImageSource``: put the build context at the pipeline's source key."""
    props = event["ResourceProperties"]
    physical_id = f"s3://{props['SourceBucket']}/{props['SourceKey']}"
    if event["RequestType"] == "Delete":  # the object stays: the bucket follows its removal policy
        return {"PhysicalResourceId": physical_id}
    return {"PhysicalResourceId": physical_id, "Data": {"VersionId": copy_source(props, clients=clients, sleep=sleep)}}


def request_token(request_id: str, version_id: str) -> str:
    """StartPipelineExecution's idempotency token from the request id and the source version (API charset)."""
    return "".join(c for c in f"{request_id}-{version_id}" if c.isalnum() or c == "-")[:128]


def start_build(
    props: Mapping[str, Any],
    *,
    update_function: bool,
    request_id: str,
    clients: Clients,
    sleep: Callable[[float], None],
) -> str:
    """Start the pipeline on the source version of this tag, idempotently for one request."""
    version_id = str(props["SourceVersion"])
    kwargs: dict[str, Any] = {
        "name": props["PipelineName"],
        "variables": [
            {"name": "IMAGE_TAG", "value": props["ImageTag"]},
            {"name": "UPDATE_FUNCTION", "value": "true" if update_function else "false"},
        ],
        "sourceRevisions": [
            {
                "actionName": props.get("SourceActionName", "Source"),
                "revisionType": "S3_OBJECT_VERSION_ID",
                "revisionValue": version_id,
            }
        ],
        "clientRequestToken": request_token(request_id, version_id),
    }
    started = _with_retries(
        lambda: clients.codepipeline.start_pipeline_execution(**kwargs), "StartPipelineExecution", sleep
    )
    execution_id = str(started["pipelineExecutionId"])
    logger.info(
        "started %s execution %s for tag %s (source version %s, update_function=%s)",
        props["PipelineName"],
        execution_id,
        props["ImageTag"],
        version_id,
        update_function,
        extra={
            "image_tag": props["ImageTag"],
            "pipeline": props["PipelineName"],
            "execution_id": execution_id,
            "source_version": version_id,
            "update_function": update_function,
        },
    )
    return execution_id


def running_executions(clients: Clients, pipeline: str) -> list[tuple[str, dict[str, str]]]:
    """``(execution id, pipeline variables)`` of the pipeline's executions still in progress."""
    summaries = clients.codepipeline.list_pipeline_executions(pipelineName=pipeline, maxResults=20).get(
        "pipelineExecutionSummaries", []
    )
    running = []
    for summary in summaries:
        if summary.get("status") != RUNNING:
            continue
        execution_id = str(summary["pipelineExecutionId"])
        execution = clients.codepipeline.get_pipeline_execution(
            pipelineName=pipeline, pipelineExecutionId=execution_id
        )["pipelineExecution"]
        variables = {str(v.get("name")): str(v.get("resolvedValue", "")) for v in execution.get("variables", [])}
        running.append((execution_id, variables))
    return running


def _running_or_empty(clients: Clients, pipeline: str) -> list[tuple[str, dict[str, str]]]:
    """:func:`running_executions`, or none (logged) when they cannot be read."""
    try:
        return running_executions(clients, pipeline)
    except ClientError as err:
        logger.warning(
            "could not list the executions of %s: %s",
            pipeline,
            _error_code(err),
            extra={"pipeline": pipeline, **_failure(err)},
        )
        return []


def _try(what: str, call: Callable[[], Any]) -> bool:
    """Run one best-effort call; log and swallow its AWS error."""
    try:
        call()
    except ClientError as err:
        logger.warning("%s failed: %s", what, _error_code(err), extra={"call": what, **_failure(err)})
        return False
    return True


def stop_in_flight_builds(
    clients: Clients,
    props: Mapping[str, Any],
    reason: str,
    *,
    keep_tag: str | None = None,
    running: Sequence[tuple[str, Mapping[str, str]]] | None = None,
) -> list[str]:
    """Stop the executions and builds still running, except those building ``keep_tag``; best effort.

    Each stop on its own, errors logged, never raised. ``running``: :func:`running_executions` when the
    caller has it. Returns what was stopped (execution ids, then build ids).
    """
    pipeline, project = props["PipelineName"], props.get("ProjectName")
    stopped: list[str] = []
    if running is None:
        running = _running_or_empty(clients, pipeline)
    for execution_id, variables in running:
        if keep_tag is not None and variables.get("IMAGE_TAG") == keep_tag:
            continue
        if _try(
            f"StopPipelineExecution {execution_id}",
            functools.partial(
                clients.codepipeline.stop_pipeline_execution,
                pipelineName=pipeline,
                pipelineExecutionId=execution_id,
                abandon=True,
                reason=reason[:200],
            ),
        ):
            stopped.append(execution_id)
    builds: list[dict[str, Any]] = []
    if project:
        try:
            ids = clients.codebuild.list_builds_for_project(projectName=project, sortOrder="DESCENDING").get("ids", [])
            builds = clients.codebuild.batch_get_builds(ids=ids[:10]).get("builds", []) if ids else []
        except ClientError as err:
            logger.warning(
                "could not list the builds of %s: %s",
                project,
                _error_code(err),
                extra={"project": project, **_failure(err)},
            )
    for build in builds:
        if build.get("buildStatus") != "IN_PROGRESS":
            continue
        variables = {
            str(v.get("name")): str(v.get("value", ""))
            for v in build.get("environment", {}).get("environmentVariables", [])
        }
        if keep_tag is not None and variables.get("IMAGE_TAG") == keep_tag:
            continue
        build_id = str(build["id"])
        if _try(f"StopBuild {build_id}", functools.partial(clients.codebuild.stop_build, id=build_id)):
            stopped.append(build_id)
    if stopped:
        logger.info(
            "stopped in-flight builds of %s: %s",
            pipeline,
            ", ".join(stopped),
            extra={"pipeline": pipeline, "stopped": stopped, "stopped_count": len(stopped)},
        )
    return stopped


def _adoptable_execution(
    props: Mapping[str, Any],
    running: Sequence[tuple[str, Mapping[str, str]]],
    *,
    adopt_creation_run: bool,
    update_function: bool,
) -> str | None:
    """The id of a running execution that already builds this tag in this mode, if any."""
    tag = str(props["ImageTag"])
    adopted = next(
        (
            execution_id
            for execution_id, variables in running
            if variables.get("IMAGE_TAG") == tag
            # The pipeline's run at creation uses the default UPDATE_FUNCTION; the function does not
            # exist yet then, and the build leaves a missing function alone.
            and (adopt_creation_run or variables.get("UPDATE_FUNCTION") == ("true" if update_function else "false"))
        ),
        None,
    )
    if adopted is None:
        return None
    logger.info(
        "execution %s already builds %s: waiting for it instead of starting another",
        adopted,
        tag,
        extra={"image_tag": tag, "pipeline": props["PipelineName"], "execution_id": adopted},
    )
    return adopted


def _stop_other_tags(clients: Clients, props: Mapping[str, Any], request_id: str) -> list[tuple[str, dict[str, str]]]:
    """Stop what still builds another tag; return the running executions (this tag's stay)."""
    tag = str(props["ImageTag"])
    running = _running_or_empty(clients, props["PipelineName"])
    # An older async build must not repoint the function after this request settles it (a later
    # deploy, or a rollback to an image already in ECR). Executions building this very tag stay:
    # this request's own, started by an earlier invocation of this handler.
    stop_in_flight_builds(
        clients, props, f"superseded by image {tag} (request {request_id})", keep_tag=tag, running=running
    )
    return running


def handle_event(
    event: Mapping[str, Any],
    *,
    clients: Clients | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """on_event of both resource types: the provider response (``PhysicalResourceId``, ``Data``)."""
    clients = clients or _CLIENTS
    if event.get("ResourceType") == SOURCE_RESOURCE_TYPE:
        return handle_source_event(event, clients=clients, sleep=sleep)
    request = event["RequestType"]
    props = event["ResourceProperties"]
    physical_id = event.get("PhysicalResourceId") or f"image-build:{props['FunctionName']}"
    request_id = str(event.get("RequestId", ""))
    if request == "Delete":
        stop_in_flight_builds(clients, props, f"stack resource deleted (request {request_id})")
        return {"PhysicalResourceId": physical_id}
    tag = str(props["ImageTag"])
    running = _stop_other_tags(clients, props, request_id) if request == "Update" else None
    existing = find_image_digest(clients, props["RepositoryName"], tag)
    if existing:
        logger.info(
            "%s:%s exists (%s): nothing to build",
            props["RepositoryName"],
            tag,
            existing,
            extra={"image_tag": tag, "image_digest": existing},
        )
        return {"PhysicalResourceId": physical_id, "Data": _result(tag, existing, built=False)}
    if running is None:  # Create: only needed when there is something to build
        running = _running_or_empty(clients, props["PipelineName"])

    wait = request == "Create" or props.get("WaitForBuild") == "true"
    running_digest = None
    if not wait:
        running_digest = current_function_digest(clients, props["FunctionName"])
        wait = running_digest is None  # no function yet (or not an image function): it needs this image
    update_function = not wait
    execution_id = _adoptable_execution(
        props, running, adopt_creation_run=request == "Create", update_function=update_function
    ) or start_build(props, update_function=update_function, request_id=request_id, clients=clients, sleep=sleep)
    if wait:
        data = {"PipelineExecutionId": execution_id, "ImageTag": tag, "StartedAt": str(int(now()))}
        return {"PhysicalResourceId": physical_id, "Data": data}
    assert running_digest is not None
    logger.info(
        "async mode: %s keeps %s until the build updates it",
        props["FunctionName"],
        running_digest,
        extra={"image_tag": tag, "execution_id": execution_id, "image_digest": running_digest},
    )
    return {
        "PhysicalResourceId": physical_id,
        "Data": _result(tag, running_digest, execution_id=execution_id, built=False),
    }


def console_url(region: str, pipeline: str, execution_id: str) -> str:
    """The CodePipeline console page of one execution."""
    return (
        f"https://{region}.console.aws.amazon.com/codesuite/codepipeline/pipelines/{pipeline}"
        f"/executions/{execution_id}/timeline?region={region}"
    )


def _build_action(clients: Clients, pipeline: str, execution_id: str) -> dict[str, Any] | None:
    """The Build stage's action execution of ``execution_id``, if any."""
    response = clients.codepipeline.list_action_executions(
        pipelineName=pipeline, filter={"pipelineExecutionId": execution_id}
    )
    details = [d for d in response.get("actionExecutionDetails", []) if d.get("stageName") == "Build"]
    return details[0] if details else None


def _json_cost(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string as ``json.dumps`` escapes it (an upper bound for any encoder)."""
    return len(json.dumps(text)) - 2


def _keep_start(text: str, budget: int) -> str:
    """The longest start of ``text`` whose JSON cost is at most ``budget``."""
    used = 0
    for index, char in enumerate(text):
        used += _json_cost(char)
        if used > budget:
            return text[:index]
    return text


def _keep_end(text: str, budget: int) -> str:
    """The longest end of ``text`` whose JSON cost is at most ``budget``."""
    used = 0
    for index in range(len(text) - 1, -1, -1):
        used += _json_cost(text[index])
        if used > budget:
            return text[index + 1 :]
    return text


def _clip_chars(text: str, max_chars: int) -> str:
    """``text`` stripped, or its start and end around ``PART_CUT_MARKER`` when longer than ``max_chars``."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    keep = max(max_chars - len(PART_CUT_MARKER), 0)
    return text[: keep - keep // 2] + PART_CUT_MARKER + text[len(text) - keep // 2 :]


def _clip_start_of_log(tail: str, budget: int) -> str:
    """The end of the log within ``budget`` JSON bytes, starting at a line when a cut was needed."""
    if _json_cost(tail) <= budget:
        return tail
    kept = _keep_end(tail, budget - _json_cost(LOG_CUT_MARKER))
    newline = kept.find("\n")
    if 0 <= newline < len(kept) - 1:  # drop the partial first line, unless only the last line is left
        kept = kept[newline + 1 :]
    return LOG_CUT_MARKER + kept if kept else ""


def compose_failure_reason(
    parts: Sequence[str],
    link: str,
    log_tail: str = "",
    *,
    budget_bytes: int = REASON_BUDGET_BYTES,
    part_chars: int = REASON_PART_CHARS,
    tail_chars: int = LOG_TAIL_CHARS,
) -> str:
    """The failure reason for CloudFormation: at most ``budget_bytes`` of JSON, quotes included. Pure.

    ``"<part>. <part>. Console: <link>\\nLast build log lines:\\n<log tail>"``; what gives way first
    when it does not fit: docs/image-build.md ("The failure reason").
    """
    # dict.fromkeys: the pipeline's summary often repeats the action's word for word; say it once.
    summary = ". ".join(
        clipped for clipped in dict.fromkeys(_clip_chars(part, part_chars) for part in parts) if clipped
    )
    console = f". Console: {link}"
    tail = log_tail.rstrip()
    if len(tail) > tail_chars:  # keep whole lines where possible: a cut mid-line starts the tail
        tail = tail[-tail_chars:] if tail_chars > 0 else ""
        newline = tail.find("\n")
        if 0 <= newline < len(tail) - 1:
            tail = tail[newline + 1 :]
    tail_heading = "\nLast build log lines:\n" if tail else ""
    full = summary + console + tail_heading + tail
    if _json_cost(full) + 2 <= budget_bytes:
        return full

    room = budget_bytes - 2 - _json_cost(console + tail_heading)
    summary_cost, tail_cost = _json_cost(summary), _json_cost(tail)
    half = max(room, 0) // 2
    if summary_cost <= half:
        summary_room, tail_room = summary_cost, room - summary_cost
    elif tail_cost <= half:
        summary_room, tail_room = room - tail_cost, tail_cost
    else:
        summary_room, tail_room = room - half, half
    if summary_cost > summary_room:
        summary = _keep_start(summary, summary_room - _json_cost(SUMMARY_CUT_MARKER)).rstrip() + SUMMARY_CUT_MARKER
    tail = _clip_start_of_log(tail, tail_room)
    reason = summary + console + (tail_heading + tail if tail else "")
    if _json_cost(reason) + 2 <= budget_bytes:
        return reason
    # Only a link longer than about the whole budget gets here: keep the headline and the log's end.
    room = max(budget_bytes - 2 - _json_cost(PART_CUT_MARKER), 0)
    start = _keep_start(full, room - room // 2)
    return start + PART_CUT_MARKER + _keep_end(full[len(start) :], room // 2)


def failure_reason(clients: Clients, props: Mapping[str, Any], execution_id: str, status: str, summary: str) -> str:
    """A bounded reason for CloudFormation: what failed, a console link and the tail of the build log."""
    pipeline = props["PipelineName"]
    region = _region(clients)
    parts = [f"image build {props['ImageTag']} {status.lower()}: pipeline {pipeline} execution {execution_id}"]
    if summary:
        parts.append(summary)
    link = console_url(region, pipeline, execution_id)
    tail = ""
    try:
        action = _build_action(clients, pipeline, execution_id)
        result = (action or {}).get("output", {}).get("executionResult", {})
        build_id = result.get("externalExecutionId")
        if result.get("externalExecutionSummary"):
            parts.append(str(result["externalExecutionSummary"]))
        if build_id:
            builds = clients.codebuild.batch_get_builds(ids=[build_id]).get("builds", [])
            if builds:
                build = builds[0]
                link = build.get("logs", {}).get("deepLink") or result.get("externalExecutionUrl") or link
                failed = [
                    f"{p['phaseType']}: {p['contexts'][0].get('message', '')}"
                    for p in build.get("phases", [])
                    if p.get("phaseStatus") not in (None, "SUCCEEDED") and p.get("contexts")
                ]
                parts.extend(failed[:2])
                group, stream = build.get("logs", {}).get("groupName"), build.get("logs", {}).get("streamName")
                if group and stream:
                    events = clients.logs.get_log_events(
                        logGroupName=group, logStreamName=stream, limit=LOG_TAIL_LINES, startFromHead=False
                    ).get("events", [])
                    tail = "\n".join(str(e.get("message", "")).rstrip() for e in events[-LOG_TAIL_LINES:])
    except ClientError as err:  # the reason must still reach CloudFormation
        parts.append(f"(could not read the build log: {_error_code(err)})")
    return compose_failure_reason(parts, link, tail)


def check_complete(
    event: Mapping[str, Any], *, clients: Clients | None = None, now: Callable[[], float] = time.time
) -> dict[str, Any]:
    """is_complete: ``{"IsComplete": bool, "Data": ...}``; raises BuildFailedError with a bounded reason."""
    clients = clients or _CLIENTS
    data = event.get("Data") or {}
    props = event["ResourceProperties"]
    execution_id = data.get("PipelineExecutionId")
    if event["RequestType"] == "Delete" or "ImageDigest" in data or not execution_id:
        return {"IsComplete": True}
    pipeline = props["PipelineName"]
    execution = clients.codepipeline.get_pipeline_execution(pipelineName=pipeline, pipelineExecutionId=execution_id)[
        "pipelineExecution"
    ]
    status = str(execution.get("status", ""))
    summary = str(execution.get("statusSummary", ""))
    elapsed = now() - float(data.get("StartedAt", now()))
    past_deadline = elapsed > float(props.get("DeadlineSeconds", 2700))
    if status == RUNNING or status == "Stopping":
        if past_deadline:
            raise BuildFailedError(
                failure_reason(clients, props, execution_id, "timed out", f"still {status} after {int(elapsed)} s")
            )
        return {"IsComplete": False}
    tag = str(props["ImageTag"])
    if status in OVERTAKEN:
        # An operator's "Release change" superseded it, or a definition update cancelled it: the deploy
        # still succeeds if the tag reaches ECR, and keeps waiting (until its deadline) while another
        # execution builds the tag.
        digest = find_image_digest(clients, props["RepositoryName"], tag)
        if digest:
            return {"IsComplete": True, "Data": _result(tag, digest, execution_id=execution_id, built=True)}
        others = [e for e, variables in running_executions(clients, pipeline) if variables.get("IMAGE_TAG") == tag]
        if others and not past_deadline:
            logger.info(
                "execution %s was %s; %s builds %s: still waiting",
                execution_id,
                status,
                others[0],
                tag,
                extra={"image_tag": tag, "execution_id": execution_id, "status": status, "adopted": others[0]},
            )
            return {"IsComplete": False}
        why = f"no other execution is building {tag}" if not others else f"still not in ECR after {int(elapsed)} s"
        summary = f"{summary}. {why}" if summary else why
    if status == "Succeeded":
        digest = find_image_digest(clients, props["RepositoryName"], tag)
        if not digest:
            raise BuildFailedError(
                f"pipeline {pipeline} execution {execution_id} succeeded but {props['RepositoryName']}:{tag} "
                f"is not in ECR. Console: {console_url(_region(clients), pipeline, execution_id)}"
            )
        return {"IsComplete": True, "Data": _result(tag, digest, execution_id=execution_id, built=True)}
    raise BuildFailedError(failure_reason(clients, props, execution_id, status or "unknown", summary))


def on_event(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Lambda entry point of the provider's on-event handler."""
    request, resource = event.get("RequestType"), event.get("LogicalResourceId")
    tag = event.get("ResourceProperties", {}).get("ImageTag")
    logger.info(
        "%s %s tag=%s",
        request,
        resource,
        tag,
        extra={"request_type": request, "logical_resource_id": resource, "image_tag": tag},
    )
    return handle_event(event)


def is_complete(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Lambda entry point of the provider's is-complete handler."""
    return check_complete(event)
