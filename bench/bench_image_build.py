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
from typing import Any

from bench import Row
from local_pipeline.template import REPO_ROOT


def _process_image() -> dict[str, Any]:
    """The process worker image's ``dockerfile_path``, ``source_paths`` and ``build_args``, as the stack gives them."""
    from constructs.create_labels_step_function import CREATE_LABELS

    return CREATE_LABELS.image_build()


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
        **_process_image(),
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


def _instructions(dockerfile: Path) -> list[tuple[int, str, str]]:
    """``(stage index, instruction, arguments)`` of a Dockerfile: continuations joined, comments dropped."""
    out: list[tuple[int, str, str]] = []
    stage, pending = -1, ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append((stage, keyword, args))
    return out


def _cache_plan(dockerfile: Path, changed: set[str], *, all_stages: bool) -> tuple[list[str], list[str]]:
    """The layer steps (FROM/COPY/RUN) a rebuild reuses and the ones it runs again, after ``changed`` files.

    BuildKit reuses a step when its cache record is available and the step before it and its inputs are
    unchanged. ``all_stages`` (registry cache, ``mode=max``) exports a record for every stage's steps;
    an inline cache (``mode=min``) only for the final stage, so earlier stages' steps run again and a
    ``COPY --from`` of such a stage is recomputed from their output.
    """
    steps = _instructions(dockerfile)
    final = max(stage for stage, _, _ in steps)
    names = {
        index: args.split()[-1]
        for index, (stage, kw, args) in enumerate(steps)
        if kw == "FROM" and " AS " in args.upper()
    }
    stage_of_name = {name.lower(): steps[index][0] for index, name in names.items()}
    reused, rerun = [], []
    hit_by_stage: dict[int, bool] = {}
    for stage, keyword, args in steps:
        if keyword not in ("FROM", "COPY", "RUN"):
            continue
        label = f"stage {stage}: {keyword} {' '.join(args.split())}"
        if keyword == "FROM":
            hit = True  # the same base image tag
        else:
            hit = hit_by_stage[stage] and (all_stages or stage == final)
            if keyword == "COPY":
                words = args.split()
                source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
                if source is not None:
                    hit = hit and hit_by_stage[stage_of_name[source.lower()]]
                else:
                    sources = [w for w in words if not w.startswith("--")][:-1]
                    hit = hit and not any(
                        c == src or c.startswith(src.rstrip("/") + "/") for src in sources for c in changed
                    )
        hit_by_stage[stage] = hit
        (reused if hit else rerun).append(label)
    return reused, rerun


def rows() -> list[Row]:
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        resources, tag, seconds = _synth(first)
        _, tag_again, _ = _synth(second)
        template_a = (Path(first) / "ImageOnly.template.json").read_text()
        template_b = (Path(second) / "ImageOnly.template.json").read_text()
    from constructs.docker_build_context import resolve_context

    image = _process_image()
    context = resolve_context(root=REPO_ROOT, platform="linux/arm64", **image)
    dockerfile = REPO_ROOT / image["dockerfile_path"]
    shipped, total = len(context.files), _repository_files()
    calls = _noop_redeploy_calls()
    # A change to the labeling code only (requirements.lock unchanged), as the buildspec builds it
    # (registry cache, mode=max) and as an inline cache would (final stage only).
    source_change = {"receipt_label/graph.py"}
    max_reused, max_rerun = _cache_plan(dockerfile, source_change, all_stages=True)
    inline_reused, inline_rerun = _cache_plan(dockerfile, source_change, all_stages=False)
    pip_max = any("pip install" in step for step in max_rerun)
    pip_inline = any("pip install" in step for step in inline_rerun)
    runs = "; ".join(step[:40] for step in max_rerun)
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
        Row(
            "image_build",
            "code-only change, registry cache mode=max: layer steps reused / run; pip install runs",
            f"{len(max_reused)}/{len(max_rerun)}; {'yes' if pip_max else 'no'} (runs: {runs})",
            "pip install reused",
            not pip_max,
        ),
        Row(
            "image_build",
            "the same change with an inline cache (final stage only), for comparison",
            f"{len(inline_reused)}/{len(inline_rerun)}; pip install runs: {'yes' if pip_inline else 'no'}",
            "",
            None,
        ),
    ]
