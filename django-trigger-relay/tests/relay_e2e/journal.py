"""An append-only JSON-lines journal shared by the worker subprocess and the test process.

The worker appends (``$TRIGGER_RELAY_E2E_JOURNAL`` names the file; unset: nothing is
written); the test reads. One ``write`` per line on a file opened with O_APPEND, so lines
from the worker's threads never interleave.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

ENV = "TRIGGER_RELAY_E2E_JOURNAL"


def record(what: str, **fields: Any) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    entry = {
        "what": what,
        "t": time.time(),
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        **fields,
    }
    line = json.dumps(entry, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
