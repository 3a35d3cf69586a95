"""MkDocs hook: the config reference page (`config.md`), generated at every build, never committed.

It reads `pkd_jax/defaults.py` as source (ast for the fields and their defaults, tokenize for the comments):
one table per group of `get_config` (and one for the paper runner's `experiment_fields`) with each field,
its default as written and its trailing comment. A field without a comment stops the build, naming it and
its line. The config files' arguments come from `configs/*.py` (their docstrings, and the argument names
their `parse_args` calls accept), and what each argument changes from importing `pkd_jax/defaults.py` on
its own (it needs only `ml_collections`) and comparing configs.

`mkdocs.yml` names this file under `hooks:`; `python docs/gen_config_reference.py` prints the page.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import io
import re
import sys
import tokenize
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = REPO / "pkd_jax" / "defaults.py"
CONFIGS = REPO / "configs"
PAGE = "config.md"


class ConfigReferenceError(ValueError):
    """defaults.py or a config file cannot be documented as it stands (e.g. a field has no comment)."""


@dataclasses.dataclass
class Field:
    name: str
    default: str
    comment: str
    line: int


@dataclasses.dataclass
class Group:
    name: str  # "" for the fields at the root
    comment: str
    fields: list[Field] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------------------------------------- parsing


def comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line -> (comment text without '#', whether the comment is alone on its line)."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            alone = not tok.line[: tok.start[1]].strip()
            found[tok.start[0]] = (tok.string[1:].strip(), alone)
    return found


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ConfigReferenceError(f"{DEFAULTS.name} has no function {name}()")


def _is_config_dict(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "ConfigDict"
    )


def _trailing(notes: dict[int, tuple[str, bool]], node: ast.stmt) -> str:
    parts = [notes[n][0] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in notes]
    return " ".join(p for p in parts if p)


def parse_groups(source: str, function: str = "get_config", prefix: str = "") -> list[Group]:
    """The fields `function` of defaults.py sets, in source order, grouped by sub-ConfigDict.

    Raises ConfigReferenceError naming every field (and group) without a trailing comment.
    """
    tree = ast.parse(source)
    fn = _function(tree, function)
    notes = comments(source)
    args = fn.args.args
    arg_defaults = dict(
        zip([a.arg for a in args][len(args) - len(fn.args.defaults) :], fn.args.defaults, strict=True)
    )
    params = {a.arg for a in args}

    aliases: dict[str, str] = {}  # variable -> group name ("" is the root)
    groups: dict[str, Group] = {}
    spans: list[tuple[int, int, Group, Field]] = []
    errors: list[str] = []
    for stmt in fn.body:
        if not isinstance(stmt, ast.Assign):
            continue
        targets = stmt.targets
        if _is_config_dict(stmt.value):
            for target in targets:
                if isinstance(target, ast.Name) and not aliases:
                    # The root ConfigDict; a prefixed one is described by its function's docstring.
                    aliases[target.id] = ""
                    doc = (ast.get_docstring(fn) or "").split("\n\n")[0].replace("\n", " ")
                    groups[""] = Group(prefix, doc.rstrip(".") if prefix else "")
            group_target = [t for t in targets if isinstance(t, ast.Attribute)]
            if group_target:
                name = group_target[0].attr
                full = f"{prefix}.{name}" if prefix else name
                comment = _trailing(notes, stmt)
                if not comment:
                    errors.append(f"line {stmt.lineno}: group {full} has no comment")
                groups[name] = Group(full, comment)
                for target in targets:
                    if isinstance(target, ast.Name):
                        aliases[target.id] = name
            continue
        if len(targets) != 1 or not isinstance(targets[0], ast.Attribute):
            continue
        target = targets[0]
        if not (isinstance(target.value, ast.Name) and target.value.id in aliases):
            continue
        group = groups[aliases[target.value.id]]
        value = stmt.value
        default = f"`{ast.get_source_segment(source, value)}`"
        if isinstance(value, ast.Name) and value.id in params:
            given = arg_defaults.get(value.id)
            default = (
                f"`{ast.get_source_segment(source, given)}` (the `{value.id}` argument)"
                if given is not None
                else f"the `{value.id}` argument"
            )
        comment = _trailing(notes, stmt)
        full = ".".join(p for p in (group.name, target.attr) if p)
        if not comment:
            errors.append(
                f"line {stmt.lineno}: {full} = {ast.get_source_segment(source, value)} has no comment"
            )
        field = Field(target.attr, default, comment, stmt.lineno)
        group.fields.append(field)
        spans.append((stmt.lineno, stmt.end_lineno or stmt.lineno, group, field))
    if errors:
        raise ConfigReferenceError(
            f"{DEFAULTS.relative_to(REPO)}:{function}(): every field needs a one-line trailing comment "
            "(`d.batch_size = 8  # clips per step, ...`); missing:\n  " + "\n  ".join(errors)
        )

    # Comments on lines of their own: "(...)" right below a field continues its comment; any other is a
    # note shown above its group's table, naming the field it stands before.
    for line, (text, alone) in sorted(notes.items()):
        if not alone or not (fn.lineno < line <= (fn.end_lineno or line)):
            continue
        before = [s for s in spans if s[1] < line]
        after = [s for s in spans if s[0] > line]
        if before and text.startswith("(") and all(n in notes for n in range(before[-1][1] + 1, line)):
            before[-1][3].comment += " " + text
        elif after:
            after[0][2].notes.append(f"Before `{after[0][3].name}`: {text}")
        elif before:
            before[-1][2].notes.append(text)
    return [g for g in groups.values() if g.fields]


def config_arguments(defaults_source: str, config_source: str) -> list[str]:
    """The `path:args` arguments a config file accepts: its own `parse_args` calls and the defaults.py
    helpers it calls that have one, in order of appearance."""

    def literal_args(tree: ast.AST) -> list[str]:
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == (
                "parse_args"
            ):
                for arg in node.args[1:2]:
                    if isinstance(arg, ast.Tuple):
                        found += [e.value for e in arg.elts if isinstance(e, ast.Constant)]
        return found

    helpers = {
        node.name: literal_args(node)
        for node in ast.parse(defaults_source).body
        if isinstance(node, ast.FunctionDef) and node.name != "parse_args"
    }
    found: list[str] = []
    for node in ast.walk(ast.parse(config_source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "defaults"
        ):
            found += helpers.get(func.attr, [])
    found += literal_args(ast.parse(config_source))
    return list(dict.fromkeys(found))


def helper_comments(source: str, function: str) -> dict[str, str]:
    """`c.group.field = value  # why` lines of a defaults.py helper: "group.field" -> "why"."""
    notes = comments(source)
    found = {}
    for stmt in ast.walk(_function(ast.parse(source), function)):
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            parts, node = [], stmt.targets[0]
            while isinstance(node, ast.Attribute):
                parts.insert(0, node.attr)
                node = node.value
            if parts and _trailing(notes, stmt):
                found[".".join(parts)] = _trailing(notes, stmt)
    return found


# ------------------------------------------------------------------------------------------- rendering


def inline(text: str) -> str:
    """Markdown for a comment in a table cell: code spans kept, <, >, *, | escaped outside them."""
    pieces = re.split(r"(`[^`]*`)", text)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:
            out.append(piece.replace("|", "\\|"))
        else:
            piece = piece.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            out.append(piece.replace("*", "\\*").replace("|", "\\|").replace("_", "\\_"))
    return "".join(out)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _load_defaults() -> Any:
    spec = importlib.util.spec_from_file_location("_pkd_jax_defaults_for_docs", DEFAULTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changes_section(source: str, order: list[str]) -> str:
    d = _load_defaults()
    recola = lambda: d.get_config("student", "recola")
    aw2 = lambda: d.affwild2(d.get_config("student", "affwild2"))
    cases = [
        (
            "`released_code`",
            "RECOLA stage configs and `configs/recola_paper.py`",
            recola,
            lambda: d.apply_released_code(recola()),
            ("apply_released_code",),
        ),
        ("`tiny`", "RECOLA stage configs", recola, lambda: d.tiny(recola()), ("tiny",)),
        (
            "the Aff-Wild2 configs",
            "`configs/affwild2_*.py`, against the RECOLA defaults",
            lambda: d.get_config("student", "affwild2"),
            aw2,
            ("affwild2",),
        ),
        (  # tiny_affwild2 calls tiny first
            "`tiny`",
            "Aff-Wild2 configs, against the Aff-Wild2 config",
            aw2,
            lambda: d.tiny_affwild2(aw2()),
            ("tiny", "tiny_affwild2"),
        ),
    ]
    parts = [
        "## What the arguments change",
        "",
        "Computed at build time by comparing configs made with `pkd_jax.defaults` (the student stage; the "
        "other stages differ only in `stage`). *Why* is the helper's own comment, where it has one.",
    ]
    for label, where, base, changed, helpers in cases:
        before, after = _flat(base().to_dict()), _flat(changed().to_dict())
        why = {k: v for helper in helpers for k, v in helper_comments(source, helper).items()}
        changed_fields = sorted(
            (k for k in after if before.get(k) != after[k]),
            key=lambda k: (order.index(k) if k in order else len(order), k),
        )
        rows = [
            (f"`{k}`", f"`{before.get(k)!r}`", f"`{after[k]!r}`", inline(why.get(k, "")))
            for k in changed_fields
        ]
        header = ("field", "default", "becomes", "why")
        if not any(row[3] for row in rows):
            rows, header = [row[:3] for row in rows], header[:3]
        parts += ["", f"### {label} ({where})", "", table(rows, header)]
    return "\n".join(parts)


def configs_section(defaults_source: str) -> str:
    parts = [
        "## Config files",
        "",
        "`--config=configs/FILE.py:ARG1,ARG2` passes the arguments after the colon to the file's "
        "`get_config`; an unknown argument is an error that lists the known ones.",
    ]
    for path in sorted(CONFIGS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        source = path.read_text()
        doc = ast.get_docstring(ast.parse(source)) or ""
        if not doc:
            raise ConfigReferenceError(f"{path.relative_to(REPO)} has no docstring")
        args = config_arguments(defaults_source, source)
        listed = ", ".join(f"`{a}`" for a in args) if args else "none"
        parts += ["", f"### `configs/{path.name}`", "", f"Arguments: {listed}.", "", doc]
    return "\n".join(parts)


def all_groups(source: str) -> list[Group]:
    """The groups of `get_config`, then the paper runner's `experiment` fields."""
    return parse_groups(source) + parse_groups(source, "experiment_fields", prefix="experiment")


