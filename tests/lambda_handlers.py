"""The Lambda handler files, and loading a fresh copy of one as a module.

Both handlers are files named ``handler.py`` in folders that are not packages (as in Lambda, where
the folder is the task root), so tests load them from their path under a name of their own.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
LIST_HANDLER = REPO_ROOT / "lambdas" / "list_receipts" / "handler.py"
PROCESS_HANDLER = REPO_ROOT / "lambdas" / "process_receipt" / "handler.py"


def load_handler(path: Path | str, name: str) -> ModuleType:
    """Import the handler at ``path`` as a new module called ``name`` (its cached clients start empty)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
