"""Progress bars that suit both a terminal and a log file."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm`` with the project's defaults.

    On a terminal it refreshes as usual; when stderr is a file or pipe (CI, ``nohup``, a cluster
    job's log) it writes at most one line every 30 seconds so logs stay readable.
    """
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
