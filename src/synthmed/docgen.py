"""Reference pages generated from the code, so they cannot drift from it.

* :func:`config_reference` walks the typed config dataclasses (``synthmed train``'s run config with
  every registered model family, ``synthmed utility`` with every registered classifier, ``synthmed
  protocol``) and writes one table row per key: type, default, description, paper reference.
* :func:`cli_reference` walks the ``argparse`` parser of ``synthmed`` and writes every subcommand with
  its usage, arguments and example.

A key's description is the ``#:`` comment directly above its field, or its entry in the
``Attributes:`` section of the class docstring (inherited from a parent class when a subclass only
changes the default).  A key, subcommand or argument without one raises :class:`MissingDocs`, which
the documentation build and the tests turn into a failure.  The MkDocs hook ``docs/hooks.py`` adds
the two pages to the site at build time; ``python -m synthmed.docgen --out DIR`` writes them as files.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class MissingDocs(Exception):
    """Config keys, subcommands or CLI arguments without documentation (each named)."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__("undocumented: " + "; ".join(missing))


@dataclass(frozen=True)
class KeyDoc:
    """One config key as the reference shows it."""

    key: str
    type: str
    default: str
    doc: str
    reference: str


# ---------------------------------------------------------------------------------------------------
# descriptions of dataclass fields


_FIELD = re.compile(r"^(\s*)([A-Za-z_]\w*)\s*:")
_ATTR_ENTRY = re.compile(r"^([A-Za-z_][\w, ]*?):\s*(.*)$")


@cache
def _own_field_docs(cls: type) -> dict[str, str]:
    """``#:`` comments and ``Attributes:`` entries of the fields declared in ``cls`` itself."""
    out: dict[str, str] = {}
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "Attributes:":
            continue
        indent = None
        current: list[str] = []
        text: list[str] = []
        for entry in lines[i + 1:]:
            if not entry.strip():
                continue
            lead = len(entry) - len(entry.lstrip())
            if indent is None:
                indent = lead
            if lead < indent:
                break
            m = _ATTR_ENTRY.match(entry.strip()) if lead == indent else None
            if m:
                for name in current:
                    out[name] = " ".join(text)
                current = [n.strip() for n in m.group(1).split(",") if n.strip()]
                text = [m.group(2).strip()]
            else:
                text.append(entry.strip())
        for name in current:
            out[name] = " ".join(text)
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # pragma: no cover - classes built at run time
        return out
    comment: list[str] = []
    body_indent = None
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        m = _FIELD.match(line)
        if m and (body_indent is None or len(m.group(1)) == body_indent):
            body_indent = len(m.group(1))
            if comment:
                out[m.group(2)] = " ".join(comment)
        if stripped:
            comment = []
    return {k: v for k, v in out.items() if v}


def field_doc(cls: type, name: str) -> str:
    """The description of field ``name`` of dataclass ``cls`` (searching its parents); "" if none."""
    for klass in cls.__mro__:
        doc = _own_field_docs(klass).get(name) if dataclasses.is_dataclass(klass) else None
        if doc:
            return doc
    return ""


# ---------------------------------------------------------------------------------------------------
# types, defaults, references


