"""The repository contract (server.fhir.repository.FhirRepository) is typed and SqlRepository keeps it.

No static type checker runs in CI, so this test compares the signatures themselves: every
method of the Protocol exists on SqlRepository with the same parameters and annotations, the
Protocol's annotations name real types and none of them is `Any`.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import pytest

from server.fhir import repository as contract
from server.fhir.operations.export import ExportRequest
from server.fhir.search.indexer import IndexRows
from server.fhir.search.query import Match
from server.fhir.search.query import SearchQuery
from server.fhir.search.query import SearchResult
from server.store.repository import SqlRepository

METHODS = sorted(
    name
    for name, value in vars(contract.FhirRepository).items()
    if inspect.isfunction(value) and not name.startswith("_")
)
# The names the contract imports only for type checking.
NAMES = {
    **vars(contract),
    "ExportRequest": ExportRequest,
    "IndexRows": IndexRows,
    "Match": Match,
    "SearchQuery": SearchQuery,
    "SearchResult": SearchResult,
}


def _signature(cls: type, name: str) -> inspect.Signature:
    return inspect.signature(getattr(cls, name))


def test_the_contract_has_the_methods_the_fhir_layer_calls() -> None:
    assert {"search", "conditional_create", "read_resource", "update_resource", "transaction"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_sql_repository_has_the_contracts_signature(name: str) -> None:
    want = _signature(contract.FhirRepository, name)
    have = _signature(SqlRepository, name)
    assert list(have.parameters.values()) == list(want.parameters.values())
    if name != "transaction":  # a @contextmanager generator: Iterator[None] makes the context manager
        assert have.return_annotation == want.return_annotation


@pytest.mark.parametrize("name", METHODS)
def test_the_contract_names_real_types_and_never_any(name: str) -> None:
    hints = typing.get_type_hints(getattr(contract.FhirRepository, name), globalns=NAMES)
    assert "return" in hints
    for where, hint in hints.items():
        assert hint is not Any and not re.search(r"\bAny\b", repr(hint)), f"{name} {where}: {hint!r}"


def test_conditional_create_is_its_own_method_and_search_only_searches() -> None:
    hints = typing.get_type_hints(contract.FhirRepository.search, globalns=NAMES)
    assert hints == {"query": SearchQuery, "return": SearchResult}
    created = typing.get_type_hints(contract.FhirRepository.conditional_create, globalns=NAMES)
    assert created["op"] is contract.ConditionalCreate
    fields = typing.get_type_hints(contract.ConditionalCreate, globalns=NAMES)
    assert fields["query"] is SearchQuery and fields["write"] is contract.WriteRequest
