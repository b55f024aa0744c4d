// The dashboard shell: routes on the URL hash, the account menu, and page changes.

import { ApiError, api, session } from "./api.js";
import { signInPage, signUpPage } from "./accounts.js";
import { errorBox, h } from "./dom.js";
import { projectPage } from "./project.js";
import { projectsPage } from "./projects.js";
import { runPage } from "./run.js";

const ROUTES = [
  { pattern: /^\/signin$/, page: signInPage, public: true },
  { pattern: /^\/signup$/, page: signUpPage, public: true },
  { pattern: /^\/projects$/, page: projectsPage },
  { pattern: /^\/projects\/(prj_[0-9a-f]{32})$/, page: projectPage },
  { pattern: /^\/runs\/(run_[0-9a-f]{32})$/, page: runPage },
];

const main = document.getElementById("main");
const account = document.getElementById("account");
let leaving = [];
let generation = 0;
let user = null;

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/projects";
  const [path, search = ""] = raw.split("?", 2);
  return { path, query: new URLSearchParams(search) };
}

async function renderAccount() {
  if (!session.token) {
    user = null;
    account.replaceChildren(
      h("a", { href: "#/signin" }, "Sign in"),
      " ",
      h("a", { href: "#/signup", class: "button" }, "Create account"),
    );
    return;
  }
  if (!user) {
    try {
      user = (await api("/api/auth/me")).data;
    } catch {
      return;
    }
  }
  const signOut = h("button", { type: "button", class: "button" }, "Sign out");
  signOut.addEventListener("click", () => {
    session.clear();
    user = null;
    renderAccount();
    window.location.hash = "#/signin";
  });
  account.replaceChildren(h("span", { class: "who" }, user.email), " ", signOut);
}

async function route() {
  for (const stop of leaving) stop();
  leaving = [];
  const current = ++generation;

  const { path, query } = parseHash();
  const match = ROUTES.map((candidate) => [candidate, candidate.pattern.exec(path)]).find(
    ([, found]) => found,
  );
  if (!match) {
    document.title = "Page not found · Softadastra Cloud";
    main.replaceChildren(
      h("h1", {}, "Page not found"),
      h("p", {}, "This address matches no page. ", h("a", { href: "#/projects" }, "Go to your projects")),
    );
    return;
  }
  const [found, groups] = match;
  if (!found.public && !session.token) {
    const next = encodeURIComponent(`#${path}${query.size ? `?${query}` : ""}`);
    window.location.replace(`#/signin?next=${next}`);
    return;
  }
  if (found.public && session.token) {
    window.location.replace("#/projects");
    return;
  }

  main.setAttribute("aria-busy", "true");
  // Pages draw into a detached element, swapped in whole, so a slow page never
  // overwrites the page the user moved on to.
  const target = h("div");
  try {
    await found.page(target, { params: groups.slice(1), query, onLeave: (stop) => leaving.push(stop) });
  } catch (error) {
    const notFound = error instanceof ApiError && error.status === 404;
    document.title = `${notFound ? "Not found" : "Error"} · Softadastra Cloud`;
    target.replaceChildren(
      h("h1", {}, notFound ? "Not found" : "Something went wrong"),
      errorBox(error),
      h("p", {}, h("a", { href: "#/projects" }, "Back to your projects")),
    );
  }
  if (current !== generation) return;

  main.replaceChildren(...target.childNodes);
  main.removeAttribute("aria-busy");
  window.scrollTo(0, 0);
  // A page may name the heading the user came for (a filtered list, say) with
  // data-focus; otherwise the page title takes the focus.
  const heading = main.querySelector("[data-focus]") ?? main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
    if (heading.matches("[data-focus]")) heading.scrollIntoView({ block: "start" });
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("signedin", renderAccount);
window.addEventListener("signedout", () => {
  user = null;
  renderAccount();
  document.getElementById("notice").textContent = "Your session ended; sign in again.";
  window.location.hash = "#/signin";
});

renderAccount();
route();
