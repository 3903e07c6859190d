"""Design B's guarantee checks (benchmarks/designs/check_b.py: held-open ingest across passes, rollback,
duplicate, concurrent passes, late marks, live message) run on design D's or D2's database instead.

    .venv/bin/python -m benchmarks.designs.check_d [D|D2|CD]
"""

from __future__ import annotations

import sys

from benchmarks import ingest as bench
from benchmarks.designs import check_b


def main() -> None:
    name = (sys.argv[1] if len(sys.argv) > 1 else "D").upper()
    # check_b builds "B"'s scratch database: give it this design's SQL
    bench.DESIGNS["B"] = bench.DESIGNS[name]
    print(f"design {name}: {', '.join(bench.DESIGNS[name].sql_files)}")
    check_b.main()


if __name__ == "__main__":
    main()
