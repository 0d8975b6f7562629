"""attnlib: human-attention supervision for CNNs, reproduced.

Importing the package sets the ``openjpeg`` and ``pylibjpeg`` loggers to WARNING: their JPEG 2000 encoder logs
one INFO line per image ("tile number 1 / 1"), which lands inside progress bars wherever INFO is shown.
This module imports nothing heavy, so notebook kernels can load :class:`KernelLogFilter` at start.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

for _name in ("openjpeg", "pylibjpeg"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class UsageError(ValueError):
    """A bad choice on the command line or in a call (unknown profile, notebook, parameter): ``attnlib``
    prints the message as one line and exits with code 2."""


class KernelLogFilter(logging.Filter):
    """Drops two log lines of headless ipykernel kernels that say nothing about the run.

    "Kernel is running over TCP without encryption" (every kernel start: the kernel only talks to the
    local process that started it) and "KeyboardInterrupt caught in kernel" (jupyter_client interrupts
    a kernel before it shuts it down; when the interrupt lands while the kernel is still handling the
    last request, ipykernel logs this). :mod:`attnlib.engine.sweep` installs it in the kernels it starts.
    """

    NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the two noise lines, True for every other record."""
        return not record.getMessage().startswith(self.NOISE)
