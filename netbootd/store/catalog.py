"""The build catalog: which immutable builds exist and where each file of each build lives.

The records (``Build``, ``BuildCatalog``) live in ``core.model``, since the core decides on
them; this module keeps their names for the store's callers. Pure data (no I/O):
``store.builds`` fills the catalog from disk. A build's files are served by name only if the
manifest lists them (an allow-list: no client path is ever joined onto a directory).
``Build.path_of`` is the single place that maps a build file to its path.
"""

from __future__ import annotations

from netbootd.core.model import Build, BuildCatalog

__all__ = ["Build", "BuildCatalog"]
