"""The documentation: the generated references cover every config key and subcommand, every
``--help`` ends with an example, and the site builds with ``mkdocs build --strict``, offline."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from synthmed import __version__, docgen
from synthmed.cli import build_parser, main
from synthmed.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


# --- configuration reference ---------------------------------------------------------------------


def test_config_reference_documents_every_key() -> None:
    page = docgen.config_reference()  # raises MissingDocs naming any key without a description
    keys = docgen.all_config_keys()
    assert len(keys) > 150
    for key in keys:
        assert f"| `{key}` |" in page, key
    assert "**undocumented**" not in page


def test_config_reference_rows_carry_type_default_and_paper() -> None:
    page = docgen.config_reference()
    row = next(line for line in page.splitlines() if line.startswith("| `train.lr` |"))
    assert "| float | `0.0002` |" in row and "paper 000" in row
    row = next(line for line in page.splitlines() if line.startswith("| `train.precision` |"))
    assert '"fp32" \\| "bf16" \\| "fp16"' in row
    # every registered model family has its own section, with its own defaults
    for name in MODELS.names():
        assert f"### `model.name: {name}`" in page
    hagan = page.split("### `model.name: hagan`")[1].split("### ")[0]
    assert "| `model.latent_dim` | int | `1024` |" in hagan and "paper 001 Sec. III-E" in hagan


@dataclass
class _UndocumentedParams:
    #: documented
    documented: int = 1
    forgotten: float = 0.5


def test_a_key_without_documentation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    missing: list[str] = []
    rows = docgen.key_docs(_UndocumentedParams, "model", missing=missing)
    assert [r.doc for r in rows] == ["documented", ""]
    assert len(missing) == 1 and "'model.forgotten'" in missing[0]

    class Family:  # a registered model family whose parameters gain an undocumented key
        Params = _UndocumentedParams

    monkeypatch.setitem(MODELS._items, "zz_undocumented", Family)
    with pytest.raises(docgen.MissingDocs, match="model.forgotten"):
        docgen.config_reference()


def test_field_docs_from_comments_and_attributes_sections() -> None:
    from synthmed.protocol.config import EvaluationSection
    from synthmed.utility.config import OcclusionSection

    assert docgen.field_doc(OcclusionSection, "mask_size").startswith("occluded patch edge in voxels")
    assert docgen.field_doc(OcclusionSection, "n_batch") == "occluded images per forward pass"
    # one Attributes: entry naming several fields documents each of them
    assert docgen.field_doc(EvaluationSection, "weights") == docgen.field_doc(EvaluationSection, "extractor")
    # a subclass that only changes a default inherits the description
    from synthmed.models.gan.hagan_families import AlphaHAGANParams, HAGANParams

    assert docgen.field_doc(AlphaHAGANParams, "low_factor") == docgen.field_doc(HAGANParams, "low_factor") != ""


def test_every_dataclass_field_is_reached() -> None:
    """all_config_keys walks the same classes the loaders validate (no section is skipped)."""
    from synthmed.config import TrainConfig

    keys = set(docgen.all_config_keys())
    assert {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)} <= keys
    assert {"sweeps.seeds", "candidates.models[i].config", "classifier.dropout", "occlusion.mask_size",
            "model.classifier_iterations", "augment.ada_target"} <= keys


# --- CLI reference, --help and --version ---------------------------------------------------------


def test_cli_reference_covers_every_subcommand() -> None:
    parser = build_parser()
    assert docgen.cli_missing(parser) == []
    page = docgen.cli_reference()
    paths = [path for path, _, _ in docgen.iter_parsers(parser)]
    assert len(paths) > 20
    for path in paths:
        assert f"# `{' '.join(path)}`" in page, path
    for action in parser._actions:  # every top-level subcommand is listed in the overview table
        if isinstance(action, argparse._SubParsersAction):
            for name in action.choices:
                assert f"[`synthmed {name}`]" in page


def test_an_option_without_help_or_a_command_without_example_fails() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["train"].add_argument("--new-option")
    sub.add_parser("new-command", help="does something")
    missing = docgen.cli_missing(parser)
    assert any("synthmed train --new-option" in m for m in missing)
    assert any("synthmed new-command" in m and "example" in m for m in missing)


def _help_paths() -> list[tuple[str, ...]]:
    return [path[1:] for path, _, _ in docgen.iter_parsers(build_parser())]


@pytest.mark.parametrize("path", _help_paths(), ids=lambda p: " ".join(p) or "synthmed")
def test_every_help_ends_with_an_example(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    block = lines[lines.index("example:") + 1:]
    assert block and all(re.match(r"\s+(synthmed|torchrun) ", line) for line in block), lines[-3:]
    command = " ".join(("synthmed", *path))
    assert any(line.strip().startswith(command) or "-m synthmed" in line for line in block)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"synthmed {__version__}"


# --- the site --------------------------------------------------------------------------------------


def test_nav_lists_every_page() -> None:
    """Every Markdown page under docs/ is in the nav of mkdocs.yml (the strict build warns otherwise)."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    pages |= set(docgen.PAGES)
    listed = set(re.findall(r":\s*([\w/\-.]+\.md)\s*$", nav, flags=re.M))
    assert pages - listed == set(), "pages missing from the nav of mkdocs.yml"
    assert listed - pages == set(), "nav entries without a page"


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers")),
                    reason="mkdocs, mkdocs-material or mkdocstrings-python not installed (the [dev] extra has them)")
def test_docs_build_strict_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_MKDOCS_2_WARNING": "1",
           # any attempt to reach the network fails fast instead of fetching
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for page in ("index.html", "reference/configuration/index.html", "reference/cli/index.html",
                 "reference/api/index.html", "guides/training/index.html", "results/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    assert "synthmed.train.loop.train" in api and "synthmed.evaluate.runner.evaluate" in api
    # nothing in the pages loads from another host (no web fonts, no CDN scripts or styles)
    external = re.compile(r'<(?:script|link|img)[^>]*(?:src|href)="(?:https?:)?//', re.I)
    for html in site.rglob("*.html"):
        assert not external.search(html.read_text(encoding="utf-8")), html
