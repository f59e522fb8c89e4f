// Staff accounts (admins only; the API answers 403 to anyone else): list, create, reset a
// password, disable and enable. The server refuses disabling yourself or the last admin.
import { api, errorText, session } from "./api.js";
import { dialog, field, fill, h, message, table } from "./dom.js";
import { beijingTime } from "./format.js";
import { t } from "./i18n.js";

export const adminOnly = true;

function askPassword(username) {
  return dialog((close) => {
    const password = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: "8" });
    return h(
      "form.stack",
      { onsubmit: (event) => { event.preventDefault(); close(password.value); } },
      h("h2", {}, t("reset_password_for", { username })),
      field(t("new_password"), password, t("password_hint")),
      h("p.hint", {}, t("reset_password_effect")),
      h("div.actions", {}, h("button", { type: "button", onclick: () => close(null) }, t("cancel")), h("button.primary", { type: "submit" }, t("reset_password"))),
    );
  });
}

function createForm(onDone) {
  const status = h("div.form-status");
  const username = h("input", { name: "username", autocomplete: "off", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true });
  const role = h("select", { name: "role" }, ["support", "admin"].map((r) => h("option", { value: r }, t(`role_${r}`))));
  const form = h(
    "form.filters",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const created = await api("/admin/staff", { method: "POST", body: { username: username.value.trim(), password: password.value, role: role.value } });
          onDone(t("staff_created", { username: created.username }));
        } catch (error) {
          fill(status, message(errorText(error)));
        }
      },
    },
    field(t("username"), username),
    field(t("password"), password, t("password_hint")),
    field(t("role"), role),
    h("div.actions", {}, h("button.primary", { type: "submit" }, t("create"))),
  );
  return h("section.card", {}, h("h2", {}, t("new_staff")), form, status);
}

export async function render(root, ctx) {
  const draw = async (note) => {
    const { items } = await api("/admin/staff");
    if (!ctx.isCurrent()) return;
    const act = async (work) => {
      try {
        await draw(await work());
      } catch (error) {
        await draw({ text: errorText(error), kind: "error" });
      }
    };
    const rows = items.map((s) => {
      const self = s.username === session.me?.username;
      const reset = h("button", { type: "button", onclick: () => act(async () => {
        const password = await askPassword(s.username);
        if (!password) return null;
        await api(`/admin/staff/${encodeURIComponent(s.username)}/password`, { method: "POST", body: { password } });
        return { text: t("password_reset_done", { username: s.username }), kind: "success" };
      }) }, t("reset_password"));
      const toggle = h("button", { type: "button", disabled: self, onclick: () => act(async () => {
        await api(`/admin/staff/${encodeURIComponent(s.username)}/${s.disabled ? "enable" : "disable"}`, { method: "POST" });
        return { text: t(s.disabled ? "staff_enabled" : "staff_disabled", { username: s.username }), kind: "success" };
      }) }, t(s.disabled ? "enable" : "disable"));
      return h(
        "tr",
        { "data-username": s.username },
        h("td", { "data-label": t("username") }, s.username, self ? h("small.muted", {}, ` ${t("you")}`) : null),
        h("td", { "data-label": t("role") }, t(`role_${s.role}`)),
        h("td", { "data-label": t("status") }, h(`span.badge.${s.disabled ? "off" : "on"}`, {}, t(s.disabled ? "disabled" : "enabled"))),
        h("td", { "data-label": t("created_at") }, beijingTime(s.created_at)),
        h("td", {}, h("div.row-actions", {}, reset, toggle)),
      );
    });
    fill(
      root,
      h("div.page-head", {}, h("h1", {}, t("staff_title"))),
      note ? message(note.text, note.kind) : null,
      createForm((text) => draw({ text, kind: "success" })),
      h("section.card", { "data-testid": "staff-list" }, table([t("username"), t("role"), t("status"), t("created_at"), t("actions")], rows, { class: "stack-on-phone" })),
    );
  };
  await draw(null);
}
