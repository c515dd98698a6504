"""The version check and label codec shared by the estimator file and the deployment archives."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from qnn_sklearn import __version__
from qnn_sklearn.file_format import (
    FormatError,
    check_format_version,
    labels_from_json,
    labels_to_json,
)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 3, 7]),
        np.array([-1, 1], dtype=np.int8),
        np.array([0.5, 2.0]),
        np.array([False, True]),
        np.array(["cat", "dog"]),
        np.array([b"no", b"yes"]),
        np.array(["a", "b"], dtype=object),
    ],
)
def test_labels_round_trip_with_their_dtype(labels):
    data = json.loads(json.dumps(labels_to_json(labels)))
    back = labels_from_json(data, "classes")
    assert back.dtype == labels.dtype
    np.testing.assert_array_equal(back, labels)


def test_the_older_spelling_of_object_labels_still_loads():
    """client.zip spelled an object dtype "object" before both formats shared this codec."""
    back = labels_from_json({"dtype": "object", "values": ["x", 1]}, "classes")
    assert back.dtype == object and back.tolist() == ["x", 1]


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([[1, 2]]), "1-D"),
        (np.array([None, "a"], dtype=object), "numbers, booleans and strings"),
        (np.array([1 + 2j]), "numbers, booleans and strings"),
    ],
)
def test_labels_json_cannot_carry_are_refused_when_saving(labels, match):
    with pytest.raises(FormatError, match=match):
        labels_to_json(labels)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"dtype": "|O", "values": [["nested"]]}, "list of numbers"),
        ({"dtype": "<i8", "values": {"a": 1}}, "list of numbers"),
        ("labels", "list of numbers"),
        ({"dtype": "<c16", "values": [1]}, "not something qnn_sklearn saves"),
        ({"dtype": "<i8", "values": ["a"]}, "do not fit"),
        ({"dtype": "<U999999999", "values": ["a", "b"]}, "take more than"),
    ],
)
def test_labels_are_checked_when_loading(data, match):
    with pytest.raises(ValueError, match=f"classes.*{match}|{match}"):
        labels_from_json(data, "classes")


@pytest.mark.parametrize("found", [2, 0, "1", True, None])
def test_another_format_version_is_refused_naming_it(found):
    with pytest.raises(
        FormatError, match=rf"version {re.escape(repr(found))} .*0\.0\.9.*reads format"
    ):
        check_format_version(found, 1, "model.qnn", written_by="0.0.9")
    check_format_version(1, 1, "model.qnn")
    assert __version__ in str(pytest.raises(FormatError, check_format_version, 2, 1, "f").value)
