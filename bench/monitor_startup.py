"""Start-up of `train.py monitor` against importing the training code (the cost it avoids).

    python bench/monitor_startup.py RUN_DIR [--repeat 3]

Times, in fresh processes, (a) `train.py monitor RUN_DIR --screenshot`: interpreter start,
DearPyGui window, the run's files read, frames drawn, PNG saved, exit; (b) the baseline
`python -c "import training.loop"` (torch + model + the loop), which the monitor never imports.
Prints the best of --repeat runs of each and their ratio. Needs an X display (Xvfb works).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_time(cmd, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        monitor = best_time([sys.executable, "train.py", "monitor", args.run_dir, "--screenshot",
                             os.path.join(tmp, "shot.png")], args.repeat)
    baseline = best_time([sys.executable, "-c", "import training.loop"], args.repeat)
    print(f"monitor: window open, run read, frame saved, exit  {monitor:6.2f} s")
    print(f"baseline: import training.loop (torch + model)      {baseline:6.2f} s")
    print(f"ratio monitor / baseline: {monitor / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
