"""FHIR compartment search (GET /Patient/123/Observation?...), from the official definitions.

https://hl7.org/fhir/R4B/compartmentdefinition.html
"""

from __future__ import annotations

from server.errors import NotFoundError
from server.fhir.access import AccessContext
from server.fhir.http import FhirRequest
from server.fhir.http import FhirResponse
from server.fhir.interactions.search_type import check_search_access
from server.fhir.interactions.search_type import run_search
from server.fhir.repository import FhirRepository
from server.fhir.resources import check_id
from server.fhir.resources import check_type
from server.fhir.search.definitions import compartment_kinds
from server.fhir.search.definitions import compartment_members
from server.fhir.search.params import parse_search
from server.fhir.search.query import Compartment


def search_compartment(
    repo: FhirRepository, ctx: AccessContext, req: FhirRequest, type_: str, id_: str, target: str
) -> FhirResponse:
    """Search the resources of `target` (or * for all) in the compartment type_/id_."""
    check_type(type_)
    check_id(id_)
    if type_ not in compartment_kinds():
        raise NotFoundError(f"{type_} is not a compartment", message_id="MSG_NO_COMPARTMENT")
    members = compartment_members(type_)
    if target == "*":
        types = tuple(t for t in members if ctx.can(t, "s")) or members  # * means what the caller may see
    else:
        check_type(target)
        if target not in members:
            raise NotFoundError(
                f"{target} resources are not in the {type_} compartment", message_id="MSG_NO_COMPARTMENT"
            )
        types = (target,)
    check_search_access(ctx, types)
    query = parse_search(req, types, compartment=Compartment(type_, id_))
    return run_search(repo, req, query, f"{type_}/{id_}/{target}", ctx)
