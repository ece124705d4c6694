"""The browser pages: templates and static files (vanilla JS and CSS, no build step).

The pages are a SMART App Launch public client of this server:
https://hl7.org/fhir/smart-app-launch/app-launch.html
"""

from __future__ import annotations

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES = WEB_DIR / "templates"
STATIC = WEB_DIR / "static"
CLIENT_NAME = "rehabfhir-web"
"""Name of the public client the pages register as."""
