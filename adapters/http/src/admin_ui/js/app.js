// The back-office single-page app: the top bar, and a hash router that renders one view at a
// time into <main>. Routes (the query part keeps a view's filters, so reload and Back work):
//   #/login  #/orders?status=…&page=…  #/orders/{id}  #/review  #/report?from=…&to=…
//   #/reconciliation?date=…  #/catalogue  #/staff (admins)
import { api, errorText, session } from "./api.js";
import { fill, h, message } from "./dom.js";
import { lang, setLang, t } from "./i18n.js";
import * as login from "./view-login.js";
import * as orders from "./view-orders.js";
import * as order from "./view-order.js";
import * as review from "./view-review.js";
import * as report from "./view-report.js";
import * as reconciliation from "./view-reconciliation.js";
import * as catalogue from "./view-catalogue.js";
import * as staff from "./view-staff.js";

const NAV = [
  { path: "/orders", label: "nav_orders" },
  { path: "/review", label: "nav_review" },
  { path: "/report", label: "nav_report" },
  { path: "/reconciliation", label: "nav_reconciliation" },
  { path: "/catalogue", label: "nav_catalogue" },
  { path: "/staff", label: "nav_staff", adminOnly: true },
];

/** Which view a path shows, and its parameters. */
function route(path) {
  const match = /^\/orders\/([^/]+)$/.exec(path);
  if (match) return { view: order, params: { id: decodeURIComponent(match[1]) }, section: "/orders" };
  const views = { "/orders": orders, "/review": review, "/report": report, "/reconciliation": reconciliation, "/catalogue": catalogue, "/staff": staff };
  if (views[path]) return { view: views[path], params: {}, section: path };
  return null;
}

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/orders";
  const [path, query = ""] = hash.split("?");
  return { path, query: new URLSearchParams(query) };
}

/** Goes to `path` (with `query`, an object or URLSearchParams); renders through hashchange. */
export function navigate(path, query) {
  const search = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null)).toString() : "";
  const target = `#${path}${search ? `?${search}` : ""}`;
  if (location.hash === target) render();
  else location.hash = target;
}

// A note for the login page ("session expired", "logged out"), shown once.
let loginNote = null;

session.onSessionEnd = () => {
  loginNote = "session_expired";
  navigate("/login");
};

function logout() {
  session.token = null;
  session.me = null;
  loginNote = "logged_out";
  navigate("/login");
}

function topBar(section) {
  const bar = document.getElementById("topbar");
  const other = lang() === "zh-CN" ? "en" : "zh-CN";
  const switchLang = h(
    "button.link-button",
    { type: "button", lang: other, "data-testid": "lang-switch", onclick: () => { setLang(other); render(); } },
    t("switch_language"),
  );
  const nav = session.me
    ? h(
        "nav.nav",
        { "aria-label": t("nav_label") },
        NAV.filter((item) => !item.adminOnly || session.isAdmin).map((item) =>
          h("a", { href: `#${item.path}`, "aria-current": item.path === section ? "page" : null }, t(item.label)),
        ),
      )
    : null;
  const user = session.me
    ? h(
        "div.user",
        {},
        h("span.who", { "data-testid": "who" }, t("who", { username: session.me.username, role: t(`role_${session.me.role}`) })),
        h("button.link-button", { type: "button", "data-testid": "logout", onclick: logout }, t("logout")),
      )
    : null;
  fill(bar, h("a.brand", { href: "#/orders" }, t("brand")), nav, h("div.topbar-end", {}, switchLang, user));
}

// Bumped on every render: a view's late answers (a poll, a slow fetch) check it before drawing.
let generation = 0;

async function render() {
  const current = ++generation;
  const { path, query } = parseHash();
  const main = document.getElementById("view");
  document.title = t("brand");

  if (!session.token) {
    topBar(null);
    if (path !== "/login") return navigate("/login");
    const note = loginNote;
    loginNote = null;
    return login.render(main, { note, done: () => navigate("/orders") });
  }
  if (!session.me) {
    try {
      session.me = await api("/admin/me");
    } catch (error) {
      if (!session.token) return; // the 401 already went to the login page
      topBar(null);
      return fill(main, message(errorText(error)));
    }
    if (current !== generation) return;
  }
  if (path === "/login") return navigate("/orders");
  const found = route(path);
  topBar(found?.section);
  if (!found) return fill(main, message(t("not_found")));
  if (found.view.adminOnly && !session.isAdmin) return fill(main, message(t("admin_only_page")));

  fill(main, h("p.loading", { role: "status" }, t("loading")));
  const ctx = {
    params: found.params,
    query,
    navigate,
    isCurrent: () => current === generation,
  };
  try {
    await found.view.render(main, ctx);
  } catch (error) {
    if (ctx.isCurrent() && session.token) fill(main, message(errorText(error)));
  }
  if (ctx.isCurrent()) main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", render);
render();
