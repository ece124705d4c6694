"""A parsed search: what to match, how to sort, page, include and summarise.

https://hl7.org/fhir/R4B/search.html

server.fhir.search.params builds these from request parameters; server.store.searching
compiles them into SQL. They carry no SQL and no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from decimal import Decimal
from typing import Any

# -- values of one parameter (comma-separated values are OR'ed) ----------------------------


@dataclass(frozen=True, slots=True)
class TokenValue:
    """system|code, code, system| or |code (system "" means: no system)."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TextValue:
    """A string to match: token :text, string, :exact, :contains."""

    text: str


@dataclass(frozen=True, slots=True)
class RangeValue:
    """A date or number with a prefix: the value's implicit range [low, high)."""

    prefix: str
    low: Any  # datetime or Decimal
    high: Any
    value: Any = None  # the number as written (numbers only)


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """[prefix]number|system|code, with the UCUM canonical range when the unit converts."""

    prefix: str
    value: Decimal
    low: Decimal
    high: Decimal
    system: str | None
    code: str | None
    canon_code: str | None = None
    canon_low: float | None = None
    canon_high: float | None = None
    canon_value: float | None = None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """Type/id, id, or an absolute URL that is not on this server."""

    type: str | None
    id: str | None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class UriValue:
    """A URI (with :below / :above handled by the test's modifier)."""

    uri: str


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """One value per component, in the order of the composite's components."""

    parts: tuple[tuple[str, str, Value], ...]  # (component type, component code, value)


Value = TokenValue | TextValue | RangeValue | QuantityValue | ReferenceValue | UriValue | CompositeValue


# -- tests (repeated parameters are AND'ed) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class ParamTest:
    """Resources whose index rows of `param` (of `type`) match any of the values."""

    param: str
    type: str
    values: tuple[Value, ...]
    modifier: str | None = None


@dataclass(frozen=True, slots=True)
class MissingTest:
    """:missing=true|false on any parameter."""

    param: str
    type: str
    missing: bool


@dataclass(frozen=True, slots=True)
class IdTest:
    """_id: the logical id is one of the values."""

    ids: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True, slots=True)
class LastUpdatedTest:
    """_lastUpdated: resource.last_updated against dates with prefixes (OR'ed)."""

    values: tuple[RangeValue, ...]


@dataclass(frozen=True, slots=True)
class ChainTest:
    """param.rest: a reference to a resource of `targets` that satisfies `inner`."""

    param: str
    targets: tuple[str, ...]
    inner: Test


@dataclass(frozen=True, slots=True)
class HasTest:
    """_has:Type:param:rest: some `source` resource references this one and satisfies `inner`."""

    source: str
    param: str
    inner: Test


@dataclass(frozen=True, slots=True)
class PatientOnlyTest:
    """Access confinement: nothing that points to a Patient other than `patient`.

    Resources of the `members` types must also be in that patient's compartment.
    """

    patient: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TypeTest:
    """The tests apply to resources of `type` only (others pass): per-type access restrictions."""

    type: str
    tests: tuple[Test, ...]


@dataclass(frozen=True, slots=True)
class AllTest:
    """Every one of the tests (e.g. a _has or chain target's own criteria plus access restrictions)."""

    tests: tuple[Test, ...]


Test = (
    ParamTest
    | MissingTest
    | IdTest
    | LastUpdatedTest
    | ChainTest
    | HasTest
    | PatientOnlyTest
    | TypeTest
    | AllTest
)


# -- result parameters ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    """One _sort key: a parameter (or _id / _lastUpdated) and its direction."""

    param: str
    type: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """_include / _revinclude source:param[:target], `*` as param meaning every reference."""

    source: str
    param: str  # "*" for every reference parameter
    target: str | None = None
    iterate: bool = False
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Compartment:
    """Restrict to one compartment: kind (Patient, ...) and owner id."""

    kind: str
    owner: str


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: sort values of the boundary row and its pk; before = page backwards."""

    values: tuple[Any, ...]
    pk: int
    before: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A complete search over one or more resource types."""

    types: tuple[str, ...]  # empty: every type (system search without _type)
    tests: tuple[Test, ...] = ()
    compartment: Compartment | None = None
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    offset: int = 0
    cursor: Cursor | None = None
    includes: tuple[Include, ...] = ()
    total: str | None = None  # None (server decides), none, estimate, accurate
    summary: str | None = None  # true, text, data, count, false
    elements: tuple[str, ...] = ()
    applied: tuple[tuple[str, str], ...] = ()  # the parameters used, for the self link
    ignored: tuple[str, ...] = ()  # unknown parameters left out (lenient handling)
    max_includes: int = 1000

    @property
    def keyset(self) -> bool:
        """Whether paging can use a keyset (sorted only by _id / _lastUpdated / pk)."""
        return all(k.param in ("_id", "_lastUpdated") for k in self.sort)


@dataclass(slots=True)
class Match:
    """One resource found: its stored text and the keys for paging."""

    pk: int
    type: str
    id: str
    version: int
    last_updated: datetime
    body: str
    sort_values: tuple[Any, ...] = ()


@dataclass(slots=True)
class SearchResult:
    """A page of matches, included resources, the total (if computed) and paging flags."""

    matches: list[Match]
    included: list[Match] = field(default_factory=list)
    total: int | None = None
    has_next: bool = False
    has_previous: bool = False
    truncated_includes: list[str] = field(default_factory=list)
