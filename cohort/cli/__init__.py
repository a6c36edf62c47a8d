"""The ``cohort`` command: a thin shell over the library (see :mod:`cohort.cli._base`).

The group, its shared options and the error/exit-code handling are in ``_base``;
the commands are in one module per kind of work, imported here to register them.
"""

from __future__ import annotations

from . import export, harvest, report, select  # noqa: F401 - registers the commands
from ._base import EXIT_INCOMPLETE, EXIT_INTERRUPTED, cli, main

__all__ = ["EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "cli", "main"]
