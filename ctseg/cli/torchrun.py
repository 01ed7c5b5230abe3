"""Relaunching a command under torchrun (``--nproc N`` > 1): the same arguments, ``--nproc`` removed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The command line that runs ``ctseg ARGS`` (without ``--nproc``) in ``nproc`` torchrun processes.

    Examples
    --------
    >>> torchrun_command(2, ["train", "data", "--nproc", "2", "--out", "run"])[1:]
    ['-m', 'torch.distributed.run', '--nproc_per_node=2', '-m', 'ctseg', 'train', 'data', '--out', 'run']
    >>> torchrun_command(4, ["train", "data", "--nproc=4"])[-2:]
    ['train', 'data']
    """
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg == "--nproc":
            skip_value = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "ctseg", *kept]


def relaunch(nproc: int, args: Sequence[str]) -> int:
    """Run :func:`torchrun_command` and return its exit code."""
    return subprocess.call(torchrun_command(nproc, args))
