// Small helpers to build elements and format values. Text always goes in as text
// nodes, never as HTML, so nothing an agent sent can run in the page.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  setAttributes(element, attributes);
  appendChildren(element, children);
  return element;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  setAttributes(element, attributes);
  appendChildren(element, children);
  return element;
}

// Replace an element's children; like h(), skips null, undefined and false.
export function fill(element, ...children) {
  element.replaceChildren();
  appendChildren(element, children);
  return element;
}

function setAttributes(element, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      element.setAttribute("class", value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

function appendChildren(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

const NUMBER = new Intl.NumberFormat("en");

export function formatNumber(value) {
  return value === null || value === undefined ? "–" : NUMBER.format(value);
}

// RFC 3339 UTC from the API, shown as "2026-12-04 19:30:12 UTC" in a <time>.
export function timeElement(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  const text = iso
    .replace("T", " ")
    .replace(/\.\d+/, "")
    .replace(/(Z|\+00:00)$/, " UTC");
  return h("time", { datetime: iso }, text);
}

export function formatDuration(startIso, endIso) {
  if (!startIso) return "–";
  const end = endIso ? Date.parse(endIso) : Date.now();
  let seconds = Math.max(0, Math.round((end - Date.parse(startIso)) / 1000));
  if (seconds < 60) return `${seconds} s`;
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  seconds %= 60;
  if (hours) return `${hours} h ${minutes} min`;
  return `${minutes} min ${seconds} s`;
}

export const FLAG_LABELS = {
  data_loss: "Data loss",
  duplicate: "Duplicates",
  timeout: "Timeouts",
  recovery: "Failed recovery",
};

// A grade in its colour; `provisional` greys it out for a run that has no verdict.
export function gradeBadge(grade, score, provisional = false) {
  const label = score === undefined ? `Grade ${grade}` : `Score ${score}, grade ${grade}`;
  const colour = provisional ? "grade-provisional" : `grade-${grade}`;
  return h("span", { class: `grade ${colour}`, title: label }, grade);
}

export function flagChips(risks) {
  const set = Object.entries(risks ?? {}).filter(([, on]) => on);
  if (!set.length) return h("span", { class: "muted" }, "none");
  return h(
    "ul",
    { class: "chips", "aria-label": "Risk flags" },
    set.map(([flag]) => h("li", { class: `chip chip-${flag}` }, FLAG_LABELS[flag] ?? flag)),
  );
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

// Text without bidirectional control characters, for places that cannot isolate it
// (window titles, confirm dialogs): a right-to-left override would flip what follows.
export function plainText(text) {
  return String(text).replace(/[\u202a-\u202e\u2066-\u2069]/g, "");
}

// A name typed by a user, isolated so that its writing direction stays inside it.
export function userText(text) {
  return h("bdi", {}, text);
}

// The `offset` of a page from the URL: a whole number from 0, at most 2^53 - 1, so
// that it prints without an exponent.
export function offsetParam(query) {
  const value = Number.parseInt(query.get("offset") ?? "0", 10);
  if (!Number.isFinite(value) || value < 0) return 0;
  return Math.min(value, Number.MAX_SAFE_INTEGER);
}

// The empty state of a listing: nothing at all, or nothing on a page past the end.
export function emptyListing(meta, hrefFor, nothingText, noun) {
  if (meta.total > 0) {
    return h(
      "p",
      { class: "empty" },
      `This page is past the end: there are ${formatNumber(meta.total)} ${noun}. `,
      h("a", { href: hrefFor(0) }, "Go to the first page"),
    );
  }
  return h("p", { class: "empty" }, nothingText);
}

// A hash address of `path` with the query parameters `values`, leaving out empty
// values and an offset of 0.
export function hashAddress(path, values) {
  const params = new URLSearchParams(values);
  for (const [name, value] of [...params]) {
    if (!value || value === "0") params.delete(name);
  }
  const text = params.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

// A form's values by input name, strings trimmed.
export function formValues(form) {
  const values = {};
  for (const [name, value] of new FormData(form)) values[name] = String(value).trim();
  return values;
}

// "Previous / Next" links for a listing's meta; `hrefFor(offset)` builds each link.
export function pager(meta, hrefFor, noun) {
  const { total, limit, offset } = meta;
  const first = total === 0 ? 0 : offset + 1;
  const last = Math.min(offset + limit, total);
  const page = Math.floor(offset / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));
  const link = (label, target, enabled, rel) =>
    enabled
      ? h("a", { href: hrefFor(target), rel, class: "button" }, label)
      : h("span", { class: "button disabled", "aria-disabled": "true" }, label);
  return h(
    "nav",
    { class: "pager", "aria-label": `${noun} pages` },
    h(
      "span",
      {},
      `${formatNumber(first)}–${formatNumber(last)} of ${formatNumber(total)} ${noun} · page ${formatNumber(page)} of ${formatNumber(pages)}`,
    ),
    h(
      "span",
      { class: "pager-links" },
      link("First", 0, offset > 0),
      link("Previous", Math.max(0, offset - limit), offset > 0, "prev"),
      link("Next", offset + limit, offset + limit < total, "next"),
      link("Last", (pages - 1) * limit, offset + limit < total),
    ),
  );
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message);
}
