"""The old home of the command line, kept so `from vimtool.cli import app` and `vimtool.cli:main` keep working.

The commands live in `vimtool.commands` (one module per command, shared options declared once in
`vimtool.commands.options`).
"""

from vimtool.commands import app, main

__all__ = ["app", "main"]
