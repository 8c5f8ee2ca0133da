"""Run core/run.py with a crash injected at the n-th file-system step (fault-injection helper for tests).

    python tests/core/faulty_run.py N COUNT_FILE core/run.py args...

Every call of ``os.replace``, ``shutil.rmtree`` and safetensors' ``save_file`` counts as a step. At step N
the process ends at once with ``os._exit(137)``, as SIGKILL would: no handler, no cleanup. N = 0 never
crashes; the number of steps taken is written to COUNT_FILE at exit.
"""

import os
import runpy
import shutil
import sys

import safetensors.torch

crash_at, count_file = int(sys.argv[1]), sys.argv[2]
calls = [0]


def hooked(fn):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == crash_at:
            os._exit(137)
        return fn(*args, **kwargs)
    return wrapper


os.replace = hooked(os.replace)
shutil.rmtree = hooked(shutil.rmtree)
safetensors.torch.save_file = hooked(safetensors.torch.save_file)
sys.argv = sys.argv[3:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    with open(count_file, "w") as fh:
        fh.write(str(calls[0]))
