"""`rehabfhir client add` and `rehabfhir user add`: register apps, backends and people.

https://hl7.org/fhir/smart-app-launch/app-launch.html#register-app-with-ehr
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from auth import scopes as scope_rules
from auth.roles import ROLES
from auth.store import AuthStore


def _store() -> AuthStore:
    from server.settings import Settings
    from server.store.migrate import upgrade
    from server.store.session import make_engine
    from server.store.session import make_session_factory

    engine = make_engine(Settings.from_env().database_url)
    upgrade(engine)
    return AuthStore(make_session_factory(engine))


@click.group("client")
def client() -> None:
    """Register OAuth clients (SMART apps and backend services)."""


@client.command("add")
@click.argument("name")
@click.option("--scope", required=True, help='Scopes the client may ask for, e.g. "system/*.rs"')
@click.option("--secret", "kind", flag_value="symmetric", help="confidential client with a generated secret")
@click.option(
    "--jwks",
    "jwks_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="confidential client authenticating with private_key_jwt; its public JWKS file",
)
@click.option("--jwks-uri", default=None, help="like --jwks, but the JWKS is fetched from this URL")
@click.option("--public", "kind", flag_value="public", help="public client (browser or native app; PKCE)")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="an exact redirect URI (repeatable)")
@click.option("--client-id", default=None, help="a fixed client_id (default: a random one)")
def client_add(
    name: str,
    scope: str,
    kind: str | None,
    jwks_file: str | None,
    jwks_uri: str | None,
    redirect_uris: tuple[str, ...],
    client_id: str | None,
) -> None:
    """Register a client and print its client_id (and client_secret) as JSON."""
    bad = [s for s in scope.split() if not scope_rules.is_valid(s)]
    if bad:
        raise click.BadParameter(f"unknown scope(s): {' '.join(bad)}", param_hint="--scope")
    jwks: dict[str, Any] | None = None
    if jwks_file or jwks_uri:
        if kind is not None:
            raise click.UsageError("choose one of --secret, --jwks/--jwks-uri, --public")
        kind = "asymmetric"
        if jwks_file:
            with open(jwks_file, encoding="utf-8") as fh:
                jwks = json.load(fh)
            if not isinstance(jwks, dict) or not jwks.get("keys"):
                raise click.BadParameter('the file must hold a JWKS ({"keys": [...]})', param_hint="--jwks")
            if any(not k.get("kid") or "d" in k for k in jwks["keys"]):
                raise click.BadParameter("every key needs a kid and must be public", param_hint="--jwks")
    if kind is None:
        raise click.UsageError("choose one of --secret, --jwks FILE, --jwks-uri URL, --public")
    if kind == "public" and not redirect_uris:
        raise click.UsageError("a public client needs at least one --redirect-uri")
    row, secret = _store().add_client(
        name,
        scope,
        kind,
        redirect_uris=list(redirect_uris),
        jwks=jwks,
        jwks_uri=jwks_uri,
        client_id=client_id,
    )
    out: dict[str, Any] = {
        "client_id": row.client_id,
        "name": name,
        "type": kind,
        "scope": scope,
        "redirect_uris": list(redirect_uris),
    }
    if secret:
        out["client_secret"] = secret
    click.echo(json.dumps(out))


@click.group("user")
def user() -> None:
    """Manage the people who sign in."""


@user.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--fhir-user", default=None, help="their FHIR record, e.g. Patient/123 or Practitioner/7")
@click.option("--password-stdin", is_flag=True, required=True, help="read the password from standard input")
def user_add(username: str, role: str, fhir_user: str | None, password_stdin: bool) -> None:
    """Create a user (the password is read from stdin and stored as a salted scrypt hash)."""
    password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise click.UsageError("the password needs at least 8 characters")
    if fhir_user and fhir_user.split("/")[0] not in (
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
        "Person",
    ):
        raise click.BadParameter("must be Patient/id, Practitioner/id, ...", param_hint="--fhir-user")
    if role == "patient" and not (fhir_user or "").startswith("Patient/"):
        raise click.UsageError("a patient user needs --fhir-user Patient/<id>")
    row = _store().add_user(username, password, role, fhir_user)
    click.echo(json.dumps({"id": row.id, "username": username, "role": role, "fhirUser": fhir_user}))


@click.group("launch")
def launch() -> None:
    """EHR launch contexts."""


@launch.command("add")
@click.option("--patient", default=None)
@click.option("--encounter", default=None)
def launch_add(patient: str | None, encounter: str | None) -> None:
    """Register an EHR launch context and print its `launch` value."""
    click.echo(json.dumps({"launch": _store().add_launch(patient, encounter)}))


@click.group("keys")
def keys() -> None:
    """The server's token signing keys."""


@keys.command("rotate")
@click.option("--retire-old", is_flag=True, help="stop accepting tokens signed by the older keys at once")
def keys_rotate(retire_old: bool) -> None:
    """Create a new signing key; older keys keep verifying (JWKS) unless --retire-old."""
    from auth.keys import KeyStore
    from server.settings import Settings

    settings = Settings.from_env()
    kid = KeyStore(_store().sessions, settings.secret_key).rotate(retire_old=retire_old)
    click.echo(json.dumps({"kid": kid, "retired_old": retire_old}))
