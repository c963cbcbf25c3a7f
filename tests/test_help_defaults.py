"""Every default a ``--help`` text names is the default the command really uses.

The whole command line is built (``effnet.cli.build_parser(None)``: every command, and the nested ones of
``detect``, ``segment``, ``weights`` ...) and each flag whose help says "default VALUE" is checked against the value
the command runs with when the flag is not given: argparse's default, or -- where that is None -- the value the
command fills in (the settings dataclass it builds, or the library constant that decides). A help text that
describes its default instead of naming a value ("default: the model's") is skipped; one that names something that
is not a value ("default: 0 for a few images, else up to 4") is listed in DESCRIBED with the reason, so that a new
help text is either checked or looked at."""

import argparse
import dataclasses
import re

import pytest

from effnet.cli import build_parser
from effnet.search.settings import DEFAULT_MAX_EPOCHS, SearchSettings
from effnet.train.config import TrainConfig
from effnet.train.progressive import DEFAULT_STAGES

# "default 4", "(default: efficientnet_b0)", "default sqlite:///search.db;" -> the word after "default"
NAMED = re.compile(r"\bdefault:?\s+(?P<value>[^\s,;()]+)")
# words that start a description of the default, not a value
DESCRIPTION = {"the", "a", "an", "one", "its", "where", "when", "is"}

# the settings a command builds from its flags, leaving out those not given (None): their dataclass default applies
FILLED_BY = {("train",): TrainConfig, ("detect", "train"): TrainConfig, ("segment", "train"): TrainConfig,
             ("search",): SearchSettings}
# None there too: the library decides, with this constant
DECIDED = {"progressive_stages": DEFAULT_STAGES, "budget_epochs": DEFAULT_MAX_EPOCHS}

# (command, flag) -> why its help names no single value
DESCRIBED = {
    ("weights", "download", "name"): "'its default tag': the tag of the model named",
    ("train", "--lr"): "a formula: the recipe's lr scaled by the global batch",
    ("detect", "train", "--lr"): "a formula: the recipe's lr scaled by the global batch",
    ("segment", "train", "--lr"): "a formula: the recipe's lr scaled by the global batch",
    ("predict", "--workers"): "chosen per run: 0 for a few images, else up to 4",
    ("scale", "--base"): "b0, or the base of --from-search",
    ("export", "--images"): "scikit-image's photos, not a flag value",
    ("detect", "export", "--images"): "scikit-image's photos, not a flag value",
    ("segment", "export", "--images"): "scikit-image's photos, not a flag value",
    ("detect", "eval", "--calibration"): "DATA/train of the DATA given, for an int8 backend only",
    ("detect", "predict", "--pretrained"): "'default tag': the published weights' default tag",
    ("serve", "--backend"): "what 'auto' (the default) picks",
    ("serve", "--threads"): "a formula: cores / processes / --infer-threads",
    ("serve", "--max-queue"): "a formula: 4 x max(--max-batch, 4) x inference threads",
    ("serve", "--max-concurrency"): "a formula: 2 x the queue",
}


def _flags(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, action, its help as ``--help`` prints it) for every action of ``parser`` and of its
    subcommands, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _flags(sub, (*path, name))
        elif action.help and action.help != argparse.SUPPRESS:
            yield path, action, parser._get_formatter()._expand_help(action)  # "%(default)s" filled in


def _named_defaults():
    """(key, action, the value its help names or None for a description) for each help that mentions a default."""
    for path, action, text in _flags(build_parser(None)):
        if "default" not in text:
            continue
        key = (*path, action.option_strings[-1] if action.option_strings else action.dest)
        found = NAMED.search(text)
        value = found["value"].rstrip(":.") if found else None
        yield key, action, None if value is None or value.lower() in DESCRIPTION else value


NAMED_DEFAULTS = list(_named_defaults())
CHECKED = [pytest.param(key, action, named, id=" ".join(key)) for key, action, named in NAMED_DEFAULTS
           if named is not None and key not in DESCRIBED]


def _real_default(path: tuple[str, ...], action: argparse.Action):
    """What the command runs with when ``action``'s flag is not given."""
    if action.default is not None:
        return action.default
    filled = FILLED_BY.get(path)
    if filled is not None:
        field = {f.name: f for f in dataclasses.fields(filled)}.get(action.dest)
        if field is not None and field.default is not None:
            return field.default
    return DECIDED.get(action.dest)


def _same(named: str, real) -> bool:
    if isinstance(real, (int, float)) and not isinstance(real, bool):
        try:
            return float(named) == float(real)
        except ValueError:
            return False
    return named == str(real)


@pytest.mark.parametrize("key, action, named", CHECKED)
def test_a_default_named_in_help_is_the_real_one(key, action, named):
    real = _real_default(key[:-1], action)
    assert real is not None, f"effnet {' '.join(key)}: the help says default {named}, but the flag's default is " \
                             "None and nothing here says what the command fills in (add it to FILLED_BY / DECIDED)"
    assert _same(named, real), f"effnet {' '.join(key)} --help says default {named}, the command uses {real!r}"


def test_the_table_of_described_defaults_lists_only_flags_that_exist():
    keys = {key for key, _, _ in NAMED_DEFAULTS}
    assert set(DESCRIBED) <= keys, sorted(set(DESCRIBED) - keys)
    assert len(keys) > 30 and len(CHECKED) > 15  # every command's parser was built, nested ones too
