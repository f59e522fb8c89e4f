// Order search: the filters live in the URL (#/orders?status=paid&page=2), so a reload, Back, or
// a language switch shows the same search. Dates are Beijing days, as the API reads them.
import { api, download, errorText } from "./api.js";
import { field, fill, h, message, table } from "./dom.js";
import { beijingTime, yuan } from "./format.js";
import { t } from "./i18n.js";

export const STATUSES = ["pending_payment", "paid", "partially_refunded", "refunded", "closed", "needs_review"];
const FILTERS = ["status", "out_trade_no", "transaction_id", "openid", "from", "to"];
const PER_PAGE = 20;

/** The status as a coloured badge, in words. */
export function statusBadge(status) {
  return h(`span.badge.status-${status}`, {}, t(`status_${status}`));
}

function filterForm(query, navigate) {
  const input = (name, attrs = {}) => h("input", { name, value: query.get(name) || "", ...attrs });
  const status = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, t("any_status")),
    STATUSES.map((s) => h("option", { value: s, selected: query.get("status") === s }, t(`status_${s}`))),
  );
  const form = h(
    "form.filters",
    {
      "data-testid": "order-filters",
      onsubmit: (event) => {
        event.preventDefault();
        const data = new FormData(form);
        navigate("/orders", Object.fromEntries(FILTERS.map((k) => [k, String(data.get(k) || "").trim()])));
      },
    },
    field(t("status"), status),
    field(t("out_trade_no"), input("out_trade_no", { autocomplete: "off" })),
    field(t("transaction_id"), input("transaction_id", { autocomplete: "off" })),
    field(t("openid"), input("openid", { autocomplete: "off" })),
    field(t("from_date"), input("from", { type: "date" })),
    field(t("to_date"), input("to", { type: "date" })),
    h(
      "div.actions",
      {},
      h("button.primary", { type: "submit" }, t("search")),
      h("button", { type: "button", onclick: () => navigate("/orders") }, t("clear")),
    ),
  );
  return form;
}

function orderRows(items) {
  return items.map((o) =>
    h(
      "tr",
      {},
      h("td", { "data-label": t("created_at") }, beijingTime(o.created_at)),
      h("td", { "data-label": t("out_trade_no") }, h("a", { href: `#/orders/${encodeURIComponent(o.id)}` }, o.out_trade_no)),
      h("td", { "data-label": t("status") }, statusBadge(o.status)),
      h("td.money", { "data-label": t("total") }, yuan(o.total_fen)),
      h("td.money", { "data-label": t("paid") }, yuan(o.paid_fen)),
      h("td.money", { "data-label": t("refunded") }, yuan(o.refunded_fen)),
    ),
  );
}

/** Previous/next that stop at the ends: no "next" past the last page. */
function pager(page, totalPages, totalItems, goTo) {
  const last = Math.max(totalPages, 1);
  return h(
    "nav.pager",
    { "aria-label": t("pages") },
    h("button", { type: "button", disabled: page <= 1, onclick: () => goTo(page - 1), "data-testid": "prev-page" }, t("previous")),
    h("span", { role: "status" }, t("page_of", { page, pages: last, total: totalItems })),
    h("button", { type: "button", disabled: page >= last, onclick: () => goTo(page + 1), "data-testid": "next-page" }, t("next")),
  );
}

export async function render(root, { query, navigate, isCurrent }) {
  const filters = new URLSearchParams();
  for (const key of FILTERS) if (query.get(key)) filters.set(key, query.get(key));
  const page = Math.max(1, Number.parseInt(query.get("page"), 10) || 1);

  const exportStatus = h("div.form-status");
  const exportButton = h("button", { type: "button", "data-testid": "export-csv" }, t("export_csv"));
  exportButton.addEventListener("click", async () => {
    exportButton.disabled = true;
    fill(exportStatus);
    try {
      await download(`/admin/orders.csv?${filters}`, "orders.csv");
    } catch (error) {
      fill(exportStatus, message(errorText(error)));
    } finally {
      exportButton.disabled = false;
    }
  });

  const results = h("div.results");
  fill(
    root,
    h("div.page-head", {}, h("h1", {}, t("orders_title")), exportButton),
    exportStatus,
    h("section.card", {}, filterForm(query, navigate)),
    results,
  );

  let body;
  try {
    body = await api(`/admin/orders?${filters}&page=${page}&per_page=${PER_PAGE}`);
  } catch (error) {
    if (isCurrent()) fill(results, message(errorText(error)));
    return;
  }
  if (!isCurrent()) return;
  const goTo = (p) => navigate("/orders", { ...Object.fromEntries(filters), page: p });
  if (body.items.length === 0) {
    fill(results, h("p.empty", {}, t("no_orders")), page > 1 ? pager(page, body.total_pages, body.total_items, goTo) : null);
    return;
  }
  fill(
    results,
    table(
      [t("created_at"), t("out_trade_no"), t("status"), { text: t("total"), class: "money" }, { text: t("paid"), class: "money" }, { text: t("refunded"), class: "money" }],
      orderRows(body.items),
      { class: "orders stack-on-phone" },
    ),
    pager(body.page, body.total_pages, body.total_items, goTo),
  );
}
