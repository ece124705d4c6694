"""The request-rate floor: a Flask route returning a constant 1 KB body, under rehabfhir's gunicorn.

Run `python bench/floor_app.py --port P --workers 2`. It is served through
`server.cli.run_gunicorn` itself, so worker class, threads, access log and timeouts are exactly
the FHIR server's: the only difference left is the work done per request.
"""

from __future__ import annotations

import argparse

import flask

# About the size of a stored PT Observation; content is irrelevant, length is not.
_HEAD, _TAIL = b'{"resourceType":"Basic","id":"floor","text":"', b'"}'
BODY = _HEAD + b"x" * (1024 - len(_HEAD) - len(_TAIL)) + _TAIL


def create_app() -> flask.Flask:
    """A Flask app with one route, GET /floor, answering BODY."""
    app = flask.Flask(__name__)

    @app.get("/floor")
    def floor() -> flask.Response:
        return flask.Response(BODY, content_type="application/fhir+json; charset=utf-8")

    return app


def main() -> None:
    """Serve the floor app with the FHIR server's gunicorn configuration."""
    from server import cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="as `rehabfhir serve` defaults")
    args = parser.parse_args()
    app = create_app()
    # run_gunicorn's loader builds the app with cli.create_app; hand it ours instead.
    cli.create_app = lambda _settings=None: app  # type: ignore[assignment]
    cli.run_gunicorn(f"{args.host}:{args.port}", args.workers, args.threads)


if __name__ == "__main__":
    main()
