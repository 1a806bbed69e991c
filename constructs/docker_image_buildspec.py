"""The CodeBuild buildspec of CodeBuildDockerImage.

Every command is a plain POSIX ``sh`` command, so tests run them under ``/bin/sh`` with fake
``docker`` and ``aws`` executables. CodeBuild fails the build when a command exits non-zero, and
``on-failure: ABORT`` stops the following phases; the Lambda is never pointed at a half-built image.

Variables the commands read:
- project environment: ``REPOSITORY_URI``, ``REPOSITORY_NAME``, ``PLATFORM``, ``DOCKERFILE``,
  ``CACHE_TAG``, ``FUNCTION_NAME``; CodeBuild itself sets ``AWS_DEFAULT_REGION``.
- pipeline variables passed by the CodeBuild action: ``IMAGE_TAG``, ``UPDATE_FUNCTION``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

CACHE_TAG = "buildcache"

LOGIN = (
    'aws ecr get-login-password --region "$AWS_DEFAULT_REGION"'
    ' | docker login --username AWS --password-stdin "${REPOSITORY_URI%%/*}"'
)
# A re-run of the pipeline for a tag already in ECR (say, "Release change" after an async update
# failed) skips build and push (content tags are immutable) and only updates the function.
EXISTS_MARKER = '"${TMPDIR:-/tmp}/image-exists-$IMAGE_TAG"'
CHECK_EXISTING = (
    'if aws ecr describe-images --repository-name "$REPOSITORY_NAME" --image-ids "imageTag=$IMAGE_TAG"'
    f' > /dev/null 2>&1; then touch {EXISTS_MARKER} && echo "$IMAGE_TAG is already in ECR: not rebuilt"; fi'
)
SKIP_IF_EXISTING = f"[ -f {EXISTS_MARKER} ] || "
PUSH_IMAGE = SKIP_IF_EXISTING + 'docker push "$REPOSITORY_URI:$IMAGE_TAG"'
PUSH_CACHE = SKIP_IF_EXISTING + 'docker push "$REPOSITORY_URI:$CACHE_TAG"'
# Async mode: point the function at the digest just pushed and wait until Lambda has applied it.
# One command, so that any failing step fails it (the && chain) and CodeBuild fails the build.
UPDATE_FUNCTION = (
    'if [ "$UPDATE_FUNCTION" = "true" ]; then'
    ' IMAGE_DIGEST="$(aws ecr describe-images --repository-name "$REPOSITORY_NAME"'
    ' --image-ids "imageTag=$IMAGE_TAG" --query "imageDetails[0].imageDigest" --output text)"'
    ' && aws lambda wait function-updated-v2 --function-name "$FUNCTION_NAME"'
    ' && aws lambda update-function-code --function-name "$FUNCTION_NAME"'
    ' --image-uri "$REPOSITORY_URI@$IMAGE_DIGEST" --query LastUpdateStatus --output text'
    ' && aws lambda wait function-updated-v2 --function-name "$FUNCTION_NAME"'
    ' && echo "function $FUNCTION_NAME now runs $REPOSITORY_URI@$IMAGE_DIGEST";'
    " fi"
)


def build_command(build_args: Mapping[str, str]) -> str:
    """``docker buildx build`` for the target platform, with the registry cache (inline cache
    metadata in the image tagged ``$CACHE_TAG``) and without provenance attestations (Lambda
    rejects image indexes carrying attestation manifests)."""
    args = "".join(f" --build-arg {shlex.quote(f'{key}={build_args[key]}')}" for key in sorted(build_args))
    return SKIP_IF_EXISTING + (
        'docker buildx build --platform "$PLATFORM" --provenance=false'
        ' --cache-from "type=registry,ref=$REPOSITORY_URI:$CACHE_TAG" --cache-to type=inline'
        f'{args} --file "$DOCKERFILE" --tag "$REPOSITORY_URI:$IMAGE_TAG" --tag "$REPOSITORY_URI:$CACHE_TAG"'
        " --load ."
    )


def build_spec_object(build_args: Mapping[str, str]) -> dict[str, Any]:
    """The buildspec as a plain object (``codebuild.BuildSpec.from_object``)."""
    return {
        "version": "0.2",
        "phases": {
            "pre_build": {
                "on-failure": "ABORT",
                "commands": ['test -n "$IMAGE_TAG"', LOGIN, CHECK_EXISTING],
            },
            "build": {
                "on-failure": "ABORT",
                "commands": [build_command(build_args), PUSH_IMAGE, PUSH_CACHE, UPDATE_FUNCTION],
            },
        },
    }


def commands_in_order(spec: Mapping[str, Any]) -> list[str]:
    """The commands of a rendered buildspec in the order CodeBuild runs them."""
    phases = spec["phases"]
    ordered: list[str] = []
    for phase in ("install", "pre_build", "build", "post_build"):
        if phase in phases:
            ordered.extend(phases[phase]["commands"])
    return ordered
