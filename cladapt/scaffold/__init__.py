"""``cladapt new-plugin NAME``: a ready-to-install third-party plugin package (jinja2 templates).

The generated package registers one strategy and one embedded stream through the entry-point
group ``cladapt``, has a test that runs them with ``cladapt run``, and a README; see
docs/writing-a-plugin.md for the walk-through.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from cladapt.errors import ConfigError

FILES = {
    "pyproject.toml.j2": "pyproject.toml",
    "README.md.j2": "README.md",
    "plugin.py.j2": "src/{package}/__init__.py",
    "test_plugin.py.j2": "tests/test_{package}.py",
}


def names(name: str) -> dict[str, str]:
    """Distribution, package, strategy and stream names derived from ``name``."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise ConfigError(
            f"plugin name {name!r}: use letters, digits, '-' or '_', starting with a letter"
        )
    base = name.lower().removeprefix("cladapt-plugin-").removeprefix("cladapt-")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", base) or base.endswith(("-", "_")):
        raise ConfigError(
            f"plugin name {name!r}: after the 'cladapt-' prefix it needs a name of its own that "
            "starts and ends with a letter or digit, e.g. cladapt-tent-lite"
        )
    package = "cladapt_" + base.replace("-", "_")
    if keyword.iskeyword(package):
        raise ConfigError(f"plugin name {name!r} gives a Python keyword as package name")
    return {
        "dist": f"cladapt-{base}",
        "package": package,
        "entry": base.replace("-", "_"),
        "strategy": f"{base}-finetune",
        "stream": f"{base}-digits",
    }


def new_plugin(name: str, parent: Path) -> Path:
    """Write the package into ``parent / cladapt-<name>``; returns its directory."""
    import jinja2

    ctx = names(name)
    root = parent / ctx["dist"]
    if root.exists():
        raise ConfigError(f"{root} already exists; choose another name or directory")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cladapt.scaffold", "templates"),
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    for template, target in FILES.items():
        path = root / target.format(**ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(**ctx), encoding="utf-8")
    return root
