// The review queue: orders whose money needs a person's decision, longest waiting first, each
// reason in words. Admins resolve them here; support staff only read.
import { api, errorText, session } from "./api.js";
import { field, fill, h, message } from "./dom.js";
import { beijingTime, yuan } from "./format.js";
import { t } from "./i18n.js";
import { statusBadge } from "./view-orders.js";

const RESOLUTIONS = ["accepted", "refunded", "other"];

/** One reason in the UI's language, from its itemised details; the server's English words if the kind is new. */
function reasonText(reason) {
  const money = (fen) => (fen === undefined ? "" : yuan(fen));
  const key = `reason_${reason.kind}`;
  const params = {
    expected: money(reason.expected_fen),
    received: money(reason.received_fen),
    amount: money(reason.amount_fen),
    transaction: reason.transaction_id ?? "",
    card: reason.card_id ?? "",
    refund: reason.out_refund_no ?? "",
    why: reason.reason ?? "",
  };
  const text = t(key, params);
  return text === key ? reason.text : text;
}

function resolveForm(item, onResolved) {
  const status = h("div.form-status");
  const resolution = h(
    "select",
    { name: "resolution", "data-testid": "resolution" },
    RESOLUTIONS.map((r) => h("option", { value: r }, t(`resolution_${r}`))),
  );
  const note = h("input", { name: "note", maxlength: "500", autocomplete: "off" });
  const submit = h("button.primary", { type: "submit", "data-testid": "resolve" }, t("resolve"));
  const form = h(
    "form.filters",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        if (resolution.value === "other" && !note.value.trim()) return fill(status, message(t("error_review_note_required")));
        submit.disabled = true;
        try {
          await api(`/admin/orders/${encodeURIComponent(item.order_id)}/review`, {
            method: "POST",
            body: { resolution: resolution.value, note: note.value.trim() || null },
          });
          onResolved(t("review_resolved", { no: item.out_trade_no }));
        } catch (error) {
          submit.disabled = false;
          fill(status, message(errorText(error)));
        }
      },
    },
    field(t("resolution"), resolution),
    field(t("review_note"), note),
    h("div.actions", {}, submit),
  );
  return [form, status];
}

function entry(item, onResolved) {
  return h(
    "li.card.review-item",
    { "data-order": item.order_id },
    h(
      "div.review-head",
      {},
      h("a", { href: `#/orders/${encodeURIComponent(item.order_id)}` }, item.out_trade_no),
      statusBadge(item.status),
      h("span.muted", {}, t("waiting_since", { at: beijingTime(item.since) })),
    ),
    h("p", {}, t("paid_of_total", { paid: yuan(item.paid_fen), total: yuan(item.total_fen) })),
    h("ul.reasons", {}, (item.reasons || []).map((r) => h("li", {}, reasonText(r)))),
    session.isAdmin ? resolveForm(item, onResolved) : null,
  );
}

export async function render(root, ctx) {
  const draw = async (note) => {
    const queue = await api("/admin/review");
    if (!ctx.isCurrent()) return;
    fill(
      root,
      h("div.page-head", {}, h("h1", {}, t("review_title"))),
      note ? message(note, "success") : null,
      queue.items.length
        ? h("ul.review-list", { "data-testid": "review-list" }, queue.items.map((item) => entry(item, draw)))
        : h("p.empty", { "data-testid": "review-empty" }, t("review_empty")),
    );
  };
  await draw(null);
}
