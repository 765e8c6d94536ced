"""``python -m benchmarks`` from a clone: the same command as ``diffcomb-bench`` (diffcomb.bench)."""

from diffcomb.bench.cli import main

raise SystemExit(main())
