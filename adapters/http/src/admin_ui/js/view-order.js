// One order: its figures, items, payments, refunds and history in plain words (the timeline is
// worded by the server, in the UI's language). Admins also get the refund form.
import { api, session } from "./api.js";
import { fill, h, message, table } from "./dom.js";
import { beijingTime, yuan } from "./format.js";
import { lang, t } from "./i18n.js";
import { refundForm } from "./refund.js";
import { statusBadge } from "./view-orders.js";

function channel(name) {
  return name ? t(`channel_${name}`) : "—";
}

function facts(order) {
  const rows = [
    ["status", statusBadge(order.status)],
    ["total", yuan(order.total_fen)],
    ["paid", yuan(order.paid_fen)],
    ["refunded", yuan(order.refunded_fen)],
    ["refundable", yuan(order.refundable_fen)],
    ["channel", channel(order.channel)],
    ["transaction_id", order.transaction_id || "—"],
    ["openid", order.openid],
    ["created_at", beijingTime(order.created_at)],
    ["paid_at", order.paid_at ? beijingTime(order.paid_at) : "—"],
    ["note", order.note || null],
    ["close_reason", order.close_reason ? t(`close_reason_${order.close_reason}`) : null],
  ];
  return h(
    "dl.facts",
    { "data-testid": "order-facts" },
    rows.filter(([, value]) => value !== null).map(([key, value]) => h("div", { "data-field": key }, h("dt", {}, t(key)), h("dd", {}, value))),
  );
}

function items(order) {
  return table(
    [t("product"), { text: t("unit_price"), class: "money" }, { text: t("quantity"), class: "money" }, { text: t("line_total"), class: "money" }],
    order.items.map((line) =>
      h(
        "tr",
        {},
        h("td", { "data-label": t("product") }, h("span", {}, line.name, h("small.muted", {}, ` ${line.sku}`))),
        h("td.money", { "data-label": t("unit_price") }, yuan(line.unit_price_fen)),
        h("td.money", { "data-label": t("quantity") }, String(line.quantity)),
        h("td.money", { "data-label": t("line_total") }, yuan(line.line_total_fen)),
      ),
    ),
    { class: "stack-on-phone" },
  );
}

function payments(order) {
  if (!order.payments.length) return h("p.empty", {}, t("no_payments"));
  return table(
    [t("transaction_id"), t("channel"), { text: t("amount"), class: "money" }, t("paid_at"), t("matched")],
    order.payments.map((p) =>
      h(
        "tr",
        {},
        h("td", { "data-label": t("transaction_id") }, p.transaction_id),
        h("td", { "data-label": t("channel") }, channel(p.channel)),
        h("td.money", { "data-label": t("amount") }, yuan(p.amount_fen)),
        h("td", { "data-label": t("paid_at") }, beijingTime(p.paid_at)),
        h("td", { "data-label": t("matched") }, p.matched ? t("yes") : t("no_mismatch")),
      ),
    ),
    { class: "stack-on-phone" },
  );
}

function refunds(order) {
  if (!order.refunds.length) return h("p.empty", {}, t("no_refunds"));
  return table(
    [t("out_refund_no"), { text: t("amount"), class: "money" }, t("refund_reason"), t("status"), t("requested_at"), t("finished_at")],
    order.refunds.map((r) =>
      h(
        "tr",
        { "data-refund": r.out_refund_no, "data-status": r.status },
        h("td", { "data-label": t("out_refund_no") }, r.out_refund_no),
        h("td.money", { "data-label": t("amount") }, yuan(r.amount_fen)),
        h("td", { "data-label": t("refund_reason") }, r.reason || "—"),
        h("td", { "data-label": t("status") }, h(`span.badge.refund-${r.status}`, {}, t(`refund_status_${r.status}`)), r.failure_reason ? h("small.muted", {}, ` ${r.failure_reason}`) : null),
        h("td", { "data-label": t("requested_at") }, beijingTime(r.requested_at)),
        h("td", { "data-label": t("finished_at") }, r.finished_at ? beijingTime(r.finished_at) : "—"),
      ),
    ),
    { class: "stack-on-phone" },
  );
}

function timeline(items) {
  return h(
    "ol.timeline",
    { "data-testid": "timeline" },
    items.map((item) =>
      h(
        "li",
        { "data-type": item.type },
        h("time", { datetime: item.at }, item.at_beijing),
        h(
          "span.text",
          {},
          item.text,
          // Who did it, by name (the customer's phone or openid, the staff username, WeChat Pay,
          // the poller, expiry): support answers "who refunded this?" from here.
          item.actor ? h("span.actor", {}, item.actor.name) : null,
        ),
      ),
    ),
  );
}

function section(title, testid, ...content) {
  return h("section.card", { "data-testid": testid }, h("h2", {}, title), ...content);
}

export async function render(root, ctx) {
  const id = encodeURIComponent(ctx.params.id);
  // Draws the page from fresh data; the refund form calls it again as its refund moves on, so
  // the lists never show a stale state.
  const draw = async (note) => {
    const [order, history] = await Promise.all([
      api(`/admin/orders/${id}`),
      api(`/admin/orders/${id}/timeline?lang=${encodeURIComponent(lang())}`),
    ]);
    if (!ctx.isCurrent()) return;
    const canRefund = session.isAdmin && order.refundable_fen > 0;
    fill(
      root,
      h("p.back", {}, h("a", { href: "#/orders" }, t("back_to_orders"))),
      h("div.page-head", {}, h("h1", {}, t("order_title", { no: order.out_trade_no }))),
      note ? message(note.text, note.kind) : null,
      section(t("summary"), "order-summary", facts(order)),
      section(t("items"), "order-items", items(order)),
      section(t("payments"), "order-payments", payments(order)),
      section(t("refunds"), "order-refunds", refunds(order)),
      canRefund ? refundForm(order, { onChanged: draw, isCurrent: ctx.isCurrent }) : null,
      section(t("timeline"), "order-timeline", timeline(history.items)),
    );
  };
  await draw(null);
}
