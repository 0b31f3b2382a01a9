"""The package version, in a module that imports nothing (``trainwarden --version`` reads it)."""

__version__ = "0.1.0"
