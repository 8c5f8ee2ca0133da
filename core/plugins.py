"""The plugin manager: built-in plugins, modules named in the config, and installed entry points.

``build_registries(extra_modules)`` returns one ``Registry`` per hook point. A registry maps a
component name to its factory and remembers which plugin registered it (its importable module, and
where it came from: built-in, config or an entry point), so an unknown name fails with the list of
known names and their providers, and ``submission.build`` can bundle the module that was used.

Every plugin is registered under its module's name, whether it came from ``plugins:`` or from an
entry point in group ``whaleid`` (whose name may differ from the module's): a plugin both installed
and listed in the config is registered once. A plugin that fails to import names itself and the
cause; ``plugins_exclude: [name]`` (entry point or module name) leaves an installed one out.

``python -m core.plugins [--config X.yaml]`` lists every component per hook point with its provider,
its source and its factory's options with their defaults.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from core import hookspecs
from core.config import did_you_mean

BUILTIN_PACKAGE = "plugins"  # every module under it that implements a hook is a built-in plugin


@functools.lru_cache(maxsize=None)
def builtin_plugins(package: str = BUILTIN_PACKAGE) -> tuple[str, ...]:
    """Modules of ``package`` (recursively) that implement at least one whaleid hook, sorted: a new built-in
    is one file. Helper modules without hooks (``plugins.necks.pooling``) are left out. Walked once per process:
    every registry build (each run, each bundle check) asks for it."""
    import pkgutil

    root = importlib.import_module(package)
    found = []
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.ispkg:
            continue
        module = importlib.import_module(info.name)
        if any(getattr(getattr(module, name, None), f"{hookspecs.PROJECT}_impl", None) is not None
               for name in hookspecs.HOOKS.values()):
            found.append(info.name)
    return tuple(sorted(found))


class PluginError(ValueError):
    """A plugin could not be loaded, or a component name or option is unknown."""


@dataclass
class Registry:
    """Name -> factory for one hook point, with the plugin that provided each name."""

    hook_point: str
    factories: dict[str, Callable[..., Any]] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)  # name -> importable module of the plugin
    sources: dict[str, str] = field(default_factory=dict)  # name -> built-in | config | entry point ...

    def add(self, name: str, factory: Callable[..., Any], provider: str, source: str = "") -> None:
        if name in self.factories:
            raise PluginError(
                f"{self.hook_point} '{name}' is registered twice: by {self.providers[name]} "
                f"({self.sources.get(name) or 'unknown source'}) and by {provider} ({source or 'unknown source'}); "
                "rename one, or leave one plugin out with plugins_exclude"
            )
        self.factories[name] = factory
        self.providers[name] = provider
        self.sources[name] = source

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

    def build(self, spec: dict, optional: dict | None = None, **fixed: Any) -> Any:
        """Call the factory named by ``spec['name']`` with the other keys of ``spec`` plus ``fixed``, and
        each of ``optional`` (e.g. a loss's ``class_counts``) only if the factory names it as a parameter.

        Options the factory does not accept fail here with the accepted names, not deep inside.
        """
        spec = dict(spec)
        if "name" not in spec:
            raise PluginError(f"the {self.hook_point} entry needs a 'name' (known: {self.known()})")
        name = spec.pop("name")
        factory = self.factory(name)
        check_options(factory, spec, f"{self.hook_point} '{name}'")
        params = inspect.signature(factory).parameters
        extra = {k: v for k, v in (optional or {}).items() if k in params and k not in spec}
        return factory(**fixed, **extra, **spec)


def check_options(factory: Callable[..., Any], options: dict, what: str) -> None:
    """Raise ``PluginError`` naming any option that ``factory`` does not accept."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            raise PluginError(f"{what} has no option '{key}'.{did_you_mean(key, accepted)} Its options: {', '.join(accepted)}")


def installed_entry_points():
    """Entry points in group ``whaleid`` of every installed distribution, in a stable order."""
    from importlib import metadata

    eps = metadata.entry_points()
    group = eps.select(group=hookspecs.PROJECT) if hasattr(eps, "select") else eps.get(hookspecs.PROJECT, [])
    return sorted(group, key=lambda ep: (ep.name, ep.value))


def _module_of(obj) -> str:
    return obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or repr(obj)


def plugin_manager(extra_modules: Iterable[str] = (), builtins: Iterable[str] | None = None,
                   entry_points: bool = True, exclude: Iterable[str] = ()) -> pluggy.PluginManager:
    """Plugin manager holding ``builtins``, ``extra_modules`` and (optionally) installed entry points
    in group ``whaleid``, each registered once under its module's name; ``exclude`` names entry points or
    modules to leave out. ``pm.whaleid_sources`` maps each registered name to where it came from.
    A submission bundle passes only the modules it carries."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    exclude = set(exclude)
    sources: dict[str, str] = {}
    builtins = builtin_plugins() if builtins is None else tuple(builtins)
    for module_name in (*builtins, *extra_modules):
        if module_name in exclude or pm.has_plugin(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # an import error inside the plugin, not only a missing module
            raise PluginError(f"cannot import plugin module '{module_name}': {type(exc).__name__}: {exc}") from exc
        if pm.is_registered(module):
            continue
        pm.register(module, name=module_name)
        sources[module_name] = "built-in" if module_name in builtins else "config"
    if entry_points:
        for ep in installed_entry_points():
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown distribution"
            if ep.name in exclude:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"cannot load the installed plugin '{ep.name}' ({ep.value}, from {dist}): {type(exc).__name__}: "
                    f"{exc}. Fix or uninstall it, or leave it out with plugins_exclude: [{ep.name}]") from exc
            name = _module_of(obj)
            if name in exclude or pm.is_registered(obj) or pm.has_plugin(name):
                if name in sources and sources[name] == "config":
                    sources[name] = f"config and entry point '{ep.name}' ({dist})"
                continue
            pm.register(obj, name=name)
            sources[name] = f"entry point '{ep.name}' ({dist})"
    pm.whaleid_sources = sources
    return pm


def build_registries(extra_modules: Iterable[str] = (), builtins: Iterable[str] | None = None,
                     entry_points: bool = True, exclude: Iterable[str] = ()) -> dict[str, Registry]:
    """One ``Registry`` per hook point, filled by every plugin's registration hooks."""
    pm = plugin_manager(extra_modules, builtins, entry_points, exclude)
    registries = {point: Registry(point) for point in hookspecs.HOOK_POINTS}
    for point, hook_name in hookspecs.HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            provider = pm.get_name(impl.plugin) or repr(impl.plugin)
            source = pm.whaleid_sources.get(provider, "")
            try:
                impl.function(register=lambda n, f, _p=provider, _s=source, _r=registries[point]: _r.add(n, f, _p, _s))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"plugin {provider} ({source}) failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    return registries


def factory_options(factory: Callable[..., Any], fixed: Iterable[str] = ()) -> list[str]:
    """``name=default`` (or ``name`` when required) for each option a factory takes, less the ``fixed`` ones."""
    out = []
    for name, p in inspect.signature(factory).parameters.items():
        if name in fixed or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        out.append(name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}")
    return out


# what the runner passes to each hook point's factories itself (not config options)
FIXED_ARGUMENTS = {"dataset": ("root", "image_size"), "neck": ("in_features", "feature_channels"),
                   "loss": ("embedding_size", "num_classes", "class_counts")}


def listing(registries: dict[str, Registry]) -> str:
    lines = []
    for point in hookspecs.HOOK_POINTS:
        reg = registries[point]
        lines.append(f"{point}:")
        for name in sorted(reg.factories):
            opts = ", ".join(factory_options(reg.factories[name], FIXED_ARGUMENTS.get(point, ()))) or "no options"
            lines.append(f"  {name:<16} {reg.providers[name]}  [{reg.sources.get(name) or 'unknown'}]")
            lines.append(f"  {'':<16} options: {opts}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.plugins",
                                description="List every registered component per hook point: its name, the module "
                                            "providing it, where that came from (built-in, config, entry point) "
                                            "and the factory's options with their defaults.")
    p.add_argument("--config", help="also load the plugins this config names (and honour its plugins_exclude)")
    p.add_argument("--no-entry-points", action="store_true", help="leave installed entry points out")
    args = p.parse_args(argv)
    extra, exclude = [], []
    if args.config:
        from core.config import load_config

        cfg = load_config(args.config)
        extra, exclude = list(cfg.plugins), list(cfg.plugins_exclude)
    try:
        print(listing(build_registries(extra, entry_points=not args.no_entry_points, exclude=exclude)))
    except PluginError as exc:
        p.exit(2, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
