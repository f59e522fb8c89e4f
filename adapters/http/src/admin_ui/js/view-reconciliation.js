// Reconciliation against WeChat Pay's bills: one Beijing day's stored report (yesterday by
// default) — how it went, both sides' counts and totals, every difference with what was done
// about it — and, for admins, running the day now (after a confirmation). Route:
//   #/reconciliation?date=YYYY-MM-DD
import { api, ApiError, errorText, session } from "./api.js";
import { dialog, field, fill, h, message, table } from "./dom.js";
import { addDays, beijingTime, beijingToday, yuan } from "./format.js";
import { has, t } from "./i18n.js";

/** A word for a value of the report's closed vocabularies; the code itself if the UI has none. */
function word(prefix, value) {
  const key = `${prefix}_${value}`;
  return has(key) ? t(key) : value;
}

function statusBadge(status) {
  return h(`span.badge.recon-${status}`, { "data-testid": "recon-status" }, word("recon_status", status));
}

/** One side's counts and ¥ totals. */
function side(title, totals, testid) {
  return h(
    "section.card.recon-side",
    { "data-testid": testid },
    h("h2", {}, title),
    h(
      "dl.facts",
      {},
      h("div", {}, h("dt", {}, t("recon_payments")), h("dd", {}, t("recon_count_amount", { count: totals.payments, amount: yuan(totals.payments_fen) }))),
      h("div", {}, h("dt", {}, t("recon_refunds")), h("dd", {}, t("recon_count_amount", { count: totals.refunds, amount: yuan(totals.refunds_fen) }))),
    ),
  );
}

function linesTable(lines) {
  const money = (text) => ({ text, class: "money" });
  const amount = (fen) => (fen === undefined || fen === null ? "—" : yuan(fen));
  return table(
    [t("recon_kind"), t("out_trade_no"), money(t("recon_ours")), money(t("recon_theirs")), t("recon_action")],
    lines.map((line) =>
      h(
        "tr",
        { "data-kind": line.kind, "data-action": line.action },
        h(
          "td",
          { "data-label": t("recon_kind") },
          word("recon_kind", line.kind),
          line.out_refund_no ? h("small.hint", {}, t("recon_refund_no", { no: line.out_refund_no })) : null,
          line.detail ? h("small.hint", {}, line.detail) : null,
        ),
        h(
          "td",
          { "data-label": t("out_trade_no") },
          line.order_id ? h("a", { href: `#/orders/${encodeURIComponent(line.order_id)}` }, line.out_trade_no) : line.out_trade_no,
          line.transaction_id ? h("small.hint", {}, line.transaction_id) : null,
        ),
        h("td.money", { "data-label": t("recon_ours") }, amount(line.ours_fen)),
        h("td.money", { "data-label": t("recon_theirs") }, amount(line.theirs_fen)),
        h("td", { "data-label": t("recon_action") }, h(`span.badge.recon-action-${line.action}`, {}, word("recon_action", line.action))),
      ),
    ),
    { class: "stack-on-phone" },
  );
}

function reportView(report) {
  const open = report.lines.filter((l) => l.action !== "payment_recorded" && l.action !== "refund_outcome_recorded").length;
  return h(
    "div",
    { "data-testid": "recon-report" },
    h(
      "section.card",
      {},
      h("div.review-head", {}, h("h2.recon-day", {}, report.date), statusBadge(report.status)),
      h("p", {}, word("recon_status_help", report.status)),
      h("p.muted", { "data-testid": "recon-ran-at" }, report.runs ? t("recon_ran_at", { at: beijingTime(report.ran_at), runs: report.runs }) : t("recon_checked_at", { at: beijingTime(report.ran_at) })),
    ),
    h("div.recon-sides", {}, side(t("recon_bill"), report.bill, "recon-bill"), side(t("recon_log"), report.log, "recon-log")),
    h(
      "section.card",
      {},
      h("h2", {}, t("recon_lines_title")),
      report.lines.length
        ? [
            open ? message(t("recon_open", { count: open }), "warning") : message(t("recon_all_settled"), "success"),
            linesTable(report.lines),
          ]
        : h("p.empty", { "data-testid": "recon-no-lines" }, t(report.status === "not_ready" ? "recon_not_compared" : "recon_no_lines")),
    ),
  );
}

function confirmRun(date) {
  return dialog((close) =>
    h(
      "form.stack",
      { method: "dialog", "data-testid": "recon-confirm", onsubmit: (event) => { event.preventDefault(); close(true); } },
      h("h2", {}, t("recon_confirm_title", { date })),
      h("p", {}, t("recon_confirm_text")),
      h(
        "div.actions",
        {},
        h("button", { type: "button", onclick: () => close(false) }, t("cancel")),
        h("button.primary", { type: "submit", "data-testid": "recon-confirm-run" }, t("recon_run")),
      ),
    ),
  );
}

export async function render(root, { query, navigate, isCurrent }) {
  const today = beijingToday();
  const yesterday = addDays(today, -1);
  const wanted = query.get("date") || yesterday;
  const date = /^\d{4}-\d{2}-\d{2}$/.test(wanted) ? wanted : yesterday;
  const dateInput = h("input", { name: "date", type: "date", value: date, max: yesterday, required: true, "data-testid": "recon-date" });
  const form = h(
    "form.filters",
    { onsubmit: (event) => { event.preventDefault(); navigate("/reconciliation", { date: dateInput.value }); } },
    field(t("recon_date"), dateInput),
    h("div.actions", {}, h("button.primary", { type: "submit" }, t("show"))),
  );
  const status = h("div.form-status", { "data-testid": "recon-run-status" });
  const body = h("div");

  const show = (report) => fill(body, report ? reportView(report) : h("p.empty.card", { "data-testid": "recon-none" }, t("recon_none", { date })));

  let runButton = null;
  if (session.isAdmin) {
    const future = date >= today;
    runButton = h(
      "button.primary",
      {
        type: "button",
        "data-testid": "recon-run",
        disabled: future,
        onclick: async () => {
          if (!(await confirmRun(date))) return;
          runButton.disabled = true;
          fill(status, h("p.loading", { role: "status" }, t("recon_running")));
          try {
            const report = await api(`/admin/reconciliation/${encodeURIComponent(date)}`, { method: "POST" });
            if (!isCurrent()) return;
            show(report);
            fill(status, message(t("recon_run_done", { date }), "success"));
          } catch (error) {
            if (!isCurrent()) return;
            fill(status, message(errorText(error)));
          } finally {
            runButton.disabled = false;
          }
        },
      },
      t("recon_run"),
    );
  }

  let report = null;
  let failure = null;
  try {
    report = await api(`/admin/reconciliation/${encodeURIComponent(date)}`);
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "reconciliation_not_found")) failure = error;
  }
  if (!isCurrent()) return;
  fill(
    root,
    h("div.page-head", {}, h("h1", {}, t("recon_title")), runButton),
    h("section.card", {}, form, h("p.hint", {}, t("recon_hint"))),
    status,
    body,
  );
  if (failure) fill(body, message(errorText(failure)));
  else show(report);
}
