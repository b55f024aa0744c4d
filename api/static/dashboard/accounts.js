// Sign-in and sign-up pages.

import { api, session } from "./api.js";
import { errorBox, fill, formValues, h } from "./dom.js";

function field(label, attributes) {
  const id = `field-${attributes.name}`;
  return h("p", { class: "field" }, h("label", { for: id }, label), h("input", { id, ...attributes }));
}

function authForm({ title, fields, submitLabel, onSubmit, footer }) {
  const errors = h("div");
  const form = h(
    "form",
    { class: "card narrow", novalidate: true },
    h("h1", {}, title),
    errors,
    fields,
    h("p", {}, h("button", { type: "submit", class: "button primary" }, submitLabel)),
    footer,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errors.replaceChildren();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await onSubmit(formValues(form));
    } catch (error) {
      errors.replaceChildren(errorBox(error));
      form.querySelector("input")?.focus();
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function signedIn(token, next) {
  session.save(token);
  window.dispatchEvent(new Event("signedin"));
  window.location.hash = next || "#/projects";
}

export function signInPage(main, { query }) {
  document.title = "Sign in · Softadastra Cloud";
  fill(
    main,
    authForm({
      title: "Sign in",
      fields: [
        field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
        field("Password", {
          name: "password",
          type: "password",
          autocomplete: "current-password",
          required: true,
        }),
      ],
      submitLabel: "Sign in",
      async onSubmit({ email, password }) {
        const { data } = await api("/api/auth/login", { method: "POST", body: { email, password } });
        signedIn(data.token, query.get("next"));
      },
      footer: h("p", {}, "No account yet? ", h("a", { href: "#/signup" }, "Create one")),
    }),
  );
}

export function signUpPage(main) {
  document.title = "Create an account · Softadastra Cloud";
  fill(
    main,
    authForm({
      title: "Create an account",
      fields: [
        field("Name", { name: "name", autocomplete: "name", required: true, minlength: 2, maxlength: 120 }),
        field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
        field("Password (at least 8 characters)", {
          name: "password",
          type: "password",
          autocomplete: "new-password",
          required: true,
          minlength: 8,
        }),
      ],
      submitLabel: "Create account",
      async onSubmit({ name, email, password }) {
        const { data } = await api("/api/auth/register", { method: "POST", body: { name, email, password } });
        signedIn(data.token);
      },
      footer: h("p", {}, "Already have an account? ", h("a", { href: "#/signin" }, "Sign in")),
    }),
  );
}
