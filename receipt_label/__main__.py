"""python -m receipt_label FILE.json [--base-url URL] [--model NAME] [--timeout SECONDS]

Labels one receipt document (the JSON of docs/data-layer.md) with the configured Ollama endpoint and
prints a table of line, word, text, label and reasoning. Settings come from the environment
(OLLAMA_BASE_URL, OLLAMA_MODEL, OLLAMA_API_KEY, OLLAMA_TIMEOUT_SECONDS, OLLAMA_NUM_CTX); the
options override them. Nothing is written anywhere. Exit status: 0 labeled, 1 the LLM call
failed, 2 bad input or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from receipt_dynamo import DocumentValidationError, ReceiptDetails, parse_receipt_document
from receipt_label.config import OllamaSettings, SettingsError
from receipt_label.errors import LLMError
from receipt_label.labeler import label_receipt
from receipt_label.llm import create_chat_model
from receipt_label.state import LabelingResult


def format_table(details: ReceiptDetails, result: LabelingResult) -> str:
    """Every word of the receipt with its new label (or existing ones, in braces) and the reasoning."""
    new = {(lab.line_id, lab.word_id): lab for lab in result.labels}
    existing: dict[tuple[int, int], list[str]] = {}
    for lab in details.labels:
        existing.setdefault((lab.line_id, lab.word_id), []).append(lab.label)
    rows = [("line", "word", "text", "label", "reasoning")]
    for w in details.words:
        key = (w.line_id, w.word_id)
        if key in new:
            label, reasoning = new[key].label, new[key].reasoning
        elif key in existing:
            label, reasoning = "{" + ", ".join(existing[key]) + "}", "(existing label)"
        else:
            label, reasoning = "-", ""
        rows.append((str(w.line_id), str(w.word_id), " ".join(w.text.split()), label, reasoning))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for i, r in enumerate(rows):
        cells = [r[0].rjust(widths[0]), r[1].rjust(widths[1]), r[2].ljust(widths[2]), r[3].ljust(widths[3]), r[4]]
        out.append("  ".join(cells).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in [*widths, len("reasoning")]))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m receipt_label", description=__doc__.split("\n\n")[1])
    parser.add_argument("file", help="receipt document JSON")
    parser.add_argument("--base-url", help="Ollama endpoint (default: $OLLAMA_BASE_URL or https://ollama.com)")
    parser.add_argument("--model", help="model name (default: $OLLAMA_MODEL or gpt-oss:120b)")
    parser.add_argument("--timeout", type=float, help="timeout in seconds (default: $OLLAMA_TIMEOUT_SECONDS or 120)")
    args = parser.parse_args(argv)
    try:
        settings = OllamaSettings.from_env()
        overrides = {
            k: v
            for k, v in {"base_url": args.base_url, "model": args.model, "timeout_seconds": args.timeout}.items()
            if v is not None
        }
        if overrides:
            settings = OllamaSettings.model_validate({**settings.model_dump(), **overrides})
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    try:
        with open(args.file, encoding="utf-8") as fh:
            details = parse_receipt_document(json.load(fh))
    except (OSError, json.JSONDecodeError, DocumentValidationError) as exc:
        print(f"error: {args.file}: {exc}", file=err)
        return 2
    try:
        result = label_receipt(details, llm=create_chat_model(settings))
    except LLMError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=err)
        return 1
    print(format_table(details, result), file=out)
    print(
        f"\n{len(result.labels)} labels proposed (PENDING) for {len(details.words)} words, "
        f"{len(result.rejected)} rejected, {result.llm_calls} LLM call(s), model {result.model_name}",
        file=out,
    )
    for r in result.rejected:
        print(f"  rejected {r.describe()}", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
