"""retryable_aws_error: which AWS failures are retryable (DynamoThrottledError, AwsTransientError) and which are not.

Errors come from botocore's Stubber (the client raises its modeled class, as against AWS) or are
botocore's transport exceptions built directly; the error codes and fault flags are checked against
the service models botocore ships (botocore/data/<service>/<version>/service-2.json).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from receipt_dynamo import (
    AwsTransientError,
    DynamoThrottledError,
    LabelWriteError,
    ReceiptDynamoError,
    ReceiptNotFoundError,
    retryable_aws_error,
)
from receipt_dynamo.errors import (
    AWS_THROTTLING_ERROR_CODES,
    DYNAMODB_DATA_OPERATIONS,
    SECRETS_MANAGER_READ_OPERATIONS,
    THROTTLING_ERROR_CODES,
    TRANSIENT_ERROR_CODES,
)

pytestmark = pytest.mark.unit

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ollama-api-key-AbCdEf"
SECRET_VALUE = "olk-3b9e71d2-never-in-a-message"
TABLE_KEY = {"PK": {"S": "IMAGE#x"}, "SK": {"S": "RECEIPT#00001"}}


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except BaseException as exc:  # the error under test
        return exc
    raise AssertionError("expected an error")


def dynamodb_error(code: str, status: int, operation: str = "query") -> BaseException:
    client = boto3.client("dynamodb", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.add_client_error(operation, service_error_code=code, service_message="m", http_status_code=status)
        if operation == "query":
            return raised(lambda: client.query(TableName="t", KeyConditionExpression="PK = :p"))
        return raised(lambda: client.update_item(TableName="t", Key=TABLE_KEY))


def secrets_manager_error(code: str, status: int, message: str = "m") -> BaseException:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "get_secret_value", service_error_code=code, service_message=message, http_status_code=status
        )
        return raised(lambda: client.get_secret_value(SecretId=SECRET_ARN))


def powertools_secret_error(code: str, status: int) -> BaseException:
    """What ``SecretsProvider.get`` raises when GetSecretValue fails: its own wrapper, the boto error behind it."""
    client = boto3.client("secretsmanager", region_name="us-east-1")
    with Stubber(client) as stubber:
        stubber.add_client_error("get_secret_value", service_error_code=code, http_status_code=status)
        return raised(lambda: SecretsProvider(boto3_client=client).get(SECRET_ARN))


# --- DynamoDB ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(THROTTLING_ERROR_CODES))
def test_dynamodb_throttling_is_dynamo_throttled_error(code: str) -> None:
    typed = retryable_aws_error(dynamodb_error(code, 400))
    assert isinstance(typed, DynamoThrottledError)
    assert (typed.operation, typed.code) == ("Query", code)


@pytest.mark.parametrize(("code", "status"), [("InternalServerError", 500), ("ServiceUnavailable", 503)])
def test_dynamodb_server_errors_are_transient(code: str, status: int) -> None:
    typed = retryable_aws_error(dynamodb_error(code, status, operation="update_item"))
    assert isinstance(typed, AwsTransientError)
    assert (typed.service, typed.operation, typed.code, typed.http_status) == ("dynamodb", "UpdateItem", code, status)


def test_any_5xx_is_transient_whatever_its_code() -> None:
    typed = retryable_aws_error(dynamodb_error("SomethingNew", 502))
    assert isinstance(typed, AwsTransientError) and typed.http_status == 502


def test_501_not_implemented_is_not_retryable() -> None:
    assert retryable_aws_error(dynamodb_error("NotImplemented", 501)) is None


@pytest.mark.parametrize(
    "code",
    ["AccessDeniedException", "ResourceNotFoundException", "ValidationException", "ConditionalCheckFailedException"],
)
def test_permanent_dynamodb_errors_are_not_retryable(code: str) -> None:
    assert retryable_aws_error(dynamodb_error(code, 400)) is None


def test_access_denied_is_not_retryable() -> None:
    assert retryable_aws_error(secrets_manager_error("AccessDeniedException", 400)) is None
    assert retryable_aws_error(dynamodb_error("AccessDeniedException", 400)) is None


# --- Secrets Manager ------------------------------------------------------------------------------


def test_secrets_manager_internal_service_error_is_transient() -> None:
    typed = retryable_aws_error(secrets_manager_error("InternalServiceError", 500))
    assert isinstance(typed, AwsTransientError)
    assert (typed.service, typed.operation, typed.code, typed.http_status) == (
        "secretsmanager",
        "GetSecretValue",
        "InternalServiceError",
        500,
    )


def test_secrets_manager_throttling_is_transient_not_dynamodb_throttling() -> None:
    typed = retryable_aws_error(secrets_manager_error("ThrottlingException", 400))
    assert isinstance(typed, AwsTransientError) and not isinstance(typed, DynamoThrottledError)
    assert (typed.service, typed.code) == ("secretsmanager", "ThrottlingException")


@pytest.mark.parametrize(
    "code",
    [
        "DecryptionFailure",
        "ResourceNotFoundException",
        "InvalidParameterException",
        "InvalidRequestException",
        "LimitExceededException",  # a Secrets Manager quota, not a request rate
    ],
)
def test_permanent_secrets_manager_errors_are_not_retryable(code: str) -> None:
    assert retryable_aws_error(secrets_manager_error(code, 400)) is None


def test_a_transient_error_wrapped_by_powertools_secrets_provider_is_found_behind_the_wrapper() -> None:
    wrapper = powertools_secret_error("InternalServiceError", 500)
    # Powertools raises GetParameterError(str(exc)) inside its except block: the ClientError is the context
    assert isinstance(wrapper, GetParameterError)
    assert wrapper.__cause__ is None and isinstance(wrapper.__context__, ClientError)
    typed = retryable_aws_error(wrapper)
    assert isinstance(typed, AwsTransientError) and (typed.operation, typed.code) == (
        "GetSecretValue",
        "InternalServiceError",
    )


def test_a_permanent_error_wrapped_by_powertools_secrets_provider_is_not_retryable() -> None:
    assert retryable_aws_error(powertools_secret_error("DecryptionFailure", 400)) is None
    assert retryable_aws_error(powertools_secret_error("AccessDeniedException", 400)) is None


def test_transient_error_message_names_operation_and_code_and_never_the_service_message() -> None:
    # Even if a service echoed a value in its message, the typed error does not carry it.
    typed = retryable_aws_error(secrets_manager_error("InternalServiceError", 500, message=SECRET_VALUE))
    assert typed is not None
    assert "GetSecretValue" in str(typed) and "InternalServiceError" in str(typed) and "HTTP 500" in str(typed)
    assert SECRET_VALUE not in str(typed) and SECRET_ARN not in str(typed)
    assert type(typed).__name__ == "AwsTransientError" and isinstance(typed, ReceiptDynamoError)


# --- transport errors (no response) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
        ConnectionClosedError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_and_timeout_errors_are_transient(error: BaseException) -> None:
    typed = retryable_aws_error(error)
    assert isinstance(typed, AwsTransientError)
    assert (typed.service, typed.operation, typed.code, typed.http_status) == (
        "secretsmanager",
        None,
        type(error).__name__,
        None,
    )
    assert "secretsmanager.us-east-1.amazonaws.com" in str(typed) and "no response" in str(typed)


def test_a_connection_error_to_a_local_endpoint_names_no_service() -> None:
    typed = retryable_aws_error(EndpointConnectionError(endpoint_url="http://localhost:8000"))
    assert isinstance(typed, AwsTransientError) and typed.service is None and typed.endpoint_host == "localhost"


@pytest.mark.parametrize(
    "error",
    [NoCredentialsError(), ParamValidationError(report="bad"), ValueError("x"), RuntimeError("no SecretString")],
    ids=lambda e: type(e).__name__,
)
def test_errors_that_are_not_transient_aws_failures_are_not_retryable(error: BaseException) -> None:
    assert retryable_aws_error(error) is None


# --- the exception chain ------------------------------------------------------------------------------


def test_an_explicit_cause_is_followed() -> None:
    try:
        try:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        except EndpointConnectionError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        typed = retryable_aws_error(outer)
    assert isinstance(typed, AwsTransientError) and typed.service == "dynamodb"


def test_a_context_suppressed_with_from_none_is_not_followed() -> None:
    try:
        try:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        except EndpointConnectionError:
            raise RuntimeError("hidden on purpose") from None
    except RuntimeError as outer:
        assert retryable_aws_error(outer) is None


def test_the_first_aws_error_in_the_chain_decides() -> None:
    transient = secrets_manager_error("InternalServiceError", 500)
    permanent = secrets_manager_error("AccessDeniedException", 400)
    permanent.__context__ = transient  # a permanent failure while handling a transient one
    assert retryable_aws_error(permanent) is None


def test_errors_of_this_package_are_returned_or_left_alone() -> None:
    throttled = DynamoThrottledError("Query", "ThrottlingException", "x")
    transient = AwsTransientError("dynamodb", "Query", "InternalServerError")
    assert retryable_aws_error(throttled) is throttled
    assert retryable_aws_error(transient) is transient
    # A LabelWriteError is already the contract's answer (labels partly written), whatever caused it.
    write_error = LabelWriteError("PutItem failed", written=[], not_written=[])
    write_error.__cause__ = dynamodb_error("InternalServerError", 500)
    assert retryable_aws_error(write_error) is None
    assert retryable_aws_error(ReceiptNotFoundError("x", 1)) is None


def test_a_cyclic_chain_ends() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__context__, second.__context__ = second, first
    assert retryable_aws_error(first) is None


def test_the_service_can_be_named_by_the_caller() -> None:
    error = ClientError({"Error": {"Code": "ThrottlingException"}}, "DescribeTable")  # a DynamoDB control call
    assert isinstance(retryable_aws_error(error), AwsTransientError)
    assert isinstance(retryable_aws_error(error, service="dynamodb"), DynamoThrottledError)


# --- the code lists against botocore's service models -----------------------------------------------


def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def _error_shapes(service: str) -> dict[str, dict[str, Any]]:
    """The service model's error shapes as shipped (``fault``: a server error; ``retryable``: retry it)."""
    shapes = botocore.loaders.Loader().load_service_model(service, "service-2")["shapes"]
    return {name: shape for name, shape in shapes.items() if shape.get("exception")}


