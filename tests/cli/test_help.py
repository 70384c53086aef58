"""Every help page as a person reads it: flags shown as flags, not as options that take a value."""

import re

import typer

from edgemlic.cli import app


def command_paths(command, path=()):
    """The argument lists that reach every command and group of the application."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def test_no_help_page_gives_a_flag_a_value_type(cli):
    paths = list(command_paths(typer.main.get_command(app)))
    assert ("predict",) in paths and ("thresholds", "tune") in paths
    for path in paths:
        code, out, _ = cli([*path, "--help"])
        assert code == 0
        assert "<bool>" not in out, f"edgemlic {' '.join(path)} --help: {out}"
        assert re.search(r"│ +--help +Show this message", out), out
