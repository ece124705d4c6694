"""SMART discovery: /.well-known/smart-configuration and the CapabilityStatement's security block.

https://hl7.org/fhir/smart-app-launch/conformance.html
"""

from __future__ import annotations

from typing import Any

from auth.server import ASSERTION_ALGS
from server.fhir.http import FhirRequest
from server.fhir.interactions.capabilities import contribute

CAPABILITIES = [
    "launch-standalone",
    "launch-ehr",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-standalone-patient",
    "context-ehr-patient",
    "context-ehr-encounter",
    "permission-patient",
    "permission-user",
    "permission-offline",
    "permission-online",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
]
SCOPES = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "system/*.cruds",
    "system/*.rs",
    "patient/*.read",
    "patient/*.write",
    "user/*.read",
    "user/*.write",
    "system/*.read",
    "system/*.write",
]
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def endpoints(base: str) -> dict[str, str]:
    """The auth endpoint URLs for a FHIR base URL."""
    return {
        "authorize": base + "/auth/authorize",
        "token": base + "/auth/token",
        "revoke": base + "/auth/revoke",
        "introspect": base + "/auth/introspect",
        "jwks": base + "/.well-known/jwks.json",
    }


def smart_configuration(base: str) -> dict[str, Any]:
    """The SMART configuration document."""
    urls = endpoints(base)
    return {
        "issuer": base,
        "jwks_uri": urls["jwks"],
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "introspection_endpoint": urls["introspect"],
        "revocation_endpoint": urls["revoke"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
        ],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "capabilities": CAPABILITIES,
    }


def openid_configuration(base: str) -> dict[str, Any]:
    """The OpenID Connect discovery document (for `sso-openid-connect`)."""
    urls = endpoints(base)
    return {
        "issuer": base,
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "jwks_uri": urls["jwks"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
        ],
    }


@contribute
def _security(statement: dict[str, Any], req: FhirRequest) -> None:
    """Declare SMART-on-FHIR security with the oauth-uris extension (how fhirclient finds the endpoints)."""
    urls = endpoints(req.base_url.rstrip("/"))
    statement["rest"][0]["security"] = {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": "authorize", "valueUri": urls["authorize"]},
                    {"url": "token", "valueUri": urls["token"]},
                    {"url": "revoke", "valueUri": urls["revoke"]},
                    {"url": "introspect", "valueUri": urls["introspect"]},
                ],
            }
        ],
        "description": "Every request needs a bearer token from the token endpoint; see "
        "/.well-known/smart-configuration.",
    }
