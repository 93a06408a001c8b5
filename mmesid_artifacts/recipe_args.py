# Copyright 2026 The mmesid Authors. Licensed under the Apache License, Version 2.0.
"""What every recipe's command line shares: defaults read from the library, and a `--help` that is a manual.

A recipe's argument dataclass holds no domain default of its own: `library_default(MMRQVAEConfig(), "e_dim", ...)`
makes a field whose default is the library's, so one default lives in one place and the YAML under
`recipes/configs/` sets the values a run uses. `document(parser, __doc__)` makes `--help` print the recipe's
docstring (its real command lines) above the arguments, with each default, and lists `--config`.
"""

import argparse
import copy
import dataclasses
from typing import Any


CONFIG_HELP = (
    "YAML file whose keys set any argument below (recipes/configs/<run>/...); flags given on the command line "
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


class RecipeHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's line breaks (its command lines) and shows each argument's default."""


def document(parser: argparse.ArgumentParser, doc: str | None, config: bool = True) -> argparse.ArgumentParser:
    """Makes `parser --help` a manual: `doc` (the recipe's module docstring) as the description, defaults shown,
    and, for a `TrlParser` (`config=True`), `--config` listed. `TrlParser.parse_args_and_config` takes `--config` off
    the command line before parsing, so the listed flag never reaches the dataclasses (`SUPPRESS`: no attribute)."""
    parser.description = doc
    parser.formatter_class = RecipeHelpFormatter
    if config:
        parser.add_argument("--config", metavar="YAML", default=argparse.SUPPRESS, help=CONFIG_HELP)
    return parser


__all__ = ["CONFIG_HELP", "RecipeHelpFormatter", "document", "library_default"]
