// A run's page: its score and how it was reached, its event timeline and its report.

import { ApiError, api } from "./api.js";
import {
  emptyListing,
  errorBox,
  fill,
  flagChips,
  formValues,
  formatDuration,
  formatNumber,
  gradeBadge,
  h,
  hashAddress,
  offsetParam,
  pager,
  plainText,
  statusBadge,
  timeElement,
  userText,
} from "./dom.js";

const EVENTS_PAGE = 50;
const SEVERITIES = ["info", "warning", "error", "critical"];
// While a run is not settled its score still moves: poll it every 2 s, slowing to
// every 30 s while nothing changes.
const REFRESH_MS = 2000;
const MAX_REFRESH_MS = 30000;

function timelineHref(runId, filters, changes = {}) {
  return hashAddress(`/runs/${runId}`, { ...filters, ...changes });
}

function settledText(score) {
  if (score.settled) return h("span", { class: "settled yes" }, "Settled: every accepted event is counted");
  const reasons = [];
  if (!["finished", "failed", "cancelled"].includes(score.status)) reasons.push(`the run is ${score.status}`);
  if (score.pending_events)
    reasons.push(`${formatNumber(score.pending_events)} events are still being stored`);
  if (score.dead_lettered_events)
    reasons.push(`${formatNumber(score.dead_lettered_events)} events could not be stored`);
  return h("span", { class: "settled no" }, `Not settled: ${reasons.join("; ")}`);
}

function scoreSection(runId, score) {
  const deductions = score.deductions.map((deduction) => {
    const filter = deduction.event_type
      ? { event_type: deduction.event_type }
      : { severity: deduction.severity };
    return h(
      "tr",
      {},
      h("td", { class: "number" }, `−${deduction.points}`),
      h("th", { scope: "row" }, deduction.reason),
      h("td", { class: "number" }, formatNumber(deduction.events)),
      h(
        "td",
        {},
        h(
          "a",
          {
            href: timelineHref(runId, filter),
            "aria-label": `Show these events: ${deduction.events} behind ${deduction.reason}`,
          },
          "Show these events",
        ),
      ),
    );
  });
  return h(
    "section",
    { "aria-labelledby": "score-title", class: "card" },
    h("h2", { id: "score-title" }, "Score"),
    h(
      "p",
      { class: "big-score" },
      h("span", { class: "score", "data-testid": "score" }, String(score.score)),
      gradeBadge(score.grade, score.score),
      settledText(score),
    ),
    h("p", {}, "Risk flags: ", flagChips(score.risks)),
    deductions.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "deductions" },
            h("caption", {}, `100 minus these deductions gives ${score.score}`),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Points", "Reason", "Events", ""].map((name) => h("th", { scope: "col" }, name)),
              ),
            ),
            h("tbody", {}, deductions),
          ),
        )
      : h("p", {}, "No deductions: 100."),
    h(
      "p",
      { class: "muted" },
      `${formatNumber(score.counts.total)} events counted, last updated `,
      timeElement(score.updated_at),
    ),
  );
}

function eventRow(event) {
  const payload =
    event.payload === null
      ? h("span", { class: "muted" }, "–")
      : h("details", {}, h("summary", {}, "payload"), h("pre", {}, JSON.stringify(event.payload, null, 2)));
  return h(
    "tr",
    {},
    h("td", {}, timeElement(event.occurred_at ?? event.received_at)),
    h("td", {}, h("span", { class: `severity severity-${event.severity}` }, event.severity)),
    h("th", { scope: "row" }, event.event_type),
    h("td", { class: "message" }, event.message || h("span", { class: "muted" }, "–")),
    h("td", {}, payload),
  );
}

function timelineSection(runId, filters, events, meta) {
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter events" },
    h(
      "p",
      { class: "field inline" },
      h("label", { for: "filter-severity" }, "Severity"),
      h(
        "select",
        { id: "filter-severity", name: "severity" },
        [["", "Any"], ...SEVERITIES.map((s) => [s, s])].map(([value, text]) =>
          h("option", { value, selected: value === filters.severity }, text),
        ),
      ),
    ),
    h(
      "p",
      { class: "field inline" },
      h("label", { for: "filter-type" }, "Event type"),
      h("input", {
        id: "filter-type",
        name: "event_type",
        value: filters.event_type,
        maxlength: 120,
        placeholder: "request_timeout",
      }),
    ),
    h("button", { type: "submit", class: "button" }, "Apply"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    // The type is matched exactly, spaces included, so it is not trimmed.
    const { severity } = formValues(form);
    const eventType = form.elements.event_type.value;
    window.location.hash = timelineHref(runId, filters, { severity, event_type: eventType, offset: "" });
  });
  const filtered = filters.severity || filters.event_type;
  return h(
    "section",
    { "aria-labelledby": "timeline-title" },
    h(
      "h2",
      {
        id: "timeline-title",
        "data-focus": filters.severity || filters.event_type || filters.offset !== "0" || undefined,
      },
      "Event timeline",
    ),
    form,
    events.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "timeline" },
            h("caption", { class: "visually-hidden" }, "Events of this run, oldest first"),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Time", "Severity", "Type", "Message", "Payload"].map((name) =>
                  h("th", { scope: "col" }, name),
                ),
              ),
            ),
            h("tbody", {}, events.map(eventRow)),
          ),
        )
      : emptyListing(
          meta,
          (offset) => timelineHref(runId, filters, { offset: String(offset) }),
          filtered ? "No event matches these filters." : "No events stored yet.",
          "events",
        ),
    meta.total > meta.limit &&
      events.length > 0 &&
      pager(meta, (offset) => timelineHref(runId, filters, { offset: String(offset) }), "events"),
  );
}

