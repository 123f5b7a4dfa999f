"""Plugin managers.

The *catalog* manager loads every plugin module and collects registrations: built-ins
(``BUILTIN_PLUGINS``), third-party packages from the entry-point group ``cladapt``, and modules
named with ``--plugin``. Built-ins go through exactly the same path as third-party plugins.

A *run* manager is made per run: it holds the default behaviour, observers and the strategy
instance, and dispatches the run-event hooks.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass

import pluggy

from cladapt import hookspecs
from cladapt.errors import CladaptError
from cladapt.registry import ModelRegistry, StrategyRegistry, StreamRegistry

ENTRY_POINT_GROUP = "cladapt"
BUILTIN_PLUGINS = (
    "cladapt.plugins.models",
    "cladapt.plugins.baselines",
    "cladapt.plugins.clip_continual",
    "cladapt.plugins.uda",
    "cladapt.plugins.dann",
    "cladapt.plugins.continual",
    "cladapt.plugins.regularizers",
    "cladapt.plugins.tta",
    "cladapt.plugins.ecotta",
    "cladapt.plugins.vida",
    "cladapt.plugins.lame",
    "cladapt.plugins.eata",
    "cladapt.plugins.sar",
    "cladapt.plugins.rotta",
    "cladapt.plugins.avalanche_bridge",
    "cladapt.streams.builtin",
)


@dataclass
class Catalog:
    strategies: StrategyRegistry
    streams: StreamRegistry
    models: ModelRegistry
    plugin_names: list[str]


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _import(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CladaptError(f"cannot import {what} {module!r}: {exc}") from None


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def load_catalog(extra_modules: Iterable[str] = (), entry_points: bool = True) -> Catalog:
    pm = _new_manager()
    for name in BUILTIN_PLUGINS:
        pm.register(_import(name, "built-in plugin"), name=name)
    if entry_points:
        for ep in _entry_points():
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide behind a traceback
                raise CladaptError(
                    f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
                ) from None
            pm.register(plugin, name=ep.name)
    for module in extra_modules:
        if pm.get_plugin(module) is None:
            pm.register(_import(module, "--plugin module"), name=module)

    catalog = Catalog(StrategyRegistry(), StreamRegistry(), ModelRegistry(), [])
    for hook_name, registry in (
        ("cladapt_register_models", catalog.models),
        ("cladapt_register_strategies", catalog.strategies),
        ("cladapt_register_streams", catalog.streams),
    ):
        # call implementations one by one so each registration records which plugin made it
        for impl in getattr(pm.hook, hook_name).get_hookimpls():  # registration order
            registry.origin = impl.plugin_name
            impl.function(registry=registry)
    catalog.plugin_names = [name for name, _ in pm.list_name_plugin()]
    return catalog


def run_manager(*plugins: object) -> pluggy.PluginManager:
    """A fresh manager for one run; later plugins are called first (pluggy's LIFO order)."""
    pm = _new_manager()
    for plugin in plugins:
        pm.register(plugin)
    return pm
