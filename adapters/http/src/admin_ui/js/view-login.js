// The login page. The token goes to sessionStorage (gone when the tab closes); who is logged in
// and their role come from GET /admin/me once the app renders.
import { api, errorText, session } from "./api.js";
import { field, fill, h, message } from "./dom.js";
import { t } from "./i18n.js";

export function render(root, { note, done }) {
  const status = h("div.form-status");
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button.primary", { type: "submit" }, t("login"));

  async function onsubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    fill(status);
    try {
      const answer = await api("/admin/login", {
        method: "POST",
        body: { username: username.value.trim(), password: password.value },
      });
      session.token = answer.token;
      session.me = null;
      done();
    } catch (error) {
      fill(status, message(errorText(error)));
      password.select();
    } finally {
      submit.disabled = false;
    }
  }

  fill(
    root,
    h(
      "section.card.login",
      { "aria-labelledby": "login-title" },
      h("h1", { id: "login-title" }, t("login_title")),
      note ? message(t(note), note === "logged_out" ? "info" : "warning") : null,
      h("form.stack", { onsubmit, "data-testid": "login-form" }, field(t("username"), username), field(t("password"), password), submit, status),
    ),
  );
  username.focus();
}
