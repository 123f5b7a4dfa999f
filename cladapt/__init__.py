"""cladapt: one plugin API for continual learning, domain adaptation and test-time adaptation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cladapt")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
