"""Shape limits on parsed request bodies (server/api/body_shape.py): items per array, depth, items in all."""

from __future__ import annotations

import time

import orjson
import pytest

from server.api.body_shape import MAX_ARRAY_ITEMS
from server.api.body_shape import check_shape
from server.errors import PayloadTooLargeError
from server.errors import StructureError


def test_an_array_at_the_limit_passes_and_one_more_item_is_413_naming_it() -> None:
    names = [{"family": "Ng"}] * MAX_ARRAY_ITEMS
    check_shape({"resourceType": "Patient", "name": names})
    with pytest.raises(PayloadTooLargeError) as caught:
        check_shape({"resourceType": "Patient", "name": [*names, {"family": "Ng"}]})
    assert caught.value.status == 413 and caught.value.issue_code == "too-costly"
    assert caught.value.expression == ("Patient.name",)


def test_the_path_names_the_array_inside_a_bundle() -> None:
    big = {"resourceType": "Patient", "name": [{"given": ["a"] * 11}]}
    bundle = {
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "Patient"}}, {"resource": big}],
    }
    with pytest.raises(PayloadTooLargeError) as caught:
        check_shape(bundle, max_items=10)
    assert caught.value.expression == ("Bundle.entry[1].resource.name[0].given",)


def test_bundle_entry_is_left_to_the_bundle_entry_limit() -> None:
    entries = [{"request": {"method": "GET", "url": "Patient"}}] * 20
    check_shape({"resourceType": "Bundle", "entry": entries}, max_items=10)
    with pytest.raises(PayloadTooLargeError):  # only the Bundle's own entry is exempt
        check_shape({"resourceType": "Patient", "entry": entries}, max_items=10)


def test_depth_is_400_structure_with_the_path() -> None:
    check_shape({"resourceType": "Patient", "extension": [[[1]]]}, max_depth=5)
    with pytest.raises(StructureError) as caught:
        check_shape({"resourceType": "Patient", "extension": [[[[1]]]]}, max_depth=5)
    assert caught.value.status == 400 and caught.value.issue_code == "structure"
    assert caught.value.expression == ("Patient.extension[0][0][0]",)


def test_items_in_all_are_bounded() -> None:
    doc = {"resourceType": "Patient", "name": [{"given": ["a"] * 5}] * 5}
    check_shape(doc, max_total=40)
    with pytest.raises(PayloadTooLargeError) as caught:
        check_shape(doc, max_total=20)
    assert caught.value.status == 413


def test_150k_items_are_refused_without_walking_them() -> None:
    doc = orjson.loads(orjson.dumps({"resourceType": "Patient", "name": [{"family": "x"}] * 150_000}))
    start = time.process_time()
    with pytest.raises(PayloadTooLargeError):
        check_shape(doc)
    assert time.process_time() - start < 0.05  # the array's length is read, its items are not
