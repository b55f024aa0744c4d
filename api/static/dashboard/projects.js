// The projects page: every project with its latest score, trend and flagged runs.

import { api } from "./api.js";
import { sparkline } from "./charts.js";
import {
  emptyListing,
  errorBox,
  fill,
  formValues,
  formatNumber,
  gradeBadge,
  h,
  offsetParam,
  pager,
  userText,
} from "./dom.js";

const PAGE_SIZE = 12;
const TREND_RUNS = 20;

function createProjectForm(onCreated) {
  const errors = h("div");
  const form = h(
    "form",
    { class: "stack" },
    errors,
    h(
      "p",
      { class: "field" },
      h("label", { for: "project-name" }, "Name"),
      h("input", { id: "project-name", name: "name", required: true, minlength: 2, maxlength: 120 }),
    ),
    h(
      "p",
      { class: "field" },
      h("label", { for: "project-base-url" }, "Base URL of the API under test (optional)"),
      h("input", {
        id: "project-base-url",
        name: "base_url",
        type: "url",
        placeholder: "https://api.example.com",
        maxlength: 2048,
      }),
    ),
    h(
      "p",
      { class: "field" },
      h("label", { for: "project-description" }, "Description (optional)"),
      h("textarea", { id: "project-description", name: "description", rows: 2, maxlength: 500 }),
    ),
    h("p", {}, h("button", { type: "submit", class: "button primary" }, "Create project")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.replaceChildren();
    try {
      const { data } = await api("/api/projects", { method: "POST", body: formValues(form) });
      onCreated(data);
    } catch (error) {
      errors.replaceChildren(errorBox(error));
    }
  });
  return h("details", { class: "card" }, h("summary", {}, "Create a project"), form);
}

function summaryBlock(summary) {
  const latest = summary.latest;
  const flagged = summary.totals.runs_flagged;
  return [
    h(
      "div",
      { class: "latest" },
      latest
        ? [
            h("span", { class: "score" }, String(latest.score)),
            gradeBadge(latest.grade, latest.score),
            h("span", { class: "muted" }, "latest"),
          ]
        : h("span", { class: "muted" }, "No finished run yet"),
    ),
    sparkline(summary.trend),
    h(
      "dl",
      { class: "counts" },
      h("div", {}, h("dt", {}, "Runs"), h("dd", {}, formatNumber(summary.totals.runs))),
      h(
        "div",
        {},
        h("dt", {}, "Data loss"),
        h("dd", { class: flagged.data_loss ? "bad" : "" }, formatNumber(flagged.data_loss)),
      ),
      h(
        "div",
        {},
        h("dt", {}, "Duplicates"),
        h("dd", { class: flagged.duplicate ? "bad" : "" }, formatNumber(flagged.duplicate)),
      ),
    ),
  ];
}

function projectCard(project) {
  const body = h(
    "div",
    { class: "summary", "aria-busy": "true" },
    h("p", { class: "muted" }, "Loading scores…"),
  );
  api(`/api/projects/${project.id}/scores`, { query: { last: TREND_RUNS } })
    .then(({ data }) => body.replaceChildren(...summaryBlock(data)))
    .catch((error) => body.replaceChildren(errorBox(error)))
    .finally(() => body.removeAttribute("aria-busy"));
  return h(
    "li",
    { class: "card project-card" },
    h("h2", {}, h("a", { href: `#/projects/${project.id}` }, userText(project.name))),
    h("p", { class: "muted slug" }, project.slug, project.base_url ? ` · ${project.base_url}` : ""),
    body,
  );
}

export async function projectsPage(main, { query }) {
  document.title = "Projects · Softadastra Cloud";
  const offset = offsetParam(query);
  const { data, meta } = await api("/api/projects", { query: { limit: PAGE_SIZE, offset } });
  const created = (project) => {
    window.location.hash = `#/projects/${project.id}`;
  };
  fill(
    main,
    h("h1", {}, "Projects"),
    createProjectForm(created),
    data.length
      ? h("ul", { class: "grid", "aria-label": "Projects" }, data.map(projectCard))
      : emptyListing(
          meta,
          (next) => `#/projects?offset=${next}`,
          "No projects yet. Create one, add an agent to it, and its runs will appear here.",
          "projects",
        ),
    meta.total > PAGE_SIZE && pager(meta, (next) => `#/projects?offset=${next}`, "projects"),
  );
}
