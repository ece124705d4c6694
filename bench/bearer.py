"""Bearer tokens for the HTTP benchmarks: the server requires OAuth on every FHIR route.

`authorize(port, database_url)` registers a confidential client (once per database) and gets a
system/*.cruds token by client_credentials at /auth/token, as an EHR backend would. The load
generator sends it on every request. Backend tokens live at most 5 minutes, so the benchmarks
call authorize() again before each phase (the client processes are forked per phase).
"""

from __future__ import annotations

import base64
import urllib.parse
import urllib.request

import loadgen
import orjson

HOST = "127.0.0.1"
_CLIENTS: dict[str, tuple[str, str]] = {}
_plain_request_bytes = loadgen.HttpClient._request_bytes


def _with_bearer(self: loadgen.HttpClient, method: str, path: str, body: bytes | None) -> bytes:
    raw = _plain_request_bytes(self, method, path, body)
    if not loadgen.BEARER:
        return raw
    return raw.replace(b"\r\n", f"\r\nAuthorization: Bearer {loadgen.BEARER}\r\n".encode(), 1)


loadgen.HttpClient._request_bytes = _with_bearer  # type: ignore[method-assign]


def authorize(port: int, database_url: str) -> None:
    """Set a fresh system/*.cruds token for the load generator."""
    if database_url not in _CLIENTS:
        from auth.store import AuthStore
        from server.store.session import make_engine
        from server.store.session import make_session_factory

        engine = make_engine(database_url)
        client, secret = AuthStore(make_session_factory(engine)).add_client(
            "bench", "system/*.cruds", "symmetric"
        )
        engine.dispose()
        _CLIENTS[database_url] = (client.client_id, secret or "")
    client_id, secret = _CLIENTS[database_url]
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    data = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": "system/*.cruds"}).encode()
    req = urllib.request.Request(
        f"http://{HOST}:{port}/auth/token", data=data, headers={"Authorization": "Basic " + basic}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        loadgen.BEARER = orjson.loads(resp.read())["access_token"]
