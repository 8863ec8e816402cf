"""Versions of installed packages: effkit's own, for saved models and manifests, and others'."""

from __future__ import annotations

import importlib.metadata


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def effkit_version() -> str:
    """effkit's installed version ("unknown" when run from a source tree without metadata)."""
    return package_version("effkit") or "unknown"
