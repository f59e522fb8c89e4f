// The refund form of the order page (admins only): yuan typed as text and read exactly into fen,
// a confirmation that states the amount and what stays refundable, then the request with an
// Idempotency-Key, and the wait for WeChat Pay's answer.
import { api, errorText, newKey } from "./api.js";
import { dialog, field, fill, h, message } from "./dom.js";
import { parseYuan, yuan } from "./format.js";
import { t } from "./i18n.js";

// One refund intent, one Idempotency-Key: sending the same amount and reason again (a double
// click, a resend after a lost answer or an error) reuses the key and is answered with the same
// refund instead of paying twice. A different amount or reason, another order, or an accepted
// refund starts a new intent.
let intent = null; // { order, amount, reason, key } of the last refund sent and not yet accepted

function keyFor(orderId, amount, reason) {
  if (!intent || intent.order !== orderId || intent.amount !== amount || intent.reason !== reason) {
    intent = { order: orderId, amount, reason, key: newKey() };
  }
  return intent.key;
}

function confirmRefund(order, fen, reason) {
  return dialog((close) => {
    const cancel = h("button", { type: "button", onclick: () => close(false) }, t("cancel"));
    return h(
      "form.stack",
      { method: "dialog", "data-testid": "refund-confirm", onsubmit: (event) => { event.preventDefault(); close(true); } },
      h("h2", {}, t("refund_confirm_title")),
      h("p.confirm-amount", { "data-testid": "confirm-amount" }, t("refund_confirm_amount", { amount: yuan(fen), order: order.out_trade_no })),
      h("p", { "data-testid": "confirm-remainder" }, t("refund_confirm_remainder", { refundable: yuan(order.refundable_fen), after: yuan(order.refundable_fen - fen) })),
      reason ? h("p", {}, t("refund_confirm_reason", { reason })) : null,
      h("div.actions", {}, cancel, h("button.danger", { type: "submit", "data-testid": "confirm-refund" }, t("refund_confirm_button"))),
    );
  });
}

/** Polls the order until refund `outRefundNo` is no longer processing; resolves with it. */
async function settled(orderId, outRefundNo, stillWanted) {
  for (let tries = 0; tries < 60 && stillWanted(); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const order = await api(`/admin/orders/${encodeURIComponent(orderId)}`);
    const refund = order.refunds.find((r) => r.out_refund_no === outRefundNo);
    if (refund && refund.status !== "processing") return refund;
  }
  return null;
}

/**
 * The form. `onChanged(note)` re-renders the order page (with a note to show on top) once the
 * refund is accepted and again once it settles; `isCurrent()` says whether the page is still
 * on screen.
 */
export function refundForm(order, { onChanged, isCurrent }) {
  const status = h("div.form-status", { "data-testid": "refund-status" });
  const amount = h("input", { name: "amount", inputmode: "decimal", autocomplete: "off", placeholder: "12.50", required: true, "data-testid": "refund-amount" });
  const reason = h("input", { name: "reason", maxlength: "80", autocomplete: "off", "data-testid": "refund-reason" });
  const submit = h("button.danger", { type: "submit", "data-testid": "refund-submit" }, t("refund_button"));

  async function onsubmit(event) {
    event.preventDefault();
    fill(status);
    const parsed = parseYuan(amount.value);
    if (parsed.error) return fill(status, message(t(parsed.error)));
    if (parsed.fen > order.refundable_fen) {
      return fill(status, message(t("refund_too_much", { refundable: yuan(order.refundable_fen) })));
    }
    const why = reason.value.trim() || null;
    if (!(await confirmRefund(order, parsed.fen, why))) return;

    submit.disabled = true;
    let accepted;
    try {
      accepted = await api(`/admin/orders/${encodeURIComponent(order.id)}/refunds`, {
        method: "POST",
        body: { amount_fen: parsed.fen, reason: why },
        headers: { "Idempotency-Key": keyFor(order.id, parsed.fen, why) },
      });
    } catch (error) {
      submit.disabled = false;
      return fill(status, message(`${errorText(error)} ${t("refund_retry_safe")}`));
    }
    intent = null;
    const sent = t("refund_sent", { amount: yuan(accepted.amount_fen), no: accepted.out_refund_no });
    // Show the new refund (processing) at once, then follow it until WeChat Pay answers.
    await onChanged({ text: sent, kind: "info" });
    let refund = null;
    try {
      refund = await settled(order.id, accepted.out_refund_no, isCurrent);
    } catch (error) {
      if (isCurrent()) await onChanged({ text: errorText(error), kind: "error" });
      return;
    }
    if (!isCurrent()) return;
    if (!refund) return onChanged({ text: t("refund_still_processing", { no: accepted.out_refund_no }), kind: "warning" });
    const done = refund.status === "succeeded" ? "refund_succeeded" : "refund_failed";
    await onChanged({ text: t(done, { amount: yuan(refund.amount_fen), no: refund.out_refund_no }), kind: refund.status === "succeeded" ? "success" : "error" });
  }

  return h(
    "section.card",
    { "aria-labelledby": "refund-title", "data-testid": "refund-section" },
    h("h2", { id: "refund-title" }, t("refund_title")),
    h("p.hint", {}, t("refundable_now", { refundable: yuan(order.refundable_fen) }), " · ", t("refund_amount_hint")),
    h(
      "form.filters",
      { onsubmit, "data-testid": "refund-form" },
      field(t("refund_amount"), amount),
      field(t("refund_reason"), reason),
      h("div.actions", {}, submit),
    ),
    status,
  );
}
