"""The command line as a person meets it: the version, and the commands in the order of the work."""

import re

from edgemlic import __version__
from edgemlic.cli.app import COMMAND_ORDER


def test_version(cli):
    code, out, _ = cli(["--version"])
    assert code == 0 and out.strip() == f"edgemlic {__version__}"


def test_help_lists_commands_in_the_order_of_the_work(cli):
    code, out, _ = cli(["--help"])
    listed = re.findall(r"^│ (\w+) ", out, flags=re.M)
    assert code == 0 and tuple(listed) == COMMAND_ORDER
    assert max(len(line) for line in out.splitlines()) <= 80
