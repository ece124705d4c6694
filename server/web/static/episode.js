// Episodes of care on the patient page: each EpisodeOfCare as GET /rehab/episodes/{id} answers it (plan of
// care: certification period, frequency x duration, visits used of those authorized, warnings; the plan's
// goals), and, once finished, its discharge summary Composition with a button that prints only it.
import { fmtDate, fmtWhen, goalStatus, h, replace } from "./dom.js";
import { api, ApiError } from "./smart.js";

// The narrative the server generates (fhir_mapping/discharge.py) is rebuilt from these elements and
// their text only: no attribute, link or script from a document ever reaches the page.
const KEEP = new Set(["p", "table", "thead", "tbody", "tr", "th", "td", "ul", "ol", "li", "b", "i", "strong", "em", "br", "div", "span"]);
const DROP = new Set(["script", "style", "template", "iframe", "object", "svg", "math"]);

function rebuild(node) {
  if (node.nodeType === Node.TEXT_NODE) return node.textContent;
  if (node.nodeType !== Node.ELEMENT_NODE || DROP.has(node.localName)) return null;
  const kids = [...node.childNodes].map(rebuild);
  const tag = node.localName;
  if (tag === "table") return h("table", { class: "data compact" }, kids);
  return KEEP.has(tag) ? h(tag, null, kids) : kids;
}

/** A section's narrative (xhtml div) as safe DOM. */
export function narrative(text) {
  const div = text && text.div;
  if (!div) return null;
  const body = new DOMParser().parseFromString(div, "text/html").body;
  return h("div", { class: "narrative" }, [...body.childNodes].map(rebuild));
}

const label = (cc) => (cc && (cc.text || ((cc.coding || [])[0] || {}).display || ((cc.coding || [])[0] || {}).code)) || "";

function planOfCare(poc, warnings) {
  if (!poc) return h("p", { class: "state empty" }, "No plan of care certified for this episode.");
  const over = poc.visits_used > poc.visits_authorized;
  return h("div", { class: "plan-of-care" },
    h("h4", null, "Plan of care"),
    h("dl", { class: "facts-list" },
      h("dt", null, "Certification period"), h("dd", { "data-field": "period" }, `${poc.start} to ${poc.end}`),
      h("dt", null, "Frequency × duration"), h("dd", { "data-field": "frequency" }, `${poc.visits_per_week} visits a week × ${poc.weeks} weeks`),
      h("dt", null, "Visits"), h("dd", { "data-field": "visits", class: over ? "over" : null },
        `${poc.visits_used} used of ${poc.visits_authorized} authorized (${poc.visits_left} left)`),
      h("dt", null, "Version"), h("dd", null, `${poc.version} (${poc.certifications} certification${poc.certifications === 1 ? "" : "s"})`)),
    warnings.length ? h("ul", { class: "warnings", "aria-label": "Warnings" },
      warnings.map((w) => h("li", null, `${w.warning} (${w.encounter})`))) : null);
}

function goalsOf(goals) {
  if (!goals.length) return null;
  return h("div", { class: "episode-goals" }, h("h4", null, "Goals of the plan"),
    h("ul", { class: "plain" }, goals.map((g) => h("li", { "data-goal": g.id },
      `${(g.description && g.description.text) || "(goal)"}: ${goalStatus(g)}`))));
}

function summary(comp, onPrint) {
  return h("section", { class: "discharge-summary", "aria-label": "Discharge summary", "data-composition": comp.id },
    h("div", { class: "summary-head" },
      h("h4", null, comp.title || "Discharge summary"),
      h("button", { type: "button", class: "print-summary", onclick: onPrint }, "Print discharge summary")),
    h("p", { class: "facts" }, [`dated ${fmtWhen(comp.date)}`, comp.status, ...(comp.author || []).map((a) => "author " + (a.display || a.reference))].join(" · ")),
    (comp.section || []).map((s) => h("section", { class: "summary-section" }, h("h5", null, s.title || label(s.code)), narrative(s.text))));
}

/** Print the discharge summary of one episode alone (the print stylesheet hides the rest of the page). */
function printOnly(article) {
  document.body.dataset.print = "summary";
  article.classList.add("printing");
  const done = () => { delete document.body.dataset.print; article.classList.remove("printing"); };
  window.addEventListener("afterprint", done, { once: true });
  window.print();
}

async function episodeArticle(view, goalList) {
  const article = h("article", { class: "episode", "data-episode": view.id, "data-status": view.status });
  const condition = view.condition ? (view.condition.display || view.condition.code) : "episode of care";
  const plan = view.plan_of_care;
  let goals = [];
  if (plan) {
    const careplan = await api("/" + plan.careplan);
    const refs = new Set((careplan.goal || []).map((g) => g.reference));
    goals = goalList.filter((g) => refs.has("Goal/" + g.id));
  }
  let discharge = null;
  if (view.discharge) discharge = await api("/" + view.discharge);
  return replace(article,
    h("h3", null, `${condition} — ${view.status}`),
    h("p", { class: "facts" }, [`from ${fmtDate(view.start)}`, view.end && `to ${fmtDate(view.end)}`,
      view.care_manager && `care manager ${view.care_manager}`, view.referring && `referred by ${view.referring}`]
      .filter(Boolean).join(" · ")),
    planOfCare(plan, view.warnings || []),
    goalsOf(goals),
    discharge ? summary(discharge, () => printOnly(article)) : null);
}

/** Draw the patient's episodes into #episodes; a token without the episode scopes gets a note, not an error. */
export async function renderEpisodes(patientId, goalList) {
  const box = document.getElementById("episodes");
  try {
    const bundle = await api(`/EpisodeOfCare?patient=${encodeURIComponent(patientId)}&_count=20`);
    const found = (bundle.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === "EpisodeOfCare");
    if (!found.length) {
      replace(box, h("p", { class: "state empty" }, "No episode of care. Episodes opened with /rehab/episodes show here."));
      return;
    }
    found.sort((a, b) => String((b.period || {}).start || "").localeCompare(String((a.period || {}).start || "")));
    const views = await Promise.all(found.map((e) => api("/rehab/episodes/" + encodeURIComponent(e.id))));
    replace(box, await Promise.all(views.map((v) => episodeArticle(v, goalList))));
  } catch (err) {
    const why = err instanceof ApiError && err.status === 403
      ? "Your sign-in does not include episodes of care (sign out and in again to grant them)." : "Episodes could not be loaded: " + err.message;
    replace(box, h("p", { class: "state " + (err.status === 403 ? "empty" : "error") }, why));
  }
}
