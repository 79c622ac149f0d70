"""MkDocs hook: add the reference pages generated from the code (``synthmed.docgen``) to the site.

``reference/configuration.md`` comes from the typed config dataclasses and ``reference/cli.md`` from
the argparse parsers, at every build, so they cannot drift from the code.  A config key, subcommand
or argument without documentation stops the build with the list of what is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

try:
    from synthmed.docgen import PAGES, MissingDocs
except ImportError:  # a checkout whose package is not installed: use its src/ (the dependencies must be there)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from synthmed.docgen import PAGES, MissingDocs


def on_files(files, config):  # noqa: ANN001, ANN201 (MkDocs hook signature)
    for path, make in PAGES.items():
        try:
            content = make()
        except MissingDocs as e:
            raise PluginError(f"{path}: " + "\n  ".join(["undocumented:", *e.missing])) from None
        files.append(File.generated(config, path, content=content))
    return files
