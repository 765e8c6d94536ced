"""diffcomb's benchmark suite: workloads as data, peers timed in the same run.

Run ``python -m benchmarks --help`` (installed as ``diffcomb-bench``).
Modules: ``workloads`` (what is timed), ``peers`` (who is timed),
``timing`` (how), ``runner`` (check then time), ``report`` (table and JSON),
``progress`` (stderr bar), ``cli`` (the command line).
"""

__all__ = ["main"]


def main(argv=None) -> int:
    """Entry point; see ``benchmarks.cli.main``."""
    from .cli import main as _main

    return _main(argv)