def type_name(tp: Any) -> str:
    """A YAML-oriented name of a type hint: ``int``, ``list of str``, ``"a" | "b"``, ``float or null``."""
    origin = get_origin(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin is tuple:
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if len(set(args)) == 1:
            return f"list of {len(args)} {type_name(args[0])}"
        return "list [" + ", ".join(type_name(a) for a in args) + "]"
    if origin is list:
        return f"list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        k, v = get_args(tp)
        return f"mapping {type_name(k)} → {type_name(v)}"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def default_text(f: dataclasses.Field) -> str:
    """The field's default as YAML (``true``, ``[0.5, 0.999]``, ``""``)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    value = _plain(value)
    if value == "":
        return '""'
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").strip()


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_REFERENCES = re.compile(
    r"papers? 00\d(?:(?:/| and |, )00\d)*(?:[,:]? (?:Secs|Sec|Eqs|Eq|Figs|Fig|Tables|Table|S)\.? ?[\w.\-]+(?: and [\w.\-]+)?)?"
    r"|(?:[A-Z][\w\-]+(?: et al\.| & [A-Z][\w\-]+)) \d{4}"
    r"|StyleGAN2-ADA|DiffAugment|AC-GAN|TTUR"
)


def references(text: str) -> str:
    """The papers a description cites (``paper 000 Fig. S2``, ``Karras et al. 2020`` ...), joined."""
    found: list[str] = []
    for m in _REFERENCES.finditer(text):
        ref = m.group(0).rstrip(".,;")
        if ref not in found and not any(ref in f for f in found):
            found.append(ref)
    return "; ".join(found)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _cell(text: str) -> str:
    """Table-cell safe: no pipes or newlines; reST roles written as code."""
    text = re.sub(r":(?:class|func|mod|attr|meth|data):`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return text.replace("|", "\\|").replace("\n", " ").strip()


def dataclass_keys(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, type, dataclasses.Field]]:
    """``(dotted key, owning class, field)`` of every leaf key of ``cls``, recursing into sections."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from dataclass_keys(tp, key)
        else:
            yield key, cls, f


def key_docs(cls: type, prefix: str, skip: tuple[str, ...] = (), missing: list[str] | None = None) -> list[KeyDoc]:
    """:class:`KeyDoc` rows of every key of ``cls``; undocumented keys are appended to ``missing``."""
    rows = []
    for key, owner, f in dataclass_keys(cls, prefix, skip):
        doc = field_doc(owner, f.name)
        if not doc and missing is not None:
            missing.append(f"config key {key!r} ({owner.__module__}.{owner.__qualname__}.{f.name}: add a `#:` "
                           "comment above the field)")
        rows.append(KeyDoc(key, type_name(_hints(owner)[f.name]), default_text(f), doc, references(doc)))
    return rows


def _table(rows: list[KeyDoc]) -> list[str]:
    out = ["| key | type | default | description | reference |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| `{r.key}` | {_cell(r.type)} | `{_cell(r.default)}` | {_cell(r.doc) or '**undocumented**'} "
                   f"| {_cell(r.reference) or '–'} |")
    return out


def _summary(cls: type) -> str:
    """The first paragraph of a class docstring, on one line."""
    doc = inspect.getdoc(cls) or ""
    return _cell(" ".join(doc.split("\n\n")[0].split()))


# ---------------------------------------------------------------------------------------------------
# the configuration reference


def config_reference(strict: bool = True) -> str:
    """The configuration reference page (Markdown).

    Raises:
        MissingDocs: with ``strict``, when any key has no description.
    """
    import synthmed.models  # noqa: F401  (fills MODELS)
    import synthmed.utility.svm  # noqa: F401  (registers the SVM classifier)
    from synthmed.config import AugmentConfig, TrainConfig, shipped_configs
    from synthmed.models.gan.conditioning import ConditionalParams
    from synthmed.protocol.config import CandidateSpec, ProtocolConfig
    from synthmed.registry import CLASSIFIERS, MODELS
    from synthmed.utility.config import UtilityConfig

    missing: list[str] = []
    md = [
        "# Configuration reference",
        "",
        "Generated from the typed config dataclasses when the documentation is built (`synthmed.docgen`),",
        "so every key, type and default below is the code's. A YAML file overrides only the keys it names;",
        "`--set KEY=VALUE` overrides one key (the value is read as YAML, e.g. `--set train.betas=[0.5,0.99]`).",
        "Unknown keys and wrong types are refused with the key named. How the keys fit together is in the",
        "[training guide](../guides/training.md); the measured effect of the small-data options is in",
        "[Training on small data](../training_small_data.md).",
        "",
        "Paper numbers refer to the five papers the toolkit implements: 000 King et al. (3D MRI GANs for",
        "schizophrenia classification), 001 Sun et al. (HA-GAN), 002 Ungria Hirte et al. (DWI GANs and VAEs),",
        "003 Alam et al. (PGGAN for ADHD), 004 DuMont Schutte et al. (data sharing). The reference column",
        "lists the papers a key's description cites; a dash means a setting of this toolkit.",
        "",
        "## Run configs (`synthmed train`)",
        "",
        "Three sections: `model` (the family named by `model.name` and its parameters), `train` and",
        "`augment`. Shipped configs (`synthmed list`): " + ", ".join(f"`{n}`" for n in shipped_configs("run")) + ".",
        "",
        "```yaml",
        "model:",
        "  name: alpha_sngan",
        "  latent_dim: 1000",
        "train:",
        "  iterations: 12000",
        "  batch_size: 4",
        "augment:",
        "  enabled: true",
        "```",
        "",
        "### `train`",
        "",
        _summary(TrainConfig),
        "",
        *_table(key_docs(TrainConfig, "train", missing=missing)),
        "",
        "### `augment`",
        "",
        _summary(AugmentConfig),
        "",
        *_table(key_docs(AugmentConfig, "augment", missing=missing)),
        "",
        "### `model`: conditioning keys of every family",
        "",
        "`model.name` picks a registered model family (the sections below); the other `model.*` keys are",
        "that family's parameters. Every family takes these conditioning keys (the",
        "[conditioning guide](../guides/conditioning.md) explains the methods):",
        "",
        *_table(key_docs(ConditionalParams, "model", missing=missing)),
        "",
    ]
    common = {f.name: f for f in dataclasses.fields(ConditionalParams)}
    for name in MODELS.names():
        family = MODELS.get(name)
        params = family.Params
        hints = _hints(params)
        # the family's own keys, plus conditioning keys whose type or default it changes
        unchanged = tuple(n for n, f in common.items()
                        if n in hints and (default_text(next(g for g in dataclasses.fields(params) if g.name == n))
                                           == default_text(f))
                        and hints[n] == _hints(ConditionalParams)[n])
        methods = getattr(family, "conditioning_methods", ())
        md += [f"### `model.name: {name}`", "", _cell(MODELS.describe(name)), ""]
        md += [f"Parameters `{params.__name__}`. {_summary(params)}", ""]
        if methods:
            md += ["Conditioning methods: " + ", ".join(f"`{m}`" for m in methods)
                   + f"; `auto` with classes means `{family.default_conditioning}`.", ""]
        md += [*_table(key_docs(params, "model", skip=unchanged, missing=missing)), ""]
    md += [
        "## Utility configs (`synthmed utility`)",
        "",
        "Paper 000's downstream diagnosis-classifier protocol ([guide](../guides/utility.md)). Shipped: "
        + ", ".join(f"`{n}`" for n in shipped_configs("utility")) + ".",
        "",
        *_table(key_docs(UtilityConfig, "", skip=("classifier",), missing=missing)),
        "",
        "### `classifier`",
        "",
        "`classifier.name` picks a registered classifier (`synthmed list`); the other `classifier.*` keys",
        "are its parameters, written flat beside `name`.",
        "",
    ]
    for name in CLASSIFIERS.names():
        cls = CLASSIFIERS.get(name)
        params = getattr(cls, "Params", None)
        md += [f"#### `classifier.name: {name}`", "", _cell(CLASSIFIERS.describe(name)), ""]
        if params is None:  # pragma: no cover - every shipped classifier has parameters
            md += ["No parameters.", ""]
            continue
        md += [*_table(key_docs(params, "classifier", missing=missing)), ""]
    md += [
        "## Protocol configs (`synthmed protocol`)",
        "",
        "The whole pipeline of paper 000 plus paper 004's sweeps ([guide](../guides/utility.md#the-whole-protocol)).",
        "Shipped: " + ", ".join(f"`{n}`" for n in shipped_configs("protocol")) + ". The `utility` and",
        "`sweeps.utility` sections take the keys of a utility config (above) except `data` and `synthetic`,",
        "which the protocol fills in.",
        "",
        *_table(key_docs(ProtocolConfig, "", missing=missing)),
        "",
        "### `candidates.models` entries",
        "",
        "An entry is a shipped run config name, a YAML path, a registered model name, or a mapping:",
        "",
        *_table(key_docs(CandidateSpec, "candidates.models[i]", missing=missing)),
        "",
    ]
    if strict and missing:
        raise MissingDocs(missing)
    return "\n".join(md)


def all_config_keys() -> list[str]:
    """Every documented key path of the run, utility and protocol configs (for the tests)."""
    import synthmed.models  # noqa: F401
    import synthmed.utility.svm  # noqa: F401
    from synthmed.config import AugmentConfig, TrainConfig
    from synthmed.protocol.config import CandidateSpec, ProtocolConfig
    from synthmed.registry import CLASSIFIERS, MODELS
    from synthmed.utility.config import UtilityConfig

    keys = [k for k, _, _ in dataclass_keys(TrainConfig, "train")]
    keys += [k for k, _, _ in dataclass_keys(AugmentConfig, "augment")]
    for name in MODELS.names():
        keys += [k for k, _, _ in dataclass_keys(MODELS.get(name).Params, "model")]
    for name in CLASSIFIERS.names():
        keys += [k for k, _, _ in dataclass_keys(CLASSIFIERS.get(name).Params, "classifier")]
    keys += [k for k, _, _ in dataclass_keys(UtilityConfig, "", skip=("classifier",))]
    keys += [k for k, _, _ in dataclass_keys(ProtocolConfig, "")]
    keys += [k for k, _, _ in dataclass_keys(CandidateSpec, "candidates.models[i]")]
    return sorted(set(keys))


# ---------------------------------------------------------------------------------------------------
# the CLI reference


def iter_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("synthmed",)
                 ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """``(command path, parser, one-line help)`` of ``parser`` and every subcommand, depth first."""
    yield path, parser, parser.description or ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                for sub_path, p, h in iter_parsers(sub, (*path, name)):
                    yield sub_path, p, (helps.get(name, "") if sub_path == (*path, name) else h)


def _arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _arg_name(a: argparse.Action) -> str:
    if not a.option_strings:
        return a.metavar if isinstance(a.metavar, str) else a.dest.upper()
    names = ", ".join(a.option_strings)
    if a.nargs == 0:
        return names
    meta = a.metavar if a.metavar is not None else a.dest.upper()
    if isinstance(meta, tuple):
        meta = " ".join(meta)
    if a.nargs in ("+", "*"):
        meta = f"{meta} ..."
    elif isinstance(a.nargs, int) and a.nargs > 1 and " " not in meta:
        meta = " ".join([meta] * a.nargs)
    return f"{names} {meta}"


def _arg_default(a: argparse.Action) -> str:
    if a.nargs == 0 or a.default in (None, argparse.SUPPRESS) or a.required:
        return ""
    if isinstance(a.default, list):
        return " ".join(map(str, a.default))
    return str(a.default)


def command_example(parser: argparse.ArgumentParser) -> list[str]:
    """The example command lines at the end of a parser's epilog ("example:" / "examples:" block)."""
    epilog = parser.epilog or ""
    lines = epilog.splitlines()
    for i, line in enumerate(lines):
        if line.strip().lower() in ("example:", "examples:"):
            return [entry.strip() for entry in lines[i + 1:] if entry.strip()]
    return []


def cli_missing(parser: argparse.ArgumentParser) -> list[str]:
    """Subcommands without a help line or example, and arguments without help."""
    missing = []
    for path, p, help_text in iter_parsers(parser):
        cmd = " ".join(path)
        if len(path) > 1 and not help_text:
            missing.append(f"`{cmd}`: no help line")
        if not command_example(p):
            missing.append(f"`{cmd}`: no example at the end of --help (epilog 'example:')")
        for a in _arguments(p):
            if not a.help or a.help == argparse.SUPPRESS:
                missing.append(f"`{cmd} {_arg_name(a)}`: no help text")
    return missing


def cli_reference(strict: bool = True) -> str:
    """The command-line reference page (Markdown), from :func:`synthmed.cli.build_parser`.

    Raises:
        MissingDocs: with ``strict``, when a subcommand has no help or example, or an argument no help.
    """
    from synthmed.cli import build_parser

    parser = build_parser()
    if strict:
        missing = cli_missing(parser)
        if missing:
            raise MissingDocs(missing)
    md = [
        "# Command-line reference",
        "",
        "Generated from the `argparse` parsers of `synthmed` (`synthmed.cli.build_parser`) when the",
        "documentation is built, so it lists exactly what `synthmed COMMAND --help` prints. Every",
        "subcommand calls a library function: what the CLI does, `import synthmed` does too (see the",
        "[API reference](api.md)). Errors caused by input print one line and exit with status 2",
        "([what the commands guarantee](behaviour.md)).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    entries = list(iter_parsers(parser))
    for path, _, help_text in entries[1:]:
        cmd = " ".join(path)
        md.append(f"| [`{cmd}`](#{_anchor(cmd)}) | {_cell(help_text.replace('%%', '%'))} |")
    md.append("")
    for path, p, help_text in entries:
        cmd = " ".join(path)
        level = "#" * min(len(path) + 1, 4)
        md += [f"{level} `{cmd}`", ""]
        if help_text:
            help_text = help_text.replace("%%", "%")
            md += [_cell(help_text[0].upper() + help_text[1:]) + ("" if help_text.endswith(".") else "."), ""]
        usage = p.format_usage().removeprefix("usage: ").strip()
        md += ["```text", re.sub(r"\s+", " ", usage), "```", ""]
        args = _arguments(p)
        if args:
            md += ["| argument | default | description |", "|---|---|---|"]
            for a in args:
                help_str = (a.help or "").replace("%%", "%")
                choices = f" (one of: {', '.join(map(str, a.choices))})" if a.choices and not isinstance(
                    a, argparse._SubParsersAction) else ""
                default = _arg_default(a)
                default = f"`{_cell(default)}`" if default else ("required" if a.required and a.option_strings else "")
                md.append(f"| `{_cell(_arg_name(a))}` | {default} | {_cell(help_str)}{_cell(choices)} |")
            md.append("")
        example = command_example(p)
        if example:
            md += ["Example:", "", "```bash", *example, "```", ""]
    return "\n".join(md)


def _anchor(cmd: str) -> str:
    """The anchor MkDocs' toc extension gives a heading ``` `cmd` ```."""
    return re.sub(r"[^\w\- ]", "", cmd).strip().lower().replace(" ", "-")


# ---------------------------------------------------------------------------------------------------


PAGES = {"reference/configuration.md": config_reference, "reference/cli.md": cli_reference}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synthmed.docgen",
                                description="write the generated reference pages (configuration, CLI)")
    p.add_argument("--out", default="site-src", help="folder to write reference/configuration.md and reference/cli.md")
    args = p.parse_args(argv)
    for rel, make in PAGES.items():
        path = Path(args.out) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make(), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
