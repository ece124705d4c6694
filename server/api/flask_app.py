"""The Flask app class: Flask's request plumbing, minus work a FHIR API request never needs.

- `ensure_sync` is asked about every hook and view on every request (14 times for a read), and
  answers by inspecting the function's code flags each time: the answer is kept per function
  (for the first _SYNCED_MAX functions: the hooks and views, which live as long as the app).
- The cookie session (only the /auth sign-in pages use it) is opened and saved on every request.
  Without a session cookie, opening it needs no signing serializer, and an empty session that
  nobody touched saves nothing (what Flask's own interface does in both cases, with less work).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
from flask.sessions import SecureCookieSession
from flask.sessions import SecureCookieSessionInterface
from flask.sessions import SessionMixin

_SYNCED_MAX = 1024


class LeanCookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with the no-cookie and untouched-session cases made cheap."""

    def open_session(self, app: flask.Flask, request: flask.Request) -> SecureCookieSession | None:
        """As Flask's: None without a secret key, an empty session without the cookie."""
        if not app.secret_key:
            return None
        if "HTTP_COOKIE" not in request.environ:  # no Cookie header: no cookies to parse
            return self.session_class()
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: flask.Flask, session: SessionMixin, response: flask.Response) -> None:
        """As Flask's; an empty session that was neither read nor changed sets no cookie and no Vary."""
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)


class RehabFlask(flask.Flask):
    """flask.Flask with the lean cookie session and a per-function ensure_sync."""

    session_interface = LeanCookieSessionInterface()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synced: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Flask's answer for func (itself, or wrapped if it is a coroutine function), kept."""
        try:
            return self._synced[func]
        except KeyError:
            synced = super().ensure_sync(func)
            if len(self._synced) < _SYNCED_MAX:  # bounded: callables made per request cannot grow it
                self._synced[func] = synced
            return synced
        except TypeError:  # an unhashable callable: ask every time
            return super().ensure_sync(func)
