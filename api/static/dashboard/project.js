// A project's page: its score summary and trend, its runs, and its agents' keys.

import { api } from "./api.js";
import { trendChart } from "./charts.js";
import {
  FLAG_LABELS,
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

const RUNS_PAGE = 25;
const TREND_RUNS = 40;
const STATUSES = ["created", "running", "finished", "failed", "cancelled"];

function tile(label, value, extra) {
  return h("div", { class: "tile" }, h("dt", {}, label), h("dd", {}, value, extra));
}

// Only a finished run's score is a verdict: an open run's is the score so far, and a
// failed or cancelled run stopped before its test ended.
function runScore(run) {
  if (run.status === "finished") return String(run.score);
  const note = ["created", "running"].includes(run.status) ? "so far" : "no verdict";
  return h("span", { class: "muted" }, String(run.score), h("span", { class: "note" }, ` ${note}`));
}

function summarySection(projectId, summary) {
  const flagged = summary.totals.runs_flagged;
  const flagLink = (flag) =>
    h(
      "a",
      {
        href: `#/projects/${projectId}?flag=${flag}`,
        "aria-label": `${formatNumber(flagged[flag])} runs flagged ${FLAG_LABELS[flag].toLowerCase()}: list them`,
      },
      formatNumber(flagged[flag]),
    );
  return h(
    "section",
    { "aria-labelledby": "summary-title" },
    h("h2", { id: "summary-title" }, "Reliability"),
    h(
      "dl",
      { class: "tiles" },
      tile(
        "Latest score",
        summary.latest
          ? [
              h("span", { class: "score" }, String(summary.latest.score)),
              " ",
              gradeBadge(summary.latest.grade, summary.latest.score),
            ]
          : "–",
      ),
      tile(
        `Average of the last ${summary.final_runs} finished runs`,
        summary.average_score === null
          ? "–"
          : [
              h("span", { class: "score" }, String(summary.average_score)),
              " ",
              gradeBadge(summary.average_grade),
            ],
      ),
      tile("Runs", formatNumber(summary.totals.runs)),
      tile(`${FLAG_LABELS.data_loss} flagged`, flagLink("data_loss")),
      tile(`${FLAG_LABELS.duplicate} flagged`, flagLink("duplicate")),
      tile(`${FLAG_LABELS.timeout} flagged`, flagLink("timeout")),
      tile(`${FLAG_LABELS.recovery} flagged`, flagLink("recovery")),
    ),
    trendChart(summary.trend),
  );
}

function select(id, name, label, options, current) {
  return h(
    "p",
    { class: "field inline" },
    h("label", { for: id }, label),
    h(
      "select",
      { id, name },
      options.map(([value, text]) => h("option", { value, selected: value === current }, text)),
    ),
  );
}

function runsSection(projectId, filters, runs, meta) {
  const href = (changes) => hashAddress(`/projects/${projectId}`, { ...filters, ...changes });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter runs" },
    select(
      "filter-status",
      "status",
      "Status",
      [["", "Any status"], ...STATUSES.map((s) => [s, s])],
      filters.status,
    ),
    select(
      "filter-flag",
      "flag",
      "Risk flag",
      [["", "Any or none"], ...Object.entries(FLAG_LABELS)],
      filters.flag,
    ),
    h("button", { type: "submit", class: "button" }, "Apply"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const { status, flag } = formValues(form);
    window.location.hash = href({ status, flag, offset: "" });
  });
  const rows = runs.map((run) =>
    h(
      "tr",
      {},
      h("td", {}, statusBadge(run.status)),
      h("th", { scope: "row" }, h("a", { href: `#/runs/${run.id}` }, run.scenario)),
      h("td", { class: "target" }, h("span", { class: "method" }, run.method), " ", run.target_url),
      h("td", {}, timeElement(run.started_at ?? run.created_at)),
      h("td", {}, run.started_at ? formatDuration(run.started_at, run.finished_at) : "–"),
      h("td", { class: "number" }, runScore(run)),
      h("td", {}, gradeBadge(run.grade, run.score, run.status !== "finished")),
      h("td", {}, flagChips(run.risks)),
    ),
  );
  const filtered = filters.status || filters.flag;
  return h(
    "section",
    { "aria-labelledby": "runs-title" },
    h("h2", { id: "runs-title" }, "Runs"),
    form,
    runs.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "runs" },
            h("caption", { class: "visually-hidden" }, "Runs of this project, newest first"),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                ["Status", "Scenario", "Target", "Started", "Duration", "Score", "Grade", "Flags"].map(
                  (name) => h("th", { scope: "col" }, name),
                ),
              ),
            ),
            h("tbody", {}, rows),
          ),
        )
      : emptyListing(
          meta,
          (offset) => href({ offset: String(offset) }),
          filtered
            ? "No run matches these filters."
            : "No runs yet. Point an agent at your API with this project's key to start one.",
          "runs",
        ),
    meta.total > meta.limit &&
      runs.length > 0 &&
      pager(meta, (offset) => href({ offset: String(offset) }), "runs"),
  );
}

