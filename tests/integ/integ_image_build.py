"""Integration test: CodeBuildDockerImage builds a tiny arm64 image in CodeBuild and the function runs it.

Two constructs, one per mode: ``wait_for_build=False`` (the deploy returns before the build; the
function is updated when the build ends) and ``wait_for_build=True`` (the deploy waits for the build
and pins the function to the image's digest). Assertions, run by the deployed assertion stack:
each function's ``LastUpdateStatus`` is ``Successful`` and it runs an image of the repository under
the tag the construct computed; invoking it returns the tiny handler's payload.

Synthesized offline by ``tests/integration/test_integ_snapshots.py``; deployed by ``make integ``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, first on the path before aws_cdk: the project's constructs/ joins the constructs namespace.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aws_cdk as cdk
from aws_cdk import Duration
from aws_cdk.integ_tests_alpha import ExpectedResult, IntegTest, Match

from constructs.codebuild_docker_image import CodeBuildDockerImage, LambdaConfig
from tests.helpers import REPO_ROOT

PAYLOAD = '{"ping": 1}'


def build(app: cdk.App) -> IntegTest:
    stack = cdk.Stack(app, "IntegImageBuild", description="Integration test: CodeBuildDockerImage, both modes")
    images = {}
    for mode, wait in (("Async", False), ("Sync", True)):
        images[mode] = CodeBuildDockerImage(
            stack,
            f"TinyImage{mode}",
            dockerfile_path="tests/integ/tiny_image/Dockerfile",
            build_context_path=str(REPO_ROOT),
            source_paths=["tests/integ/tiny_image"],
            lambda_function_name=f"integ-tiny-image-{mode.lower()}",
            lambda_config=LambdaConfig(timeout=10, memory_size=256),
            wait_for_build=wait,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
    for image in images.values():
        cdk.Validations.of(image.lambda_function).acknowledge(
            cdk.Acknowledgment(
                id="Serverless::Serverless-LambdaDLQ",
                reason="The tiny test function is only invoked synchronously by the integ assertion, which reads "
                "its response; a DLQ only ever receives asynchronous invocations.",
            ),
            cdk.Acknowledgment(
                id="Serverless::Serverless-LambdaTracing",
                reason="The tiny test function lives for one integ run and returns a constant payload; X-Ray "
                "tracing would add wildcard xray permissions to its role for no insight.",
            ),
        )
    integ = IntegTest(app, "ImageBuildInteg", test_cases=[stack], diff_assets=True)
    for image in images.values():
        function_name = image.lambda_function.function_name
        settled = integ.assertions.aws_api_call("Lambda", "getFunctionConfiguration", {"FunctionName": function_name})
        settled.expect(ExpectedResult.object_like({"LastUpdateStatus": "Successful", "State": "Active"}))
        # The async mode updates the function when the build ends, after the deploy: wait for it.
        settled.wait_for_assertions(total_timeout=Duration.minutes(30), interval=Duration.seconds(30))
        runs_tag = integ.assertions.aws_api_call("Lambda", "getFunction", {"FunctionName": function_name})
        runs_tag.expect(
            ExpectedResult.object_like(
                {
                    "Code": Match.object_like(
                        {"ImageUri": Match.string_like_regexp(f":{image.image_tag}$|@sha256:[0-9a-f]{{64}}$")}
                    )
                }
            )
        )
        invoked = integ.assertions.invoke_function(function_name=function_name, payload=PAYLOAD)
        invoked.expect(
            ExpectedResult.object_like(
                {"Payload": Match.serialized_json({"greeting": "hello from the tiny image", "echo": {"ping": 1}})}
            )
        )
        settled.next(runs_tag).next(invoked)
    return integ


if __name__ == "__main__":
    application = cdk.App()
    build(application)
    application.synth()
