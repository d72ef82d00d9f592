"""Hybrid DR shared library: wire contracts, repository format, adapters, config, logging."""

__version__ = "0.1.0"