function keyPanel(agentWithKey) {
  const input = h("input", {
    id: "new-key",
    readonly: true,
    value: agentWithKey.api_key,
    class: "key",
    spellcheck: "false",
  });
  const copied = h("span", { role: "status", class: "muted" });
  const copy = h("button", { type: "button", class: "button" }, "Copy key");
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      copied.textContent = "Copied.";
    } catch {
      copied.textContent = "Copying was refused by the browser; the key is selected, press Ctrl+C.";
    }
  });
  return h(
    "div",
    { class: "key-panel", role: "alert" },
    h("p", {}, h("strong", {}, `Key of agent “${agentWithKey.agent.name}”. `), agentWithKey.api_key_warning),
    h("p", { class: "field" }, h("label", { for: "new-key" }, "Agent key"), input),
    h("p", {}, copy, " ", copied),
  );
}

async function agentsSection(projectId) {
  const section = h(
    "section",
    { "aria-labelledby": "agents-title" },
    h("h2", { id: "agents-title" }, "Agents"),
  );
  const reveal = h("div");
  const list = h("div");
  const errors = h("div");

  async function refresh() {
    const { data } = await api("/api/agents", { query: { project_id: projectId, limit: 100 } });
    list.replaceChildren(
      data.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "agents" },
              h("caption", { class: "visually-hidden" }, "Agents of this project"),
              h(
                "thead",
                {},
                h(
                  "tr",
                  {},
                  ["Name", "Id", "Last seen", "Created", "Key"].map((name) =>
                    h("th", { scope: "col" }, name),
                  ),
                ),
              ),
              h("tbody", {}, data.map(agentRow)),
            ),
          )
        : h("p", { class: "empty" }, "No agents yet. Create one to get a key for the agent."),
    );
  }

  async function act(work) {
    errors.replaceChildren();
    try {
      await work();
      await refresh();
    } catch (error) {
      errors.replaceChildren(errorBox(error));
    }
  }

  function agentRow(agent) {
    const rotate = h("button", { type: "button", class: "button" }, "Rotate key");
    rotate.addEventListener("click", () => {
      if (
        !window.confirm(
          `Rotate the key of “${plainText(agent.name)}”? Its current key stops working at once.`,
        )
      )
        return;
      act(async () => {
        const { data } = await api(`/api/agents/${agent.id}/rotate-key`, { method: "POST" });
        reveal.replaceChildren(keyPanel(data));
        reveal.querySelector("input").focus();
      });
    });
    const remove = h("button", { type: "button", class: "button danger" }, "Delete");
    remove.addEventListener("click", () => {
      if (!window.confirm(`Delete agent “${plainText(agent.name)}”? Its key stops working; its runs stay.`))
        return;
      act(async () => {
        await api(`/api/agents/${agent.id}`, { method: "DELETE" });
        reveal.replaceChildren();
      });
    });
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, agent.name),
      h("td", {}, h("code", {}, agent.id)),
      h("td", {}, timeElement(agent.last_seen_at)),
      h("td", {}, timeElement(agent.created_at)),
      h("td", { class: "actions" }, rotate, " ", remove),
    );
  }

  const form = h(
    "form",
    { class: "filters", "aria-label": "Create an agent" },
    h(
      "p",
      { class: "field inline" },
      h("label", { for: "agent-name" }, "New agent name"),
      h("input", { id: "agent-name", name: "name", required: true, minlength: 2, maxlength: 120 }),
    ),
    h("button", { type: "submit", class: "button primary" }, "Create agent"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(async () => {
      const { data } = await api(`/api/projects/${projectId}/agents`, {
        method: "POST",
        body: formValues(form),
      });
      form.reset();
      reveal.replaceChildren(keyPanel(data));
      reveal.querySelector("input").focus();
    });
  });
  await refresh();
  section.append(errors, reveal, list, form);
  return section;
}

