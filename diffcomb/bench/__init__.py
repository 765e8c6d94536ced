"""diffcomb's benchmark suite: workloads as data, peers timed in the same run.

Run ``diffcomb-bench --help`` (also ``python -m diffcomb.bench``, and ``python -m benchmarks``
from a clone). Modules: ``workloads`` (what is timed: one dataclass per kind of
workload, with its inputs and check), ``suites`` (the named lists of workloads),
``peers`` (who is timed; the contenders of suites perturb, ranking and topk in
``perturb_suite``, ``ranking_suite``, ``topk_peers``), ``timing`` (how), ``runner``
(check then time, for every suite), ``report`` (table and JSON), ``memory`` (peak
memory, one process per measurement), ``plot`` (PNG charts), ``progress`` (stderr
bar), ``cli`` (the command line).
Peers are optional: ``pip install 'diffcomb[bench]'`` installs those that install cleanly
from the package index; benchmarks/README.md in the repository explains the others.
"""

__all__ = ["main"]


def main(argv=None) -> int:
    """Entry point; see ``diffcomb.bench.cli.main``."""
    from .cli import main as _main

    return _main(argv)
