"""Start-up of `train.py monitor` against importing the training code (the cost it avoids).

    python bench/monitor_startup.py RUN_DIR [--repeat 3]

Times, in fresh processes, (a) interpreter start, DearPyGui window, the run's files read, the
first frame drawn, exit; (b) `train.py monitor RUN_DIR --screenshot` (ten frames and a PNG); (c)
the baseline `python -c "import training.loop"` (torch + model + the loop), which the monitor
never imports. Prints the best of --repeat runs of each and the ratio (a) / (c). Needs an X
display (Xvfb works).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A fresh interpreter: import the monitor, open its window on the run, read the files, draw one frame.
FIRST_FRAME = ("import sys; from training.monitor import Monitor; m = Monitor([sys.argv[1]], vsync=False); "
               "m.step(); assert m.runs[0].records > 0; m.close()")


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
    first = best_time([sys.executable, "-c", FIRST_FRAME, args.run_dir], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        monitor = best_time([sys.executable, "train.py", "monitor", args.run_dir, "--screenshot",
                             os.path.join(tmp, "shot.png")], args.repeat)
    baseline = best_time([sys.executable, "-c", "import training.loop"], args.repeat)
    print(f"monitor: start, window, run read, first frame, exit   {first:6.2f} s")
    print(f"monitor --screenshot (10 frames + PNG)               {monitor:6.2f} s")
    print(f"baseline: import training.loop (torch + model)       {baseline:6.2f} s")
    print(f"ratio first frame / baseline: {first / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
