"""Measurement rigs, apart from the user tools in ``tools/``: each prints its ratios side by side in one run.

- ``quality``: a config against bare training loops (from scratch and from the same ImageNet weights) on
  survey variants, test mAP over seeds (``python -m tools.bench.quality``).
- ``bare_loop``: the bare loop those rows come from.
- ``ablate``: the winners' toolbox, one technique at a time, over seeds against a baseline config.
- ``ablate_cpu_recipe.sh``: the ablation behind the from-scratch CPU recipe.
- ``train_step``: whaleid's training step against a bare timm + torch loop, images/s.
- ``inference``: the bundle's inference against the seed's and the competition's loaders.
- ``gpu_check``: every seed and winners' recipe on a lent GPU in one command.
- ``common``: what the rigs share (launching the runner on the machine's cores).
"""