@pytest.mark.parametrize(("service", "operation"), [("dynamodb", "Query"), ("secretsmanager", "GetSecretValue")])
def test_every_modeled_error_is_classified_as_its_model_says(service: str, operation: str) -> None:
    """Faults and errors marked retryable: transient; DynamoDB throttling: DynamoThrottledError; the rest: None."""
    for name, shape in _error_shapes(service).items():
        code = shape.get("error", {}).get("code", name)
        fault = bool(shape.get("fault"))
        status = 500 if fault else 400
        error = ClientError(
            {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
        )
        typed = retryable_aws_error(error)
        if service == "dynamodb" and code in THROTTLING_ERROR_CODES:
            assert isinstance(typed, DynamoThrottledError), code
        elif fault or "retryable" in shape or code in AWS_THROTTLING_ERROR_CODES:
            assert isinstance(typed, AwsTransientError), code
        else:
            assert typed is None, code


def test_the_server_faults_of_the_service_models_are_transient_whatever_the_status() -> None:
    for service in ("dynamodb", "secretsmanager"):
        faults = {name for name, shape in _error_shapes(service).items() if shape.get("fault")}
        assert faults and faults <= TRANSIENT_ERROR_CODES, service


def test_the_operation_lists_name_real_operations() -> None:
    assert set(_model("dynamodb").operation_names) >= DYNAMODB_DATA_OPERATIONS
    assert set(_model("secretsmanager").operation_names) >= SECRETS_MANAGER_READ_OPERATIONS
    assert {"Query", "PutItem", "UpdateItem", "BatchWriteItem"} <= DYNAMODB_DATA_OPERATIONS  # DynamoClient's calls
