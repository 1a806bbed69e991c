"""The CodeBuild buildspec of CodeBuildDockerImage.

Every command is a plain POSIX ``sh`` command, so tests run them under ``/bin/sh`` with fake
``docker`` and ``aws`` executables. CodeBuild fails the build when a command exits non-zero, and
``on-failure: ABORT`` stops the following phases; the Lambda is never pointed at a half-built image.

Variables the commands read:
- project environment: ``REPOSITORY_URI``, ``REPOSITORY_NAME``, ``PLATFORM``, ``DOCKERFILE``,
  ``CACHE_TAG``, ``FUNCTION_NAME``, ``BUILDKIT_IMAGE``; CodeBuild itself sets ``AWS_DEFAULT_REGION``.
- pipeline variables passed by the CodeBuild action: ``IMAGE_TAG``, ``UPDATE_FUNCTION``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

CACHE_TAG = "buildcache"
#: The ``docker-container`` builder the build creates from ``$BUILDKIT_IMAGE``: the docker driver
#: (CodeBuild's default) cannot export a registry cache of every stage.
BUILDER_NAME = "image-builder"
#: Seconds between two reads of the function's LastUpdateStatus, and how many reads at most (20 min:
#: Lambda optimizes a new image before the update succeeds; large images take minutes).
FUNCTION_POLL_SECONDS = 10
FUNCTION_POLL_LIMIT = 120

LOGIN = (
    'aws ecr get-login-password --region "$AWS_DEFAULT_REGION"'
    ' | docker login --username AWS --password-stdin "${REPOSITORY_URI%%/*}"'
)
# Base images come from ECR Public: authenticated pulls get the account's higher pull quota instead of
# the anonymous per-address one (CodeBuild hosts share addresses). The token is always issued in us-east-1.
LOGIN_PUBLIC = (
    "aws ecr-public get-login-password --region us-east-1 | docker login --username AWS --password-stdin public.ecr.aws"
)
# A re-run of the pipeline for a tag already in ECR (say, "Release change" after an async update
# failed) skips the build (content tags are immutable) and only updates the function.
EXISTS_MARKER = '"${TMPDIR:-/tmp}/image-exists-$IMAGE_TAG"'
CHECK_EXISTING = (
    'if aws ecr describe-images --repository-name "$REPOSITORY_NAME" --image-ids "imageTag=$IMAGE_TAG"'
    f' > /dev/null 2>&1; then touch {EXISTS_MARKER} && echo "$IMAGE_TAG is already in ECR: not rebuilt"; fi'
)
SKIP_IF_EXISTING = f"[ -f {EXISTS_MARKER} ] || "
# A BuildKit builder in a container: it can export the cache of every stage (mode=max) to the registry.
# The cache is an optimisation, never a reason to fail: when the builder's image cannot be pulled (a
# Docker Hub pull limit, a mirror that is down), the build falls back to the default docker driver with
# an inline cache of the final stage, and says so.
NO_BUILDER_MARKER = '"${TMPDIR:-/tmp}/no-container-builder"'
CREATE_BUILDER = SKIP_IF_EXISTING + (
    f"docker buildx create --name {BUILDER_NAME} --driver docker-container"
    ' --driver-opt "image=$BUILDKIT_IMAGE" --bootstrap --use'
    f" || {{ docker buildx rm {BUILDER_NAME} > /dev/null 2>&1; touch {NO_BUILDER_MARKER};"
    ' echo "warning: the BuildKit builder ($BUILDKIT_IMAGE) did not start: building on the default driver,'
    ' cache of the final stage only" >&2; }'
)
# Async mode: point the function at the digest in ECR and wait until Lambda has applied it. One
# command in a subshell, so any failing step fails it and CodeBuild fails the build.
# - before the update it waits only while another update is InProgress: a Failed last update is
#   exactly what this update may repair (botocore's function-updated-v2 waiter stops on Failed);
# - a function that does not exist yet is left alone: CloudFormation creates it from this image
#   (the pipeline's own run when the pipeline is created, in the first deploy);
# - after the update it waits up to FUNCTION_POLL_LIMIT x FUNCTION_POLL_SECONDS and, on Failed,
#   prints Lambda's LastUpdateStatusReason.
UPDATE_FUNCTION = f"""if [ "$UPDATE_FUNCTION" = "true" ]; then (
  state() {{
    aws lambda get-function-configuration --function-name "$FUNCTION_NAME" \\
      --query "[LastUpdateStatus, LastUpdateStatusReason]" --output text
  }}
  settle() {{
    polls=0
    while current="$(state)"; do
      case "$current" in
        InProgress*) ;;
        *) printf '%s\\n' "$current"; return 0 ;;
      esac
      polls=$((polls + 1))
      if [ "$polls" -ge {FUNCTION_POLL_LIMIT} ]; then
        echo "function $FUNCTION_NAME: update still InProgress after {FUNCTION_POLL_LIMIT * FUNCTION_POLL_SECONDS} s" \\
          >&2
        return 1
      fi
      sleep {FUNCTION_POLL_SECONDS}
    done
    return 1
  }}
  if ! current="$(state 2>&1)"; then
    case "$current" in
      *ResourceNotFoundException*)
        echo "function $FUNCTION_NAME does not exist yet: CloudFormation creates it from this image"
        exit 0 ;;
    esac
    printf '%s\\n' "$current" >&2
    exit 1
  fi
  before="$(settle)" || exit 1
  case "$before" in Failed*) echo "function $FUNCTION_NAME: last update failed ($before); updating again" ;; esac
  IMAGE_DIGEST="$(aws ecr describe-images --repository-name "$REPOSITORY_NAME" \\
    --image-ids "imageTag=$IMAGE_TAG" --query "imageDetails[0].imageDigest" --output text)" || exit 1
  aws lambda update-function-code --function-name "$FUNCTION_NAME" \\
    --image-uri "$REPOSITORY_URI@$IMAGE_DIGEST" --query LastUpdateStatus --output text || exit 1
  after="$(settle)" || exit 1
  case "$after" in
    Successful*) echo "function $FUNCTION_NAME now runs $REPOSITORY_URI@$IMAGE_DIGEST" ;;
    *) echo "function $FUNCTION_NAME: update to $REPOSITORY_URI@$IMAGE_DIGEST failed: $after" >&2; exit 1 ;;
  esac
); fi"""


def build_command(build_args: Mapping[str, str]) -> str:
    """``docker buildx build`` for the target platform on the container builder, pushing the image.

    The registry cache holds every stage's layers (``mode=max``) under ``$CACHE_TAG``, stored as an
    OCI image manifest (``image-manifest=true,oci-mediatypes=true``), the form ECR accepts; no
    provenance attestation (Lambda rejects image indexes carrying attestation manifests). Without the
    container builder (see ``CREATE_BUILDER``): the default driver, the cache inline in an image
    tagged ``$CACHE_TAG``.
    """
    args = "".join(f" --build-arg {shlex.quote(f'{key}={build_args[key]}')}" for key in sorted(build_args))
    return SKIP_IF_EXISTING + (
        f"{{ if [ -f {NO_BUILDER_MARKER} ]; then"
        ' builder=default; cache_to=type=inline; cache_tag="--tag=$REPOSITORY_URI:$CACHE_TAG";'
        f" else builder={BUILDER_NAME};"
        ' cache_to="type=registry,ref=$REPOSITORY_URI:$CACHE_TAG,mode=max,image-manifest=true,oci-mediatypes=true";'
        ' cache_tag=""; fi;'
        ' docker buildx build --builder "$builder" --platform "$PLATFORM" --provenance=false'
        ' --cache-from "type=registry,ref=$REPOSITORY_URI:$CACHE_TAG" --cache-to "$cache_to"'
        f'{args} --file "$DOCKERFILE" --tag "$REPOSITORY_URI:$IMAGE_TAG" $cache_tag --push .; }}'
    )


def build_spec_object(build_args: Mapping[str, str]) -> dict[str, Any]:
    """The buildspec as a plain object (``codebuild.BuildSpec.from_object``)."""
    return {
        "version": "0.2",
        "phases": {
            "pre_build": {
                "on-failure": "ABORT",
                "commands": ['test -n "$IMAGE_TAG"', LOGIN, LOGIN_PUBLIC, CHECK_EXISTING, CREATE_BUILDER],
            },
            "build": {
                "on-failure": "ABORT",
                "commands": [build_command(build_args), UPDATE_FUNCTION],
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
