"""diffcomb's benchmark suite: workloads as data, peers timed in the same run.

Run ``diffcomb-bench --help`` (also ``python -m diffcomb.bench``, and ``python -m benchmarks``
from a clone). Modules: ``workloads`` (what is timed), ``peers`` (who is timed),
``timing`` (how), ``runner`` (check then time), ``report`` (table and JSON),
``plot`` (PNG charts), ``progress`` (stderr bar), ``cli`` (the command line).
Peers are optional: ``pip install 'diffcomb[bench]'`` installs those that install cleanly
from the package index; benchmarks/README.md in the repository explains the others.
"""

__all__ = ["main"]


def main(argv=None) -> int:
    """Entry point; see ``diffcomb.bench.cli.main``."""
    from .cli import main as _main

    return _main(argv)
