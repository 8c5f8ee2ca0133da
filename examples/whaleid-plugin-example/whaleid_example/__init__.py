"""whaleid-plugin-example: registers its components with whaleid's hooks (group ``whaleid``)."""

from core.hookspecs import hookimpl

from whaleid_example.losses import build_normface
from whaleid_example.necks import build_mean_max
from whaleid_example.rerank import build_alpha_qe

WHALEID_REQUIRES = ["torch", "numpy"]  # what inference imports (the distribution says the same)


@hookimpl
def register_necks(register):
    register("mean_max", build_mean_max)


@hookimpl
def register_losses(register):
    register("normface", build_normface)


@hookimpl
def register_postprocess(register):
    register("alpha_qe", build_alpha_qe)
