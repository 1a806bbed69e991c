"""The tiny image's handler: answers with a fixed greeting and the image tag it was deployed with."""

from __future__ import annotations

from typing import Any


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    return {"greeting": "hello from the tiny image", "echo": event}
