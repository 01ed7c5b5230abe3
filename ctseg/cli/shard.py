"""Which shard of a cohort this process takes, from the scheduler's environment (only ``cli`` reads it).

Kubernetes Indexed Jobs set ``JOB_COMPLETION_INDEX`` (with the count in ``JOB_COMPLETIONS``, which our manifest
sets from ``spec.completions``); Slurm job arrays set ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``
(``SLURM_ARRAY_TASK_MIN`` is subtracted, so ``--array=1-4`` works too).
"""

from __future__ import annotations

from collections.abc import Mapping

from ctseg.errors import ConfigError

SCHEDULERS = (
    ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS", None),
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),
)


def shard_from_env(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """``(index, count)`` from a scheduler's variables, or ``None`` when none is set.

    Examples
    --------
    >>> shard_from_env({"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETIONS": "4"})
    (2, 4)
    >>> shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"})
    (2, 3)
    >>> shard_from_env({}) is None
    True

    Raises
    ------
    ConfigError
        If the index is set without its count, either is not an integer, or the index is outside 0..count-1.
    """
    for index_var, count_var, min_var in SCHEDULERS:
        if index_var not in environ:
            continue
        if count_var not in environ:
            raise ConfigError(f"{index_var} is set but {count_var} is not; set it to the number of shards")
        try:
            index = int(environ[index_var]) - (int(environ[min_var]) if min_var and min_var in environ else 0)
            count = int(environ[count_var])
        except ValueError:
            raise ConfigError(
                f"{index_var}={environ[index_var]!r}, {count_var}={environ[count_var]!r}: expected integers"
            ) from None
        if not 0 <= index < count:
            raise ConfigError(f"{index_var} gives shard {index}, outside 0..{count - 1} ({count_var}={count})")
        return index, count
    return None
