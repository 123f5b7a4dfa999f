"""A plugin whose names are hostile to terminals: rich markup and an OSC escape sequence."""

from __future__ import annotations

from cladapt.hookspecs import hookimpl
from cladapt.strategy import Strategy

MARKUP_NAME = "x[bold red]x[/] [/oops]"  # a name starts with a letter or a digit


class MarkupNamed(Strategy):
    """[link=http://evil]click[/link] \x1b]0;pwned\x07 description"""

    name = MARKUP_NAME
    protocols = ("test_time",)


@hookimpl
def cladapt_register_strategies(registry):
    registry.add(MarkupNamed)
