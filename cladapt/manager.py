"""Plugin managers.

The *catalog* manager loads every plugin module and collects registrations: built-ins
(``BUILTIN_PLUGINS``), third-party packages from the entry-point group ``cladapt``, and modules
named with ``--plugin``. Built-ins go through exactly the same path as third-party plugins.

A *run* manager is made per run: it holds the default behaviour, observers and the strategy
instance, and dispatches the run-event hooks.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import sys
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pluggy

from cladapt import hookspecs
from cladapt.errors import CladaptError, PluginWarning, exception_text
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


def plugin_release(origin: str) -> dict[str, str]:
    """Which release of a plugin registered an entry (``origin``: an entry point's or a
    module's name): {"plugin", "package", "version"}; a module passed with ``--plugin`` that
    no installed distribution holds is identified by its file's SHA-256 instead; {} for the
    built-ins (the row's ``cladapt_version`` says)."""
    import hashlib
    import importlib.metadata as md

    if not origin or origin in BUILTIN_PLUGINS:
        return {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == origin and ep.dist is not None:
            return {"plugin": origin, "package": ep.dist.name, "version": ep.dist.version}
    top = origin.split(".")[0]
    dists = md.packages_distributions().get(top, [])
    if dists:
        return {"plugin": origin, "package": dists[0], "version": md.version(dists[0])}
    module = sys.modules.get(origin)
    path = getattr(module, "__file__", None)
    if path and Path(path).is_file():
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        return {"plugin": origin, "package": Path(path).name, "version": f"sha256:{digest}"}
    return {"plugin": origin}


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _import(module: str, what: str):
    """Import a plugin module by name; a ``--plugin`` may also be a ``.py`` file's path or a
    module in the current folder (as ``python -m`` finds one)."""
    name, folder = module, None
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module).expanduser()
        if not path.is_file():
            raise CladaptError(f"cannot import {what} {module!r}: no such file")
        name, folder = path.stem, str(path.resolve().parent)
    elif what.startswith("--plugin"):
        folder = str(Path.cwd())
    try:
        with _own_argv():
            if folder is not None and folder not in sys.path:
                sys.path.insert(0, folder)
            return importlib.import_module(name)
    except ImportError as exc:
        raise CladaptError(f"cannot import {what} {module!r}: {exc}") from None
    except (SystemExit, KeyboardInterrupt) as exc:
        why = "called sys.exit" if isinstance(exc, SystemExit) else "was interrupted"
        raise CladaptError(f"{what} {module!r} {why} while being imported") from None


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _skipped(name: str, why: str) -> None:
    warnings.warn(f"plugin {name!r} skipped: {why}", PluginWarning, stacklevel=3)


@contextmanager
def _own_argv():
    """A plugin imported while cladapt runs sees no command line: a module that parses
    ``sys.argv`` at import (argparse in a script turned plugin) must not read cladapt's."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def _load_entry_point(ep: importlib.metadata.EntryPoint):
    """The entry point's plugin, or None (named in a warning) when importing it fails, exits or
    is interrupted: one broken third-party package never takes cladapt's commands down."""
    try:
        with _own_argv():
            return ep.load()
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        what = (
            f"it called sys.exit({exc.code!r}) while being imported"
            if isinstance(exc, SystemExit)
            else "its import was interrupted"
            if isinstance(exc, KeyboardInterrupt)
            else f"its import failed ({type(exc).__name__}: {exception_text(exc)})"
        )
        _skipped(ep.name, f"{what} ({ep.value})")
        return None


def load_catalog(extra_modules: Iterable[str] = (), entry_points: bool = True) -> Catalog:
    pm = _new_manager()
    for name in BUILTIN_PLUGINS:
        pm.register(_import(name, "built-in plugin"), name=name)
    if entry_points:
        for ep in _entry_points():
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            plugin = _load_entry_point(ep)
            if plugin is None:
                continue
            if pm.is_registered(plugin):  # also named with --plugin, or a second entry point
                continue
            pm.register(plugin, name=ep.name)
    for module in extra_modules:
        if pm.get_plugin(module) is None:
            plugin = _import(module, "--plugin module")
            if not pm.is_registered(plugin):
                pm.register(plugin, name=module)
    for name, plugin in pm.list_name_plugin():
        if name not in BUILTIN_PLUGINS:
            for hook, close in unknown_hooks(plugin):
                hint = f" (did you mean {close}?)" if close else ""
                warnings.warn(
                    f"plugin {name!r}: {hook} is marked as a cladapt hook but no cladapt hook "
                    f"has that name{hint}; it is never called",
                    PluginWarning,
                    stacklevel=2,
                )

    catalog = Catalog(StrategyRegistry(), StreamRegistry(), ModelRegistry(), [])
    registries = (
        ("cladapt_register_models", catalog.models),
        ("cladapt_register_strategies", catalog.strategies),
        ("cladapt_register_streams", catalog.streams),
    )
    broken: set[str] = set()
    for hook_name, registry in registries:
        # call implementations one by one so each registration records which plugin made it
        for impl in getattr(pm.hook, hook_name).get_hookimpls():  # registration order
            if impl.plugin_name in broken:
                continue
            registry.origin = impl.plugin_name
            try:
                impl.function(registry=registry)
            except CladaptError:  # a refused name, a name registered twice: said as it is
                raise
            except (Exception, SystemExit) as exc:
                if impl.plugin_name in BUILTIN_PLUGINS:
                    raise
                broken.add(impl.plugin_name)
                _skipped(
                    impl.plugin_name,
                    f"{hook_name} raised {type(exc).__name__}: {exception_text(exc)}",
                )
    for _, registry in registries:  # a plugin that failed half-way leaves nothing behind
        registry.forget(broken)
    catalog.plugin_names = [name for name, _ in pm.list_name_plugin() if name not in broken]
    return catalog


def unknown_hooks(obj: object) -> list[tuple[str, str]]:
    """(name, closest hook name or '') of each method or function of ``obj`` marked with
    ``@hookimpl`` whose name is no cladapt hook (e.g. a misspelt ``cladapt_adpat``): pluggy
    registers such an implementation and never calls it."""
    specs = [n for n in dir(hookspecs) if n.startswith("cladapt_")]
    marker = f"{hookspecs.PROJECT}_impl"
    out = []
    for name in dir(obj):
        try:
            attr = getattr(obj, name, None)
        except Exception:  # noqa: BLE001 - a property that raises is no hook
            continue
        options = getattr(attr, marker, None)
        if options is None or name in specs or options.get("optionalhook"):
            continue
        close = difflib.get_close_matches(name, specs, n=1)
        out.append((name, close[0] if close else ""))
    return out


def run_manager(*plugins: object) -> pluggy.PluginManager:
    """A fresh manager for one run; later plugins are called first (pluggy's LIFO order)."""
    pm = _new_manager()
    for plugin in plugins:
        pm.register(plugin)
    return pm
