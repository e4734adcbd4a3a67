"""The reference pages (``docs/reference``), rendered from the code so they cannot drift.

``cli.md`` walks the ``annt`` argument parser, ``study-spec.md`` the study spec's pydantic
models (and the training recipe), ``attacks.md`` the attack registry and each attack's parameter
model. A field's meaning is its ``description``, else the comment at the end of its line. The
output depends only on the code (fixed widths, registration and declaration order), so
tests/foundation/test_reference_docs.py can compare it byte for byte with the committed pages.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import io
import json
import math
import re
import textwrap
import tokenize
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

COMMAND = "annt reference --out docs/reference"
USAGE_WIDTH = 88


def _banner(title: str) -> str:
    return f"<!-- Generated from the code by `{COMMAND}`; do not edit by hand. -->\n\n# {title}\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


# ------------------------------------------------------------------------------------ values


def _yaml(value: Any) -> str:
    """``value`` as it is written in a YAML spec (flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        try:
            plain = value and yaml.safe_load(value) == value and "," not in value
        except yaml.YAMLError:
            plain = False
        return value if plain else json.dumps(value)
    if isinstance(value, BaseModel):
        return _yaml(value.model_dump())
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _bounds(metadata: list[Any]) -> list[str]:
    """Constraints in a field's (or an ``Annotated`` type's) metadata, in words."""
    out: list[str] = []
    for m in metadata:
        if isinstance(m, FieldInfo):
            out += _bounds(m.metadata)
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(m, attr, None)
            if bound is not None and isinstance(m, (annotated_types.BaseMetadata,)):
                out.append(f"{sign} {_yaml(bound)}")
        if isinstance(m, annotated_types.MinLen) and m.min_length:
            out.append(f"at least {m.min_length} item{'s' if m.min_length > 1 else ''}")
        if isinstance(m, annotated_types.MaxLen):
            out.append(f"at most {m.max_length} items")
        pattern = getattr(m, "pattern", None)
        if isinstance(pattern, str):
            body = pattern.removeprefix("^(").removesuffix(")$")
            if pattern.startswith("^(") and pattern.endswith(")$") and all(p.isidentifier() or p.isalnum()
                                                                          for p in body.split("|")):
                out.append("one of " + ", ".join(body.split("|")))
            else:
                out.append(f"matches `{pattern}`")
    return out


def _type(annotation: Any, constraints: list[str], where: str = "") -> str:
    """A type as a YAML author reads it; constraints of nested ``Annotated`` types go to
    ``constraints`` (prefixed with ``where``, e.g. ``items``)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin is Annotated:
        constraints += [f"{where} {c}".strip() for c in _bounds(list(args[1:]))]
        return _type(args[0], constraints, where)
    if origin is Literal:
        return " or ".join(_yaml(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a, constraints, where) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type(args[0], constraints, 'items')}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[1], constraints, 'values')}" if args else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


# ------------------------------------------------------------------------- field meanings


def _line_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` for fields declared in ``cls``'s own body with a comment at the
    end of the declaration (classes without source, e.g. made by ``create_model``, give none)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    body = ast.parse(source).body[0]
    out = {}
    for node in getattr(body, "body", []):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.end_lineno in comments:
            out[node.target.id] = comments[node.end_lineno]
    return out


def _meanings(model: type[BaseModel]) -> dict[str, str]:
    """Each field's one-line meaning: its description, else its declaration's end-of-line comment."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            comments.update(_line_comments(cls))
    out = {}
    for name, info in model.model_fields.items():
        text = (info.description or comments.get(name) or "").strip()
        out[name] = _plain(text.splitlines()[0]) if text else ""
    return out


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    return _code(_yaml(value))


def _field_rows(model: type[BaseModel]) -> list[tuple[str, ...]]:
    meanings = _meanings(model)
    rows = []
    for name, info in model.model_fields.items():
        constraints: list[str] = []
        kind = _type(info.annotation, constraints)
        constraints = _bounds(info.metadata) + constraints
        if get_origin(info.annotation) is Literal:
            constraints.insert(0, "one of " + ", ".join(map(str, get_args(info.annotation))))
            kind = "str" if all(isinstance(a, str) for a in get_args(info.annotation)) else kind
        default = _default(info)
        if default == "`null`" and kind.endswith(" or null"):  # the default says that null is allowed
            kind = kind.removesuffix(" or null")
        rows.append((_code(name), kind, default, "; ".join(constraints), meanings[name]))
    return rows


FIELD_HEADER = ("Key", "Type", "Default", "Constraint", "Meaning")


def _doc(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line (none for pydantic's own)."""
    doc = obj.__doc__ if "__doc__" in vars(obj) else None
    return _plain(" ".join(inspect.cleandoc(doc).split("\n\n")[0].split())) if doc else ""


def _plain(text: str) -> str:
    """reStructuredText's double backticks as Markdown's single ones."""
    return text.replace("``", "`")


# ------------------------------------------------------------------------------ cli.md


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest if not action.option_strings else action.dest.upper()


def _value(action: argparse.Action) -> str:
    """What follows an option's flag (nothing for a switch), or a positional argument."""
    name = _metavar(action)
    if action.nargs == 0:
        value = ""
    elif action.nargs == "?":
        value = f"[{name}]"
    elif action.nargs == "*":
        value = f"[{name} ...]"
    elif action.nargs == "+":
        value = f"{name} [{name} ...]"
    elif isinstance(action.nargs, int):
        value = " ".join([name] * action.nargs)
    else:
        value = name
    return value


def _argument(action: argparse.Action) -> str:
    """How one argument is written: ``--out OUT``, ``--quiet``, ``--augment | --no-augment``, ``[MODEL]``."""
    if not action.option_strings:
        return _value(action)
    if isinstance(action, argparse.BooleanOptionalAction):
        return " | ".join(action.option_strings)
    return f"{action.option_strings[0]} {_value(action)}".strip()


def _usage(prog: str, actions: list[argparse.Action]) -> str:
    """The usage line, wrapped between arguments at a fixed width."""
    parts = [prog]
    for action in actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            parts.append(_metavar(action) + " ...")
        elif action.option_strings:
            text = _argument(action)
            parts.append(text if action.required else f"[{text}]")
        else:
            parts.append(_argument(action))
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 1 + len(part) > USAGE_WIDTH:
            lines.append("   ")
        lines[-1] += " " + part
    return "\n".join(lines)


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    values = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    values["prog"] = prog
    if action.choices is not None:
        values["choices"] = ", ".join(map(str, action.choices))
    with contextlib.suppress(KeyError, TypeError, ValueError):  # a literal % in the help
        text = text % values
    if action.choices is not None and action.metavar is not None:  # else the metavar shows them
        text += f" (one of {', '.join(map(str, action.choices))})"
    return text


def _option_default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    default = action.default
    if default is argparse.SUPPRESS or default is None or default == []:
        return ""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "on" if default else "off"
    if isinstance(action, argparse.BooleanOptionalAction):
        return "on" if default else "off"
    return _code(_yaml(default))


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The arguments of ``parser`` a reader sees (no help switch, no sub-command list)."""
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS]


def _option_row(action: argparse.Action, prog: str) -> tuple[str, str, str]:
    """``(flags, default, meaning)``; the value is written once, after the last flag."""
    if not action.option_strings:
        flags = _code(_value(action))
    elif isinstance(action, argparse.BooleanOptionalAction):
        flags = ", ".join(_code(flag) for flag in action.option_strings)
    else:
        *aliases, last = action.option_strings
        flags = ", ".join([_code(flag) for flag in aliases] + [_code(f"{last} {_value(action)}".strip())])
    return flags, _option_default(action), _help(action, prog)


OPTION_HEADER = ("Argument", "Default", "Meaning")
COMMON_MIN = 3  # an option written alike in this many commands is documented once, under "Common options"


def _common_rows(commands: list[tuple[str, str, argparse.ArgumentParser]]) -> dict[tuple[str, ...], int]:
    """The option rows (of optional arguments with a help text) that at least ``COMMON_MIN``
    commands share word for word, with how many commands take each, in order of first appearance."""
    counts: dict[tuple[str, ...], int] = {}
    for _, _, sub in commands:
        for action in _shown(sub):
            if action.option_strings and not action.required and action.help:
                row = _option_row(action, "annt")
                counts[row] = counts.get(row, 0) + 1
    return {row: n for row, n in counts.items() if n >= COMMON_MIN}


def _short_usage(prog: str, actions: list[argparse.Action], has_options: bool) -> str:
    """``prog``, its positional and required arguments, then ``[options]``."""
    parts = [prog]
    for action in actions:
        if not action.option_strings or action.required:
            parts.append(_argument(action))
    if has_options:
        parts.append("[options]")
    return " ".join(parts)


def _states_other_default(action: argparse.Action) -> bool:
    """Whether a recipe option's help states a default other than the recipe's own (e.g. one
    that applies when another option is given), which the recipe table would not tell."""
    from annt.train.recipes import Recipe

    m = re.search(r"\(default:? ([^)]*)\)", action.help or "")
    if not m:
        return False
    stated = m.group(1).split(",")[0].strip()
    default = Recipe.model_fields[action.dest].default
    try:
        return m.group(1).strip() != stated or float(stated) != float(default)
    except (TypeError, ValueError):
        return True


RECIPE_ANCHOR = "study-spec.md#modelstrain-training-recipe-keys"


def _options_table(parser: argparse.ArgumentParser, common: dict[tuple[str, ...], int] | None = None,
                   recipe: tuple[str, ...] = ()) -> str:
    """The table of ``parser``'s own arguments, then a line naming the training-recipe options
    (``recipe``: their dests; the study spec page describes each key) and one naming the
    common options it takes."""
    rows, shared, recipe_flags = [], [], []
    for action in _shown(parser):
        row = _option_row(action, "annt")
        if action.dest in recipe and action.option_strings and not _states_other_default(action):
            recipe_flags.append(", ".join(_code(flag) for flag in action.option_strings))  # values: the key's type
        elif common is not None and row in common:
            shared.append(", ".join(_code(flag) for flag in action.option_strings))
        else:
            rows.append(row)
    lines = [_table(OPTION_HEADER, rows)] if rows else ([] if shared or recipe_flags else ["No options.\n"])
    if recipe_flags:
        lines.append(f"Training recipe options, one per key of the [training recipe]({RECIPE_ANCHOR}) (its"
                     " meaning, range and default there; a key not given takes the model family's value):"
                     f" {', '.join(recipe_flags)}.\n")
    if shared:
        lines.append(f"Common options: {', '.join(shared)}.\n")
    return "\n".join(lines)


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of every sub-command, nested ones too, as registered."""
    out = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if id(sub) in seen:  # an alias
                continue
            seen.add(id(sub))
            out.append((name, helps.get(name) or sub.description or "", sub))
            out += [(f"{name} {n}", h, p) for n, h, p in _commands(sub)]
    return out


def _recipe_options(command: str) -> tuple[str, ...]:
    """The dests of ``annt train``'s options that set a training-recipe key (none for other commands)."""
    if command != "train":
        return ()
    from annt.cli.train_cmd import RECIPE_OPTIONS

    return tuple(RECIPE_OPTIONS)


def cli_page(parser: argparse.ArgumentParser | None = None) -> str:
    """``cli.md``: every ``annt`` command with its usage and options; options that many
    commands share word for word are described once, under "Common options"."""
    if parser is None:
        from annt.cli.main import build_parser

        parser = build_parser()
    commands = _commands(parser)
    common = _common_rows(commands)
    parts = [_banner("Command line reference"), "", (parser.description or "").strip(), "",
             "```", _usage(parser.prog, parser._actions), "```", "",
             "Every command also takes `-h` / `--help`, which prints its full usage."
             " Options that several commands share are described once, under"
             " [Common options](#common-options); each command's section names the ones it takes.", "",
             "Commands: " + ", ".join(f"[{n}](#annt-{n.replace(' ', '-')})" for n, _, _ in commands) + ".",
             "", _options_table(parser)]
    parts += ["", "## Common options", "",
              _table(OPTION_HEADER, list(common))]
    for name, text, sub in commands:
        parts += ["", f"## annt {name}", ""]
        if text:
            parts += [text[:1].upper() + text[1:] + ("" if text.endswith((".", "?", ")")) else "."), ""]
        actions = _shown(sub)
        if any(a.required or not a.option_strings for a in actions):  # else the usage is `annt NAME [options]`
            usage = _short_usage(sub.prog, actions, any(a.option_strings and not a.required for a in actions))
            parts += [f"Usage: `{usage}`", ""]
        parts.append(_options_table(sub, common, _recipe_options(name)))
    return "\n".join(parts)


# ------------------------------------------------------------------------ study-spec.md


def _nested(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field's type (``list[ModelSpec]``, ``DiagnoseSpec | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _nested(a)]


def _model_sections(model: type[BaseModel], path: str, extra: Callable[[type[BaseModel], str], list[str]],
                    seen: set[type]) -> list[str]:
    parts = ["", f"## {_code(path) if path else 'Top level'}", ""]
    doc = _doc(model) if path else ""  # the top level's is the page's introduction
    if doc:
        parts += [doc, ""]
    parts += [_table(FIELD_HEADER, _field_rows(model))]
    parts += extra(model, path)
    for name, info in model.model_fields.items():
        for sub in _nested(info.annotation):
            if sub in seen:
                continue
            seen.add(sub)
            listed = get_origin(info.annotation) is list
            parts += _model_sections(sub, f"{path + '.' if path else ''}{name}{'[]' if listed else ''}", extra, seen)
    return parts


def study_spec_page() -> str:
    """``study-spec.md``: every key of a study spec, from ``StudySpec`` and the models it nests."""
    from annt.experiments.spec import StudySpec, TrainSettings
    from annt.train.recipes import Recipe

    def recipe(model: type[BaseModel], path: str) -> list[str]:
        if model is not TrainSettings:
            return []
        return ["", f"### {_code(path)}: training recipe keys", "",
                f"Any of these keys may also be given under {_code(path)}. {_doc(Recipe)}",
                "The model family's recipe supplies the value of a key not given; the defaults"
                " below are the recipe's own.", "", _table(FIELD_HEADER, _field_rows(Recipe))]

    intro = ["", "A study spec is a YAML file that `annt run` reads: "
             + _doc(StudySpec)[:1].lower() + _doc(StudySpec)[1:] + " An unknown key, a wrong type or a value out of range is one"
             " error line naming the key path, before any work starts."]
    return "\n".join([_banner("Study spec reference"), *intro,
                      *_model_sections(StudySpec, "", recipe, {StudySpec})]) + "\n"


# --------------------------------------------------------------------------- attacks.md


def attacks_page() -> str:
    """``attacks.md``: every registered attack, its kind and its parameters; parameters that
    several attacks declare alike are described once, under "Common parameters"."""
    from annt.attacks.registry import get_attack, list_attacks
    from annt.inputs.numbers import COUNT_MAX

    names = list_attacks()
    rows, fields = [], {}
    for name in names:
        rows.append((f"[`{name}`](#{name})",))
        fields[name] = _field_rows(get_attack(name).params_model)
    counts: dict[tuple[str, ...], int] = {}
    for name in names:
        for row in fields[name]:
            counts[row] = counts.get(row, 0) + 1
    common = [row for row, n in counts.items() if n >= COMMON_MIN]
    header = ("Parameter", "Type", "Default", "Constraint", "Meaning")
    parts = [_banner("Attack reference"), "",
             "Every registered attack, by the name YAML specs and `annt attack --attack` use, with its"
             " parameters (`params:` in a spec, `--param KEY=VALUE` on the command line). A misspelt"
             " key, a wrong type or a value out of range is one error line naming the attack and the"
             f" parameter; a count (an integer parameter) is at most {COUNT_MAX}. Universal attacks"
             " compute one perturbation for the whole set.", "",
             "Attacks: " + ", ".join(row[0] for row in rows) + ".", "", "## Common parameters", "",
             "Parameters that several attacks declare alike; each attack's section names the ones it takes.", "",
             _table(header, common)]
    for name in names:
        spec = get_attack(name)
        kind = "gradient-based" if spec.gradient_based else "gradient-free"
        own = [row for row in fields[name] if row not in common]
        shared = [row[0] for row in fields[name] if row in common]
        parts += ["", f"## {name}", "", f"{spec.description}. Kind: {kind}"
                  f"{'; universal' if spec.universal else ''}.", ""]
        if own:
            parts += [_table(header, own), ""]
        if shared:
            parts += [f"Common parameters: {', '.join(shared)}.", ""]
    return "\n".join(parts)


# -------------------------------------------------------------------------------- writing


def pages() -> dict[str, str]:
    """``{file name: text}`` of every reference page."""
    texts = {"cli.md": cli_page(), "study-spec.md": study_spec_page(), "attacks.md": attacks_page()}
    return {name: re.sub(r"\n{3,}", "\n\n", text).strip() + "\n" for name, text in texts.items()}


def write_pages(out: str | Path) -> list[Path]:
    """Write every page into folder ``out`` (atomically, one file at a time)."""
    from annt.inputs.files import output_dir
    from annt.store.atomic import atomic_write_bytes

    folder = output_dir(out, "--out")
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write_bytes(folder / name, text.encode("utf-8")) for name, text in pages().items()]


def stale_pages(folder: str | Path) -> list[str]:
    """Names of the pages in ``folder`` that are missing or differ from the code's."""
    folder = Path(folder)
    return [name for name, text in pages().items()
            if not (folder / name).is_file() or (folder / name).read_bytes() != text.encode("utf-8")]
