"""``make demo`` / ``python -m local_pipeline.demo``: the whole pipeline over the fixtures, no LLM, no AWS.

The same run as ``make run-local`` (``local_pipeline.__main__``: the synthesized state machine on a
moto server, the real handlers), with a scripted stand-in for the model: the loopback Ollama server
of ``tests/ollama_server.py`` labels alphabetic words PRODUCT_NAME and price-like words LINE_TOTAL.
It shows the pipeline's mechanics (manifest, Distributed Map, conditional PENDING writes, the
summary), not labeling quality. At the end one receipt's words are printed with the labels read
back from the table. Exit status: the run's (0 every receipt labeled).
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from local_pipeline.template import REPO_ROOT

BANNER = "DEMO: the labels come from a scripted stand-in model, not an LLM"
_PRICE = re.compile(r"^-?\$?\d{0,6}[.,]\d{2}$")


def stand_in_label(text: str) -> str | None:
    """PRODUCT_NAME for alphabetic words, LINE_TOTAL for price-like words (``12.99``, ``$3.50``), else nothing."""
    if _PRICE.match(text):
        return "LINE_TOTAL"
    return "PRODUCT_NAME" if text.isalpha() else None


def word_rows(details: Any) -> list[str]:
    """``[line:word] TEXT -> LABEL (STATUS)`` for every word of a receipt (``-`` when it has no label)."""
    labels: dict[tuple[int, int], list[Any]] = {}
    for label in details.labels:
        labels.setdefault((label.line_id, label.word_id), []).append(label)
    rows = []
    for word in details.words:
        found = labels.get((word.line_id, word.word_id), [])
        what = ", ".join(f"{x.label} ({x.validation_status.value})" for x in found) or "-"
        rows.append(f"[{word.line_id}:{word.word_id}] {word.text} -> {what}")
    return rows


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # tests/ollama_server.py lives beside the package

    import local_pipeline.__main__ as run_local
    from tests.ollama_server import OllamaServer, label_words_responder

    extra = list(sys.argv[1:] if argv is None else argv)
    print(BANNER, file=out, flush=True)
    # The table is gone once the run returns: read one receipt back while it is there.
    shown: dict[str, Any] = {}

    def capture(pipeline: Any, keys: list[tuple[str, int]], run: Any) -> None:
        try:
            store = pipeline.dynamo()
            receipts = [store.get_receipt_details(image_id, receipt_id) for image_id, receipt_id in keys]
            labeled = [d for d in receipts if d.labels] or receipts
            shown["details"] = min(labeled, key=lambda d: len(d.words)) if labeled else None
        except Exception as error:  # the demo's epilogue must not hide the run's own result
            shown["error"] = error

    with OllamaServer(responder=label_words_responder(stand_in_label), model="demo-stand-in") as server:
        code = run_local.main([*extra, "--base-url", server.url, "--model", server.model], out=out, after_run=capture)

    print("", file=out)
    print(BANNER, file=out)
    details = shown.get("details")
    if details is not None:
        receipt = details.receipt
        print(
            f"Receipt {receipt.image_id}#{receipt.receipt_id}: its words and the labels in the table "
            "(PENDING: proposed, waiting for validation):",
            file=out,
        )
        for row in word_rows(details):
            print(f"  {row}", file=out)
    elif "error" in shown:
        print(f"(could not read a receipt back: {shown['error']})", file=out)
    out.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
