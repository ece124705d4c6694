// Entry point: sign-in state in the top bar, then the page's own module.
import { h, replace, state } from "./dom.js";
import { canRead, completeSignIn, session, signIn, signOut } from "./smart.js";

const PAGES = {
  patients: () => import("./patients.js"),
  patient: () => import("./patient.js"),
  audit: () => import("./audit.js"),
};

function renderWho() {
  const who = document.getElementById("who");
  const s = session();
  if (!s) {
    replace(who, h("button", { type: "button", id: "sign-in", onclick: () => signIn() }, "Sign in"));
    return;
  }
  const fhirUser = (s.fhirUser || "").replace(/^https?:\/\/[^]*?\/(?=(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)\/)/, "");
  const label = s.open ? "Open server (no sign-in configured)" : (fhirUser || s.user || "Signed in");
  replace(who,
    h("span", { class: "user", id: "signed-in-as" }, label),
    h("button", { type: "button", id: "sign-out", onclick: async () => { await signOut(); location.assign("/app/"); } }, "Sign out"));
}

function signInPrompt(status) {
  state(status, "info", "Sign in to see this page. You will be asked to log in and to approve what this app may read.",
    h("button", { type: "button", class: "primary", id: "sign-in-main", onclick: () => signIn() }, "Sign in"));
}

async function run() {
  const page = document.body.dataset.page;
  const status = document.getElementById("status");
  if (page === "callback") {
    try {
      location.replace(await completeSignIn());
    } catch (err) {
      state(status, "error", "Sign-in failed: " + err.message,
        h("button", { type: "button", onclick: () => signIn("/app/") }, "Try again"));
    }
    return;
  }
  renderWho();
  if (page === "home") {
    if (session()) state(status, "ok", "You are signed in. Choose a console below.");
    else signInPrompt(status);
    return;
  }
  if (!session()) {
    for (const node of document.querySelectorAll("main > :not(h1):not(.crumbs):not(#status)")) node.hidden = true;
    signInPrompt(status);
    return;
  }
  const needs = { patients: "Patient", patient: "Observation", audit: "AuditEvent" }[page];
  if (!canRead(needs)) {
    for (const node of document.querySelectorAll("main > :not(h1):not(.crumbs):not(#status)")) node.hidden = true;
    state(status, "info", page === "audit"
      ? "This sign-in was for the clinician pages and carries no audit access. Sign in again for the audit console."
      : "This sign-in was for the audit console and carries no clinical access. Sign in again for the patient pages.",
    h("button", { type: "button", class: "primary", id: "sign-in-main", onclick: () => signIn() }, "Sign in again"));
    return;
  }
  const mod = await PAGES[page]();
  try {
    await mod.start();
  } catch (err) {
    if (err.status === 401) {
      renderWho();
      state(status, "error", "Your sign-in has expired or was revoked. Sign in again to continue.",
        h("button", { type: "button", onclick: () => signIn() }, "Sign in"));
    } else {
      state(status, "error", err.status === 403
        ? "Your account is not allowed to see this: " + err.message
        : "Something went wrong: " + err.message);
    }
  }
}

run();
