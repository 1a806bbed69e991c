"""Typed settings for the Ollama endpoint, read from the environment.

| variable | default | meaning |
|---|---|---|
| `OLLAMA_BASE_URL` | `https://ollama.com` | the Ollama endpoint (Ollama Cloud by default) |
| `OLLAMA_MODEL` | `gpt-oss:120b` | the model asked to label |
| `OLLAMA_API_KEY` | unset | sent as `Authorization: Bearer <key>`; held as a `SecretStr`, never printed |
| `OLLAMA_TIMEOUT_SECONDS` | `120` | httpx timeout: connect, write, each read (gap between streamed chunks) |
| `OLLAMA_NUM_CTX` | unset | context window (tokens) to request; set it for a local Ollama (small default) |
| `OLLAMA_NUM_PREDICT` | `16384` | most tokens one answer may generate (thinking included); a runaway stops there |

In Lambda the key does not come from the environment: the handler reads it from Secrets Manager
and passes it to `create_chat_model(settings, api_key=...)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

DEFAULT_BASE_URL = "https://ollama.com"
DEFAULT_MODEL = "gpt-oss:120b"
DEFAULT_TIMEOUT_SECONDS = 120.0
DEFAULT_NUM_PREDICT = 16_384
"""About 40 tokens per labeled word: room for a 300-word receipt plus a model's thinking, and a cap
that keeps a runaway generation within the Lambda's time (at ~50 tokens/s, about 330 s)."""


class SettingsError(ValueError):
    """An Ollama setting from the environment is invalid (the message names the variable)."""


class OllamaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = DEFAULT_BASE_URL
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT_SECONDS, gt=0, le=3600)
    num_ctx: int | None = Field(default=None, gt=0)
    num_predict: int = Field(default=DEFAULT_NUM_PREDICT, gt=0, le=1_000_000)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; set OLLAMA_API_KEY instead")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OllamaSettings:
        """Read the settings from `environ` (default `os.environ`); unset or empty variables keep the defaults."""
        env = os.environ if environ is None else environ
        names = {
            "base_url": "OLLAMA_BASE_URL",
            "model": "OLLAMA_MODEL",
            "api_key": "OLLAMA_API_KEY",
            "timeout_seconds": "OLLAMA_TIMEOUT_SECONDS",
            "num_ctx": "OLLAMA_NUM_CTX",
            "num_predict": "OLLAMA_NUM_PREDICT",
        }
        values = {field: env[var].strip() for field, var in names.items() if env.get(var, "").strip()}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                # never echo the input: for OLLAMA_API_KEY it would be the secret
                problems.append(f"{names.get(field, field)}: {err['msg']}")
            raise SettingsError("invalid Ollama settings: " + "; ".join(problems)) from None
