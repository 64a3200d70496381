"""How long ``pecmae --help`` takes, against the interpreter's own start-up and ``import torch``.

    python bench/cli_help.py [--repeats 7]

Prints one JSON line: medians in seconds of ``python -c pass`` (the floor), ``pecmae --help`` and
``python -c "import torch"`` (what building the parser used to cost), measured interleaved in this run,
and the ratios. The target is ``pecmae --help`` under 1 s, i.e. nothing heavy imported to build parsers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    commands = {
        "python_startup": [sys.executable, "-c", "pass"],
        "pecmae_help": [sys.executable, "-m", "pecmae_hub", "--help"],
        "import_torch": [sys.executable, "-c", "import torch"],
    }
    for argv in commands.values():  # warm the file cache
        _time(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, argv in commands.items():
            times[name].append(_time(argv))
    med = {name: statistics.median(values) for name, values in times.items()}
    print(
        json.dumps(
            {
                "bench": "cli_help",
                "repeats": args.repeats,
                **{f"{k}_s": round(v, 3) for k, v in med.items()},
                "help_over_startup": round(med["pecmae_help"] / med["python_startup"], 2),
                "help_over_import_torch": round(med["pecmae_help"] / med["import_torch"], 3),
                "under_1s": med["pecmae_help"] < 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
