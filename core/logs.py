"""One logging set-up for the runner and the submission's main.py."""

import logging

NOISY = ("faiss", "faiss.loader", "accelerate", "accelerate.checkpointing", "accelerate.accelerator")


def setup_logging(verbose: bool = True) -> None:
    """Timestamped INFO lines (WARNING when not ``verbose``, e.g. on non-main processes)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
