// SMART App Launch public client: authorization code + PKCE S256 through this server's own
// authorization endpoint. The token lives in sessionStorage only (this tab, gone when it closes).
// https://hl7.org/fhir/smart-app-launch/app-launch.html
import { sha256 } from "./sha256.js";

const TOKEN_KEY = "rehabfhir.session";
const PENDING_KEY = "rehabfhir.pending";
const FHIR_JSON = "application/fhir+json";

let configPromise = null;
let discoveryPromise = null;

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** Fetch /app/config.json once: client id, FHIR base (token audience), scopes, whether auth exists. */
export function config() {
  configPromise ||= fetch(new URL("config.json", new URL("/app/", location.origin)))
    .then((r) => { if (!r.ok) throw new ApiError(r.status, "Could not load the app configuration"); return r.json(); });
  return configPromise;
}

async function discovery() {
  const cfg = await config();
  discoveryPromise ||= fetch(cfg.fhir_base + "/.well-known/smart-configuration", { headers: { Accept: "application/json" } })
    .then((r) => { if (!r.ok) throw new ApiError(r.status, "The server publishes no SMART configuration"); return r.json(); });
  return discoveryPromise;
}

function b64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(n = 32) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function challengeFor(verifier) {
  const data = new TextEncoder().encode(verifier);
  if (globalThis.crypto && crypto.subtle) return b64url(new Uint8Array(await crypto.subtle.digest("SHA-256", data)));
  return b64url(sha256(data));
}

function decodeJwt(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return {};
  }
}

function redirectUri() {
  return location.origin + "/app/callback";
}

/** The current session ({access_token, scope, fhirUser, patient, expires_at}) or null. */
export function session() {
  const raw = sessionStorage.getItem(TOKEN_KEY);
  if (!raw) return null;
  const s = JSON.parse(raw);
  if (s.expires_at && Date.now() > s.expires_at) {
    sessionStorage.removeItem(TOKEN_KEY);
    return null;
  }
  return s;
}

/** Return whether the granted scopes allow reading the resource type. */
export function canRead(type) {
  const s = session();
  if (!s) return false;
  if (s.open) return true;
  return (s.scope || "").split(/\s+/).some((sc) => {
    const m = /^(user|patient|system)\/([A-Za-z*]+)\.([a-z*]+)/.exec(sc);
    return m && (m[2] === type || m[2] === "*") && /[rs*]|read/.test(m[3]);
  });
}

/** Start sign-in: remember where to return, then go to the authorization endpoint. */
export async function signIn(returnTo = location.pathname + location.search) {
  const cfg = await config();
  if (!cfg.auth) {
    sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ open: true, fhirUser: null, scope: "" }));
    location.assign(returnTo);
    return;
  }
  const meta = await discovery();
  const verifier = randomString(48);
  const state = randomString(24);
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ state, verifier, returnTo }));
  const url = new URL(meta.authorization_endpoint, location.origin);
  const scope = returnTo.startsWith("/app/audit") ? cfg.audit_scope : cfg.scope;
  const params = {
    response_type: "code", client_id: cfg.client_id, redirect_uri: redirectUri(), scope,
    state, aud: cfg.fhir_base, code_challenge: await challengeFor(verifier), code_challenge_method: "S256",
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  location.assign(url.toString());
}

/** Finish sign-in on /app/callback: check state, exchange the code with the PKCE verifier. */
export async function completeSignIn() {
  const params = new URLSearchParams(location.search);
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  sessionStorage.removeItem(PENDING_KEY);
  history.replaceState(null, "", location.pathname); // the code must not stay in the address bar
  if (params.get("error")) throw new ApiError(400, params.get("error_description") || params.get("error"));
  if (!pending || !params.get("state") || params.get("state") !== pending.state) {
    throw new ApiError(400, "The sign-in response does not match a sign-in started in this tab");
  }
  const cfg = await config();
  const meta = await discovery();
  const body = new URLSearchParams({
    grant_type: "authorization_code", code: params.get("code") || "", redirect_uri: redirectUri(),
    client_id: cfg.client_id, code_verifier: pending.verifier,
  });
  const r = await fetch(meta.token_endpoint, {
    method: "POST", body, headers: { Accept: "application/json" }, credentials: "omit",
  });
  const tok = await r.json().catch(() => ({}));
  if (!r.ok || !tok.access_token) {
    throw new ApiError(r.status, tok.error_description || tok.error || "The token request failed");
  }
  const claims = tok.id_token ? decodeJwt(tok.id_token) : {};
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify({
    access_token: tok.access_token,
    scope: tok.scope || "",
    patient: tok.patient || null,
    fhirUser: claims.fhirUser || tok.fhirUser || null,
    user: claims.preferred_username || claims.name || claims.sub || null,
    expires_at: tok.expires_in ? Date.now() + (tok.expires_in - 10) * 1000 : null,
  }));
  return pending.returnTo && pending.returnTo.startsWith("/app/") && !pending.returnTo.startsWith("/app/callback")
    ? pending.returnTo : "/app/";
}

/** Forget the token (and revoke it when the server offers revocation). */
export async function signOut() {
  const s = session();
  sessionStorage.removeItem(TOKEN_KEY);
  if (s && s.access_token) {
    try {
      const [cfg, meta] = await Promise.all([config(), discovery()]);
      if (meta.revocation_endpoint) {
        await fetch(meta.revocation_endpoint, {
          method: "POST", credentials: "omit",
          body: new URLSearchParams({ token: s.access_token, token_type_hint: "access_token", client_id: cfg.client_id }),
        });
      }
    } catch { /* the token is gone from this tab either way */ }
  }
}

function messageOf(body, status) {
  if (body && body.resourceType === "OperationOutcome" && body.issue && body.issue.length) {
    return body.issue.map((i) => i.diagnostics || i.code).join("; ");
  }
  return `The server answered ${status}`;
}

/** GET a FHIR or /rehab path (relative to the FHIR base, or an absolute same-origin URL) with the token. */
export async function api(path, { accept = FHIR_JSON } = {}) {
  const cfg = await config();
  const s = session();
  if (!s) throw new ApiError(401, "Not signed in");
  const url = /^https?:/.test(path) ? path : cfg.fhir_base + path;
  const headers = { Accept: accept };
  if (s.access_token) headers.Authorization = "Bearer " + s.access_token;
  const r = await fetch(url, { headers, credentials: "omit" });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (r.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  if (!r.ok) throw new ApiError(r.status, messageOf(body, r.status), body);
  return body;
}
