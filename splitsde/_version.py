"""The package version: the one source read by the build (pyproject.toml), the public
``splitsde.__version__`` and ``splitsde --version``."""

__version__ = "0.1.0"
