"""The plugin manager: built-in plugins, modules named in the config, and installed entry points.

``build_registries(extra_modules)`` returns one ``Registry`` per hook point. A registry maps a
component name to its factory and remembers which plugin registered it, so an unknown name fails
with the list of known names and their providers.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from core import hookspecs
from core.config import did_you_mean

BUILTIN_PLUGINS = (
    "plugins.datasets.belugas",
    "plugins.backbones.timm_backbone",
    "plugins.necks.gem_bn",
    "plugins.losses.arcface_focal",
    "plugins.postprocess.knn",
    "plugins.postprocess.expand",
)

_HOOK_NAMES = {
    "dataset": "register_datasets",
    "backbone": "register_backbones",
    "neck": "register_necks",
    "loss": "register_losses",
    "postprocess": "register_postprocess",
}


class PluginError(ValueError):
    """A plugin could not be loaded, or a component name or option is unknown."""


@dataclass
class Registry:
    """Name -> factory for one hook point, with the plugin that provided each name."""

    hook_point: str
    factories: dict[str, Callable[..., Any]] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, factory: Callable[..., Any], provider: str) -> None:
        if name in self.factories:
            raise PluginError(
                f"{self.hook_point} '{name}' is registered twice: by {self.providers[name]} and by {provider}"
            )
        self.factories[name] = factory
        self.providers[name] = provider

    def known(self) -> str:
        return ", ".join(f"{n} (from {self.providers[n]})" for n in sorted(self.factories)) or "none"

    def factory(self, name: str) -> Callable[..., Any]:
        if name not in self.factories:
            raise PluginError(
                f"unknown {self.hook_point} '{name}'.{did_you_mean(name, self.factories)} "
                f"Known {self.hook_point} names: {self.known()}. "
                f"A plugin module can be added to the config's `plugins:` list."
            )
        return self.factories[name]

    def build(self, spec: dict, **fixed: Any) -> Any:
        """Call the factory named by ``spec['name']`` with the other keys of ``spec`` plus ``fixed``.

        Options the factory does not accept fail here with the accepted names, not deep inside.
        """
        spec = dict(spec)
        if "name" not in spec:
            raise PluginError(f"the {self.hook_point} entry needs a 'name' (known: {self.known()})")
        name = spec.pop("name")
        factory = self.factory(name)
        check_options(factory, spec, f"{self.hook_point} '{name}'")
        return factory(**fixed, **spec)


def check_options(factory: Callable[..., Any], options: dict, what: str) -> None:
    """Raise ``PluginError`` naming any option that ``factory`` does not accept."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            raise PluginError(f"{what} has no option '{key}'.{did_you_mean(key, accepted)} Its options: {', '.join(accepted)}")


def plugin_manager(extra_modules: Iterable[str] = (), builtins: Iterable[str] = BUILTIN_PLUGINS,
                   entry_points: bool = True) -> pluggy.PluginManager:
    """Plugin manager holding ``builtins``, ``extra_modules`` and (optionally) installed entry points
    in group ``whaleid``. A submission bundle passes only the modules it carries."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module_name in (*builtins, *extra_modules):
        if pm.has_plugin(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin module '{module_name}': {exc}") from exc
        pm.register(module, name=module_name)
    if entry_points:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def build_registries(extra_modules: Iterable[str] = (), builtins: Iterable[str] = BUILTIN_PLUGINS,
                     entry_points: bool = True) -> dict[str, Registry]:
    """One ``Registry`` per hook point, filled by every plugin's registration hooks."""
    pm = plugin_manager(extra_modules, builtins, entry_points)
    registries = {point: Registry(point) for point in hookspecs.HOOK_POINTS}
    for point, hook_name in _HOOK_NAMES.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            provider = pm.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=lambda n, f, _p=provider, _r=registries[point]: _r.add(n, f, _p))
    return registries
