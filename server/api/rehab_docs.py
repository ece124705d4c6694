"""Blueprint "rehab_docs": the /rehab API described for integrators, open to all (no token).

GET /rehab/openapi.json is the OpenAPI 3.1 document (server/api/openapi.py). Both describe
the API only: no patient data, so they are open (auth's OPEN_ENDPOINTS) and not audited.
"""

from __future__ import annotations

import flask
import orjson

from server.api import openapi
from server.api.requests import base_url
from server.settings import Settings

bp = flask.Blueprint("rehab_docs", __name__, url_prefix="/rehab")
ENDPOINTS = frozenset({"rehab_docs.openapi_json"})


@bp.get("/openapi.json")
def openapi_json() -> flask.Response:
    """Send the OpenAPI document (any origin may load it: Swagger Editor, Postman, generators)."""
    resp = flask.Response(orjson.dumps(openapi.document(base_url())), mimetype="application/json")
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.add_etag()
    return resp.make_conditional(flask.request)


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the documentation endpoints."""
    app.register_blueprint(bp)
