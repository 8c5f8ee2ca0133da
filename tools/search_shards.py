"""Exact top-k search with the database sharded across processes (or machines): each searches its own shard,
the per-shard top-k lists are gathered over torch.distributed (through accelerate, as training is) and merged.

    accelerate launch --multi_gpu --num_processes 2 -m tools.search_shards \\
        --queries q.npy --database db.npy --k 20 --out topk.npz

(on a CPU machine ``--multi_gpu`` is what makes accelerate start two processes; across machines, accelerate's
``--num_machines``/``--machine_rank``/``--main_process_ip`` as for training). Each process memory-maps the
database file and reads only its rows: process r of P holds rows [r N / P, (r + 1) N / P); with
``--database`` naming a folder of ``shard<r>.npy`` files, process r reads its own file, the layout for
machines that each hold part of a catalogue. The output (rank 0): ``values`` [Q, k], ``positions`` [Q, k]
(global row numbers), identical to a single-process ``core.search.exact_topk``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def shard_of(database: Path, rank: int, world: int):
    """(rows of this process's shard, the global row number of its first row)."""
    if database.is_dir():
        sizes = [np.load(database / f"shard{r}.npy", mmap_mode="r").shape[0] for r in range(world)]
        return np.load(database / f"shard{rank}.npy", mmap_mode="r"), int(sum(sizes[:rank]))
    full = np.load(database, mmap_mode="r")
    start, stop = rank * len(full) // world, (rank + 1) * len(full) // world
    return full[start:stop], start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=Path, required=True, help=".npy of float32 [Q, D] unit rows")
    p.add_argument("--database", type=Path, required=True, help=".npy of [N, D] rows, or a folder of shard<r>.npy")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--budget-mb", type=float, default=None, help="score block per process (default: a tenth of free memory)")
    p.add_argument("--out", type=Path, required=True, help=".npz written by rank 0: values, positions")
    args = p.parse_args(argv)

    import torch
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from core.search import exact_topk, merge_topk

    acc = Accelerator(cpu=not torch.cuda.is_available())
    started = time.time()
    queries = np.load(args.queries)
    shard, offset = shard_of(args.database, acc.process_index, acc.num_processes)
    budget = int(args.budget_mb * (1 << 20)) if args.budget_mb else None
    values, positions = exact_topk(queries, shard, args.k, budget=budget)
    positions = np.where(positions >= 0, positions + offset, -1)
    parts = gather_object([(values, positions)])  # every process's (values, positions), in rank order
    if acc.is_main_process:
        values, positions = merge_topk(parts, args.k)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.out, values=values, positions=positions)
        print(f"{len(queries)} queries against {acc.num_processes} shards: top-{args.k} in {time.time() - started:.1f} s "
              f"-> {args.out}", flush=True)
    acc.wait_for_everyone()
    # the process group torn down before exit, as core/run.py does: left to the interpreter's exit, gloo's
    # threads aborted rank 0 after its work was written (SIGABRT, once in make test)
    acc.end_training()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
