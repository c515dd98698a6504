"""How a saved estimator names a class or function: the import path ``"module:qualname"``.

Writing a file (``dump``) turns classes into paths and checks that each path imports back to the
same object; reading one (``load``) never imports a path from the file, only the paths its
caller names in ``trusted`` (:mod:`.trusted_types`).
"""

from __future__ import annotations

import importlib


def import_path(obj) -> str:
    """``"module:qualname"`` of a class or function: how a saved estimator names it."""
    return f"{obj.__module__}:{obj.__qualname__}"


def import_object(path: str):
    """Import ``"module:qualname"``: only for paths the user chose (``trusted``, ``dump``)."""
    module_name, _, qualname = path.partition(":")
    if not module_name or not qualname:
        raise ValueError(f"{path!r} is not an import path 'module:qualname'.")
    try:
        obj = importlib.import_module(module_name)
        for attribute in qualname.split("."):
            obj = getattr(obj, attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{path!r} cannot be imported ({error}).") from None
    return obj


def importable_path(obj, where: str) -> str:
    """``"module:qualname"`` of ``obj``, checked to import back to the very same object."""
    path = import_path(obj)
    try:
        found = import_object(path)
    except ValueError:
        found = None
    if found is not obj:
        raise ValueError(
            f"Cannot dump {where} = {obj!r}: importing {path!r} does not give it back "
            "(defined inside a function, or redefined since). Define it at the top level of "
            "a module."
        )
    return path
