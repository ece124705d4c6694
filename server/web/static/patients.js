// Patient picker: search Patient by name or identifier, page through the searchset.
import { fmtDate, h, humanName, replace, state } from "./dom.js";
import { api } from "./smart.js";

const form = () => document.getElementById("patient-search");

function linkOf(bundle, rel) {
  const link = (bundle.link || []).find((l) => l.relation === rel);
  return link ? link.url : null;
}

function identifierOf(p) {
  const id = (p.identifier || [])[0];
  return id ? id.value || "" : "";
}

async function load(url) {
  const status = document.getElementById("status");
  const table = document.getElementById("patient-list");
  const pager = document.getElementById("pager");
  state(status, "info", "Searching…");
  const bundle = await api(url);
  const patients = (bundle.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === "Patient");
  if (!patients.length) {
    table.hidden = true;
    pager.hidden = true;
    state(status, "empty", "No patients match. Try part of a family or given name, or clear the search to list everyone.");
    return;
  }
  status.hidden = true;
  replace(table.tBodies[0], patients.map((p) => h("tr", null,
    h("td", null, h("a", { href: "/app/patients/" + encodeURIComponent(p.id), class: "patient-link" }, humanName(p))),
    h("td", null, fmtDate(p.birthDate)),
    h("td", null, p.gender || ""),
    h("td", null, identifierOf(p)))));
  table.hidden = false;
  const prev = linkOf(bundle, "previous") || linkOf(bundle, "prev");
  const next = linkOf(bundle, "next");
  pager.hidden = !prev && !next;
  for (const button of pager.querySelectorAll("button")) {
    const target = button.dataset.rel === "next" ? next : prev;
    button.disabled = !target;
    button.onclick = target ? () => load(target).catch(showError) : null;
  }
}

function showError(err) {
  state(document.getElementById("status"), "error", "Could not search patients: " + err.message);
}

function query() {
  const data = new FormData(form());
  const params = new URLSearchParams({ _count: "20", _sort: "family,given" });
  if (data.get("name")) params.set("name", data.get("name"));
  if (data.get("identifier")) params.set("identifier", data.get("identifier"));
  return "/Patient?" + params.toString();
}

export async function start() {
  form().addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(query()).catch(showError);
  });
  await load(query());
}
