"""Blueprint "rehab_docs": the /rehab API described for integrators, open to all (no token).

GET /rehab/openapi.json is the OpenAPI 3.1 document (server/api/openapi.py); GET /rehab/docs
renders it with the vendored Swagger UI (server/web/static/swagger-ui, see VENDORED.md), under
the pages' CSP. Both describe the API only: no patient data, so they are open (auth's
OPEN_ENDPOINTS) and not audited.
"""

from __future__ import annotations

import flask
import orjson

from server.api import openapi
from server.api.app_routes import security_headers
from server.api.requests import base_url
from server.settings import Settings
from server.web import TEMPLATES

bp = flask.Blueprint("rehab_docs", __name__, url_prefix="/rehab", template_folder=str(TEMPLATES))


@bp.get("/openapi.json")
def openapi_json() -> flask.Response:
    """Send the OpenAPI document (any origin may load it: Swagger Editor, Postman, generators)."""
    resp = flask.Response(orjson.dumps(openapi.document(base_url())), mimetype="application/json")
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.add_etag()
    return resp.make_conditional(flask.request)


@bp.get("/docs")
def docs() -> flask.Response:
    """Render the docs page: Swagger UI on /rehab/openapi.json (scripts and styles from our static files)."""
    page = flask.render_template("rehab_docs.html", spec_url=flask.url_for("rehab_docs.openapi_json"))
    return security_headers(flask.Response(page, mimetype="text/html"))


def init_app(app: flask.Flask, settings: Settings) -> None:
    """Register the documentation endpoints."""
    app.register_blueprint(bp)