export async function projectPage(main, { params, query }) {
  const projectId = params[0];
  const filters = {
    status: STATUSES.includes(query.get("status")) ? query.get("status") : "",
    flag: Object.hasOwn(FLAG_LABELS, query.get("flag") ?? "") ? query.get("flag") : "",
    offset: String(offsetParam(query)),
  };
  const [project, summary, runs, agents] = await Promise.all([
    api(`/api/projects/${projectId}`),
    api(`/api/projects/${projectId}/scores`, { query: { last: TREND_RUNS } }),
    api("/api/runs", { query: { project_id: projectId, limit: RUNS_PAGE, ...filters } }),
    agentsSection(projectId),
  ]);
  document.title = `${plainText(project.data.name)} · Softadastra Cloud`;
  fill(
    main,
    h(
      "nav",
      { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("a", { href: "#/projects" }, "Projects"),
      " / ",
      userText(project.data.name),
    ),
    h("h1", {}, userText(project.data.name)),
    project.data.description && h("p", {}, project.data.description),
    project.data.base_url && h("p", { class: "muted" }, "API under test: ", project.data.base_url),
    summarySection(projectId, summary.data),
    runsSection(projectId, filters, runs.data, runs.meta),
    agents,
    settingsSection(project.data),
  );
}

// Rename or describe the project, or delete it with everything it holds.
function settingsSection(project) {
  const errors = h("div");
  const field = (id, name, label, attributes = {}) =>
    h(
      "p",
      { class: "field" },
      h("label", { for: id }, label),
      h("input", { id, name, value: project[name], ...attributes }),
    );
  const form = h(
    "form",
    { class: "stack" },
    field("settings-name", "name", "Name", { required: true, minlength: 2, maxlength: 120 }),
    field("settings-base-url", "base_url", "Base URL of the API under test", {
      type: "url",
      maxlength: 2048,
    }),
    field("settings-description", "description", "Description", { maxlength: 500 }),
    h("p", {}, h("button", { type: "submit", class: "button primary" }, "Save changes")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.replaceChildren();
    try {
      await api(`/api/projects/${project.id}`, { method: "PATCH", body: formValues(form) });
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (error) {
      errors.replaceChildren(errorBox(error));
    }
  });
  const remove = h("button", { type: "button", class: "button danger" }, "Delete this project");
  remove.addEventListener("click", async () => {
    const question = `Delete project “${plainText(project.name)}” with all its runs, events, reports and agents? This cannot be undone.`;
    if (!window.confirm(question)) return;
    errors.replaceChildren();
    try {
      await api(`/api/projects/${project.id}`, { method: "DELETE" });
      window.location.hash = "#/projects";
    } catch (error) {
      errors.replaceChildren(errorBox(error));
    }
  });
  return h(
    "details",
    { class: "card settings" },
    h("summary", {}, "Project settings"),
    errors,
    form,
    h("p", {}, remove),
  );
}
