// Home program adherence as GET /rehab/patients/{id}/progress answers it (`adherence[]`): one row per
// exercise of each active plan, its overall % and one cell per plan week. Pure: no DOM, so it is tested
// without a browser (tests/functional/test_episode_pages.py runs it under node).

const pct = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? "–" : `${Number(v).toFixed(0)} %`);
const days = (v) => (Number.isInteger(v) ? String(v) : Number(v).toFixed(1));

/** Rows of the adherence table: exercise, overall %, expected days a week, and each week's % with its days. */
export function adherenceRows(reports) {
  const rows = [];
  for (const report of reports || []) {
    for (const e of report.exercises || []) {
      rows.push({
        plan: report.plan,
        // Which plan: a patient may have a discharged episode's plan beside the active one.
        planLabel: [report.start ? `from ${report.start}` : "", report.status || ""].filter(Boolean).join(", ") || report.plan,
        exercise: e.exercise,
        overall: pct(e.percent),
        percent: e.percent === null || e.percent === undefined ? null : Number(e.percent),
        expected: e.expected_per_week === null || e.expected_per_week === undefined
          ? "as recorded" : `${days(e.expected_per_week)} days a week`,
        weeks: (e.weeks || []).map((w) => ({
          label: `Week ${w.week}${w.start ? " (from " + w.start + ")" : ""}`,
          percent: pct(w.percent),
          detail: `${days(w.credited)} of ${days(w.expected)} days`,
        })),
      });
    }
  }
  return rows;
}
