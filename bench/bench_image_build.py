"""CodeBuildDockerImage: size of the construct, of the build context it ships, and what a no-op deploy does.

Rows: resources of a stack holding only the construct (real repository context), synth time of that
stack, share of the repository's files shipped in the build context, tag stability across two synths,
and the AWS calls the trigger makes on a redeploy of an unchanged image (stubbed, no network).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from bench import Row

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = "lambdas/process_receipt/Dockerfile"


def _repository_files() -> int:
    """Files git tracks (a fresh clone), so local venvs and caches do not count."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
    return len([name for name in out.stdout.split(b"\0") if name])


def _synth(outdir: str) -> tuple[int, str, float]:
    import aws_cdk as cdk

    from constructs.codebuild_docker_image import CodeBuildDockerImage, LambdaConfig

    start = time.perf_counter()
    app = cdk.App(outdir=outdir)
    stack = cdk.Stack(app, "ImageOnly")
    image = CodeBuildDockerImage(
        stack,
        "Image",
        dockerfile_path=DOCKERFILE,
        lambda_function_name="bench-process-receipt",
        lambda_config=LambdaConfig(timeout=600, memory_size=1536),
    )
    assembly = app.synth()
    seconds = time.perf_counter() - start
    return len(assembly.get_stack_by_name("ImageOnly").template["Resources"]), image.image_tag, seconds


def _noop_redeploy_calls() -> list[str]:
    import boto3
    from botocore.stub import Stubber

    from lambdas.image_build_trigger import handler

    calls: list[str] = []
    clients = {n: boto3.client(n, region_name="us-east-1") for n in ("ecr", "codepipeline", "codebuild")}  # type: ignore[call-overload]
    for name, client in clients.items():
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
        del name
    ecr, pipeline, build = (Stubber(clients[n]) for n in ("ecr", "codepipeline", "codebuild"))
    pipeline.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": []})
    build.add_response("list_builds_for_project", {})
    ecr.add_response("describe_images", {"imageDetails": [{"imageDigest": "sha256:" + "a" * 64}]})
    props = {
        "ImageTag": "0" * 32,
        "PipelineName": "bench-image",
        "ProjectName": "bench-image-build",
        "RepositoryName": "bench-repository",
        "FunctionName": "bench-function",
        "WaitForBuild": "false",
    }
    with ecr, pipeline, build:
        handler.handle_event(
            {"RequestType": "Update", "RequestId": "r1", "PhysicalResourceId": "x", "ResourceProperties": props},
            clients=handler.Clients(**clients),
        )
    return calls


def rows() -> list[Row]:
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        resources, tag, seconds = _synth(first)
        _, tag_again, _ = _synth(second)
        template_a = (Path(first) / "ImageOnly.template.json").read_text()
        template_b = (Path(second) / "ImageOnly.template.json").read_text()
    from constructs.docker_build_context import resolve_context

    context = resolve_context(
        root=REPO_ROOT, dockerfile_path=DOCKERFILE, source_paths=None, build_args={}, platform="linux/arm64"
    )
    shipped, total = len(context.files), _repository_files()
    calls = _noop_redeploy_calls()
    starts = sum(1 for c in calls if c in ("StartPipelineExecution", "CopyObject", "StartBuild"))
    return [
        Row("image_build", "resources in a stack holding only the construct", str(resources), "<= 40", resources <= 40),
        Row("image_build", "synth of that stack, seconds (this machine)", f"{seconds:.1f}", "", None),
        Row(
            "image_build",
            "files shipped in the build context / repository files",
            f"{shipped}/{total} = {shipped / total:.2f}",
            "< 0.50",
            shipped / total < 0.5,
        ),
        Row(
            "image_build",
            "two synths: same tag and byte-identical template",
            "yes" if tag == tag_again and template_a == template_b else "no",
            "yes",
            tag == tag_again and template_a == template_b,
        ),
        Row(
            "image_build",
            "redeploy of an image already in ECR: copies/starts",
            f"{starts} ({len(calls)} read-only calls: {', '.join(calls)})",
            "0 starts",
            starts == 0,
        ),
    ]
