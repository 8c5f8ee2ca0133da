"""Entry point of a whaleid submission, run by the competition runtime as ``python main.py``.

Reads ``/code_execution/data`` and writes ``/code_execution/submission/submission.csv``. For local
runs: ``python main.py --data DIR --out FILE`` or the variables WHALEID_DATA_ROOT / WHALEID_OUTPUT.
"""

import argparse
import os
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("WHALEID_DATA_ROOT", "/code_execution/data"), help="data root")
    p.add_argument("--out", default=os.environ.get("WHALEID_OUTPUT", "/code_execution/submission/submission.csv"),
                   help="where to write submission.csv")
    p.add_argument("--workers", type=int, default=None, help="image loading processes (default: cores - 1, at most 4)")
    args = p.parse_args(argv)
    from core.inference import run
    from core.logs import setup_logging

    setup_logging()

    stats = run(BUNDLE, Path(args.data), Path(args.out), args.workers)
    return 0 if stats["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
