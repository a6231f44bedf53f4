"""Imports every model module, so Base.metadata knows the whole schema (Alembic, tests)."""

import importlib

from portal.accounts import models as _accounts  # noqa: F401

for _feature in ("machines", "terminal", "community", "audit", "files"):
    try:
        importlib.import_module(f"portal.{_feature}.models")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"portal.{_feature}", f"portal.{_feature}.models"):
            raise
