"""What the package's two file formats share: the format version check and the label codec.

The estimator file (``dump`` in :mod:`qnn_sklearn.sklearn.saving`, ``load`` in
:mod:`qnn_sklearn.sklearn.persistence`) and the deployment archives (``client.zip`` /
``server.zip``, :mod:`qnn_sklearn.deployment.artifacts`) both carry a format version and a
classifier's labels as JSON. Both read them here, so that a label type one of them can carry
is carried by the other, and so that both refuse a file of another version with the same
message, naming the version. This module lives at the top level, beside
:mod:`qnn_sklearn.safe_zip`, because neither of the two packages may import the other.
"""

from __future__ import annotations

import numpy as np

from . import __version__, safe_zip

LABEL_DTYPE_KINDS = "biufUSO"
"""numpy dtype kinds whose labels a JSON list holds exactly: bool, int, float, str, bytes (as
ASCII text) and object arrays of those."""

_OBJECT_DTYPES = ("|O", "object")
"""How a file names an object dtype: numpy's ``dtype.str``, or "object" (client.zip before the
two formats shared this codec)."""

_LABEL_TYPES = (str, int, float, bool)


class FormatError(ValueError):
    """A file of another format version, or labels that the format cannot carry."""


def check_format_version(found, supported: int, what: str, written_by=None) -> None:
    """Refuse a file whose format version is not ``supported``, naming both versions.

    Parameters
    ----------
    found
        The version the file declares (anything: the file is not trusted).
    supported : int
        The version this qnn_sklearn reads.
    what : str
        How the message names the file.
    written_by : str, optional
        The qnn_sklearn version the file says wrote it.
    """
    if type(found) is int and found == supported:
        return
    writer = "" if written_by is None else f" (written by qnn_sklearn {str(written_by)[:40]})"
    raise FormatError(
        f"{what} has format version {repr(found)[:40]}{writer}; qnn_sklearn {__version__} "
        f"reads format version {supported}. Load it with the qnn_sklearn version that wrote it, "
        "or save it again with this one."
    )


def labels_to_json(classes) -> dict:
    """Class labels as ``{"dtype": numpy dtype string, "values": list}``.

    ``FormatError`` for labels JSON cannot carry exactly (only numbers, booleans and strings),
    so that nothing is written that would load back as something else.
    """
    classes = np.asarray(classes)
    kind = classes.dtype.kind
    if classes.ndim != 1:
        raise FormatError(f"Class labels must be 1-D, got shape {classes.shape}.")
    values = classes.tolist()
    if kind == "S":
        values = [value.decode("ascii") for value in values]
    if kind not in LABEL_DTYPE_KINDS or not all(isinstance(v, _LABEL_TYPES) for v in values):
        raise FormatError(
            f"Cannot save class labels of dtype {classes.dtype} ({values[:3]}...): only "
            "numbers, booleans and strings are saved. Fit on labels of one of those types."
        )
    return {"dtype": classes.dtype.str, "values": values}


def labels_from_json(data, where: str) -> np.ndarray:
    """Inverse of :func:`labels_to_json`; the declared dtype is bounded before allocation.

    ``ValueError`` (``FormatError`` or ``safe_zip.UnsafeArchiveError``) naming ``where`` for
    anything :func:`labels_to_json` does not write.
    """
    values = data.get("values") if isinstance(data, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, _LABEL_TYPES) for v in values):
        raise FormatError(f"{where} must hold a list of numbers, booleans or strings.")
    declared = data.get("dtype")
    if declared in _OBJECT_DTYPES:
        return np.asarray(values, dtype=object)
    dtype = safe_zip.declared_dtype(declared, len(values), f"{where}.dtype")
    if dtype.kind not in LABEL_DTYPE_KINDS:
        raise FormatError(f"{where}: labels of dtype {dtype} are not something qnn_sklearn saves.")
    try:
        if dtype.kind == "S":
            values = [value.encode("ascii") for value in values]
        return np.asarray(values, dtype=dtype)
    except (AttributeError, TypeError, ValueError, OverflowError) as error:
        raise FormatError(f"{where}: the values do not fit {dtype} ({error}).") from None
