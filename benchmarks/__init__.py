"""Entry point kept for ``python -m benchmarks`` in a clone; the CLI is ``diffcomb.bench``
(installed as ``diffcomb-bench``). This folder keeps the measured tables (results/) and the
README on installing the peers; it is not part of the installed package."""
