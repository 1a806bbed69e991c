"""DynamoDB single-table data layer for receipts and their word labels (runtime deps: boto3 + stdlib)."""

from receipt_dynamo.client import DynamoClient, LabelWriteResult
from receipt_dynamo.document import (
    RECEIPT_DOCUMENT_SCHEMA,
    parse_receipt_document,
    receipt_document,
    receipt_document_schema,
)
from receipt_dynamo.entities import (
    GEOMETRY_TOLERANCE,
    Receipt,
    ReceiptDetails,
    ReceiptLine,
    ReceiptWord,
    ReceiptWordLabel,
    ValidationStatus,
    utc_now_iso,
)
from receipt_dynamo.errors import (
    THROTTLING_ERROR_CODES,
    AwsTransientError,
    DocumentValidationError,
    DynamoThrottledError,
    EntityValidationError,
    ItemWriteError,
    LabelWriteError,
    ReceiptDynamoError,
    ReceiptNotFound,
    ReceiptNotFoundError,
    retryable_aws_error,
    typed_aws_errors,
)

__all__ = [
    "GEOMETRY_TOLERANCE",
    "RECEIPT_DOCUMENT_SCHEMA",
    "THROTTLING_ERROR_CODES",
    "AwsTransientError",
    "DocumentValidationError",
    "DynamoClient",
    "DynamoThrottledError",
    "EntityValidationError",
    "ItemWriteError",
    "LabelWriteError",
    "LabelWriteResult",
    "Receipt",
    "ReceiptDetails",
    "ReceiptDynamoError",
    "ReceiptLine",
    "ReceiptNotFound",
    "ReceiptNotFoundError",
    "ReceiptWord",
    "ReceiptWordLabel",
    "ValidationStatus",
    "parse_receipt_document",
    "receipt_document",
    "receipt_document_schema",
    "retryable_aws_error",
    "typed_aws_errors",
    "utc_now_iso",
]