function reportSection(report) {
  return h(
    "section",
    { "aria-labelledby": "report-title" },
    h("h2", { id: "report-title" }, "Report"),
    report
      ? [
          h("p", { class: "report-summary" }, report.summary),
          h(
            "p",
            { class: "muted" },
            "Submitted ",
            timeElement(report.created_at),
            report.updated_at !== report.created_at ? [", replaced ", timeElement(report.updated_at)] : "",
          ),
          h(
            "details",
            {},
            h("summary", {}, "Raw JSON"),
            h("pre", { class: "raw" }, JSON.stringify(report.raw_json, null, 2)),
          ),
        ]
      : h("p", { class: "empty" }, "The agent has not submitted a report for this run."),
  );
}

function runFacts(run) {
  const fact = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  return h(
    "dl",
    { class: "facts" },
    fact("Status", statusBadge(run.status)),
    fact("Target", [h("span", { class: "method" }, run.method), " ", run.target_url]),
    fact("Started", timeElement(run.started_at)),
    fact("Finished", timeElement(run.finished_at)),
    fact("Duration", formatDuration(run.started_at, run.finished_at)),
    fact("Run id", h("code", {}, run.id)),
  );
}

function deleteRunButton(run) {
  const errors = h("div");
  const button = h("button", { type: "button", class: "button danger" }, "Delete this run");
  button.addEventListener("click", async () => {
    if (!window.confirm("Delete this run with its events and report? This cannot be undone.")) return;
    try {
      await api(`/api/runs/${run.id}`, { method: "DELETE" });
      window.location.hash = `#/projects/${run.project_id}`;
    } catch (error) {
      errors.replaceChildren(errorBox(error));
    }
  });
  return h("section", { class: "danger-zone", "aria-label": "Delete the run" }, errors, button);
}

async function loadReport(runId) {
  try {
    return (await api(`/api/runs/${runId}/report`)).data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

export async function runPage(main, { params, query, onLeave }) {
  const runId = params[0];
  const filters = {
    severity: SEVERITIES.includes(query.get("severity")) ? query.get("severity") : "",
    event_type: (query.get("event_type") ?? "").slice(0, 120),
    offset: String(offsetParam(query)),
  };
  const loadEvents = () => api(`/api/runs/${runId}/events`, { query: { limit: EVENTS_PAGE, ...filters } });
  const [run, score, events, report] = await Promise.all([
    api(`/api/runs/${runId}`),
    api(`/api/runs/${runId}/score`),
    loadEvents(),
    loadReport(runId),
  ]);
  const project = await api(`/api/projects/${run.data.project_id}`);
  document.title = `${plainText(run.data.scenario)} · ${plainText(project.data.name)} · Softadastra Cloud`;

  const facts = h("div", {}, runFacts(run.data));
  const scoreSlot = h("div", {}, scoreSection(runId, score.data));
  const timelineSlot = h("div", {}, timelineSection(runId, filters, events.data, events.meta));
  const reportSlot = h("div", {}, reportSection(report));
  fill(
    main,
    h(
      "nav",
      { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("a", { href: "#/projects" }, "Projects"),
      " / ",
      h("a", { href: `#/projects/${project.data.id}` }, userText(project.data.name)),
      " / ",
      userText(run.data.scenario),
    ),
    h("h1", {}, "Run: ", userText(run.data.scenario)),
    facts,
    scoreSlot,
    timelineSlot,
    reportSlot,
    deleteRunButton(run.data),
  );

  // Until the score is settled, poll the score and the run, which are small. The
  // timeline (whose payloads can be large) and the report are fetched again only
  // when the counted events or the status changed. A quiet run is polled less and
  // less often, and a hidden tab not at all.
  let timer = null;
  let delay = REFRESH_MS;
  let last = { total: score.data.counts.total, status: run.data.status };
  const refresh = async () => {
    if (document.hidden) {
      timer = window.setTimeout(refresh, delay);
      return;
    }
    let settled = false;
    try {
      const [nextRun, nextScore] = await Promise.all([
        api(`/api/runs/${runId}`),
        api(`/api/runs/${runId}/score`),
      ]);
      const now = { total: nextScore.data.counts.total, status: nextRun.data.status };
      facts.replaceChildren(runFacts(nextRun.data));
      scoreSlot.replaceChildren(scoreSection(runId, nextScore.data));
      if (now.total !== last.total && !timelineSlot.contains(document.activeElement)) {
        const nextEvents = await loadEvents();
        timelineSlot.replaceChildren(timelineSection(runId, filters, nextEvents.data, nextEvents.meta));
      }
      if (now.status !== last.status) reportSlot.replaceChildren(reportSection(await loadReport(runId)));
      delay =
        now.total !== last.total || now.status !== last.status
          ? REFRESH_MS
          : Math.min(delay * 1.5, MAX_REFRESH_MS);
      last = now;
      settled = nextScore.data.settled;
    } catch (error) {
      scoreSlot.replaceChildren(errorBox(error), scoreSlot.lastChild ?? "");
      delay = Math.min(delay * 1.5, MAX_REFRESH_MS);
    }
    if (!settled && timer !== false) timer = window.setTimeout(refresh, delay);
  };
  if (!score.data.settled) timer = window.setTimeout(refresh, delay);
  onLeave(() => {
    window.clearTimeout(timer);
    timer = false;
  });
}
