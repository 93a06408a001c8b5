# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""What every recipe's command line shares: defaults read from the library, and a `--help` that is a manual.

A recipe's argument dataclass holds no domain default of its own: `library_default(MMRQVAEConfig(), "e_dim", ...)`
makes a field whose default is the library's, so one default lives in one place and the YAML under
`recipes/configs/` sets the values a run uses. `document(parser, __doc__)` makes `--help` print the recipe's
docstring (its real command lines) above the arguments, with each default, and lists `--config`. Every recipe that
reads or writes a run folder names it with `run_dir_field` (`--run_dir`), one flag with one default.
"""

import argparse
import copy
import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any

from .run import DEFAULT_RUN_DIR


CONFIG_HELP = (
    "YAML file whose keys set any argument listed here (recipes/configs/<run>/...); flags on the command line "
    "override it. The defaults shown are the library's; the YAML sets the values a run uses."
)


def library_default(source: Any, name: str, help: str, **metadata) -> dataclasses.Field:
    """A dataclass field whose default is `source.<name>`: an attribute of a library config instance (filled by its
    `__post_init__`, so a `None` placeholder shows as the real value) or of an arguments dataclass.

    Mutable values (lists, dicts) become a `default_factory` that copies them; scalars stay a plain `default`,
    which `HfArgumentParser` needs for `Literal` and `bool` fields.
    """
    value = getattr(source, name)
    if isinstance(value, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata={"help": help, **metadata})
    return dataclasses.field(default=value, metadata={"help": help, **metadata})


def run_dir_field(stages: str) -> dataclasses.Field:
    """The `--run_dir` of every recipe: the run folder `outputs/<run>/`, defaulting to `DEFAULT_RUN_DIR`. The recipe
    asks `mmesid_artifacts.Run(run_dir)` for every stage folder and file in it; `stages` says which it reads and
    writes (`"reads data/; writes embeddings/"`) for `--help`."""
    return dataclasses.field(default=str(DEFAULT_RUN_DIR), metadata={"help": f"Run folder outputs/<run>/: {stages}."})


class RecipeHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's line breaks (its command lines) and shows each argument's default."""


def document(
    parser: argparse.ArgumentParser, doc: str | None, recipe_file: str | None = None, config: bool = True
) -> argparse.ArgumentParser:
    """Makes `parser --help` a manual: `doc` (the recipe's module docstring) as the description, each default shown,
    and, for a `TrlParser` (`config=True`), `--config` listed. `TrlParser.parse_args_and_config` takes `--config` off
    the command line before parsing, so the listed flag never reaches the dataclasses (`SUPPRESS`: no attribute).

    With `recipe_file` (the recipe's `__file__`), the epilog lists, for each YAML that `doc`'s command lines pass to
    `--config` (found next to the recipe), the values it sets that differ from the defaults shown, so the help says
    what a run really uses.
    """
    parser.description = doc
    parser.formatter_class = RecipeHelpFormatter
    if config:
        parser.add_argument("--config", metavar="YAML", default=argparse.SUPPRESS, help=CONFIG_HELP)
    if recipe_file is not None and doc:
        parser.epilog = yaml_overrides(parser, doc, Path(recipe_file).resolve().parents[1])
    return parser


def yaml_overrides(parser: argparse.ArgumentParser, doc: str, root: Path) -> str | None:
    """The epilog of `document`: per YAML named after `--config` in `doc` (relative to `root`, the checkout), the
    `key value` pairs it sets where they differ from the parser's defaults. `None` when no YAML is found (a wheel)."""
    import yaml  # only for --help; the ground floor's imports stay light

    defaults = {}
    for action in parser._actions:  # the first action of a dest holds its default (`--no_x` comes after `--x`)
        defaults.setdefault(action.dest, action.default)
    blocks = []
    for name in dict.fromkeys(re.findall(r"--config\s+(\S+\.ya?ml)", doc)):
        path = root / name
        if not path.is_file():
            continue
        values = yaml.safe_load(path.read_text()) or {}
        changed = [
            f"{key} {value!r} (default {defaults[key]!r})"
            for key, value in values.items()
            if key in defaults and value != defaults[key]
        ]
        if changed:
            text = ", ".join(changed)
            blocks.append(
                f"{name} sets:\n"
                + textwrap.fill(
                    text,
                    116,
                    initial_indent="  ",
                    subsequent_indent="  ",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
    if not blocks:
        return None
    return "What the YAMLs of the commands above set where it differs from the defaults shown:\n" + "\n".join(blocks)


__all__ = ["CONFIG_HELP", "RecipeHelpFormatter", "document", "library_default", "run_dir_field", "yaml_overrides"]