def render(source: str | None = None) -> str:
    """The whole page, in Markdown."""
    source = DEFAULTS.read_text() if source is None else source
    groups = all_groups(source)
    n_fields = sum(len(g.fields) for g in groups)
    parts = [
        "# Config reference",
        "",
        f"Every field of a training config ({n_fields} in all), with its default and comment, generated "
        "from `pkd_jax/defaults.py` when these pages are built. `get_config(stage, dataset)` returns "
        "these defaults; the files in `configs/` build on them (below) and lock the result, so a mistyped "
        "field is an error. Any field can be overridden on the command line, e.g. "
        "`--config.data.batch_size=16` or `--config.eval.final_splits=\"('test',)\"`. How the fields are "
        "used: [Training and configs](training.md); the method behind the loss fields: "
        "[Method and variants](method.md).",
    ]
    for group in groups:
        title = f"`{group.name}`" if group.name else "Top level"
        parts += ["", f"## {title}", ""]
        if group.comment:
            parts += [inline(group.comment[0].upper() + group.comment[1:]) + ".", ""]
        parts += [inline(note) + "\n" for note in group.notes]
        rows = [(f"`{f.name}`", f.default, inline(f.comment)) for f in group.fields]
        parts.append(table(rows, ("field", "default", "meaning")))
    order = [".".join(p for p in (g.name, f.name) if p) for g in groups for f in g.fields]
    parts += ["", configs_section(source), "", changes_section(source, order), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------- mkdocs hooks


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    if files.get_file_from_path(PAGE) is not None:
        raise PluginError(f"docs/{PAGE} is generated by docs/gen_config_reference.py; delete the file")
    try:
        content = render()
    except ConfigReferenceError as error:
        raise PluginError(f"config reference: {error}") from error
    files.append(File.generated(config, PAGE, content=content))
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    server.watch(str(DEFAULTS))
    server.watch(str(CONFIGS))
    return server


if __name__ == "__main__":
    sys.stdout.write(render())
