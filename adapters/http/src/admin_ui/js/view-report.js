// The daily report: per Beijing day, orders paid, gross, refunded, net and unmatched money, as a
// chart (uPlot, vendored, loaded by index.html as the global `uPlot`) and a table.
import { api } from "./api.js";
import { field, fill, h, table } from "./dom.js";
import { addDays, beijingToday, yuan } from "./format.js";
import { t } from "./i18n.js";

const SERIES = [
  { key: "gross_fen", label: "gross", stroke: "#1f6f43" },
  { key: "refunded_fen", label: "refunded", stroke: "#c0392b" },
  { key: "net_fen", label: "net", stroke: "#2c6fbb" },
];

/** Draws the chart into `box` and keeps it as wide as the box. */
function chart(box, items) {
  // Days are plotted by index (not as timestamps) so that uPlot's time axis, which would use the
  // browser's time zone, never shifts a Beijing day; the labels are the days themselves.
  const days = items.map((item) => item.date);
  // Yuan as numbers for drawing only; every figure shown as text comes from integer fen.
  const data = [days.map((_, i) => i), ...SERIES.map((s) => items.map((item) => item[s.key] / 100))];
  const size = () => ({ width: Math.max(box.clientWidth, 280), height: 280 });
  const plot = new window.uPlot(
    {
      ...size(),
      scales: { x: { time: false } },
      // A key of the three lines; values stay in the table below (hover values would be yuan as floats).
      legend: { live: false },
      axes: [
        { values: (u, ticks) => ticks.map((i) => (Number.isInteger(i) && days[i] ? days[i].slice(5) : "")) },
        { values: (u, ticks) => ticks.map((v) => `¥${v}`), size: 70 },
      ],
      series: [
        { label: t("date") },
        ...SERIES.map((s) => ({ label: t(s.label), stroke: s.stroke, width: 2 })),
      ],
    },
    data,
    box,
  );
  const observer = new ResizeObserver(() => {
    if (!box.isConnected) return observer.disconnect();
    plot.setSize(size());
  });
  observer.observe(box);
}

function reportTable(items) {
  const money = (text) => ({ text, class: "money" });
  return table(
    [t("date"), money(t("orders_paid")), money(t("gross")), money(t("refunded")), money(t("net")), money(t("unmatched"))],
    items.map((d) =>
      h(
        "tr",
        { "data-date": d.date },
        h("td", { "data-label": t("date") }, d.date),
        h("td.money", { "data-label": t("orders_paid") }, String(d.orders_paid)),
        h("td.money", { "data-label": t("gross") }, yuan(d.gross_fen)),
        h("td.money", { "data-label": t("refunded") }, yuan(d.refunded_fen)),
        h("td.money", { "data-label": t("net") }, yuan(d.net_fen)),
        h("td.money", { "data-label": t("unmatched") }, yuan(d.unmatched_fen)),
      ),
    ),
    { class: "stack-on-phone" },
  );
}

export async function render(root, { query, navigate, isCurrent }) {
  const to = query.get("to") || beijingToday();
  const from = query.get("from") || addDays(to, -29);
  const fromInput = h("input", { name: "from", type: "date", value: from, required: true });
  const toInput = h("input", { name: "to", type: "date", value: to, required: true });
  const form = h(
    "form.filters",
    { onsubmit: (event) => { event.preventDefault(); navigate("/report", { from: fromInput.value, to: toInput.value }); } },
    field(t("from_date"), fromInput),
    field(t("to_date"), toInput),
    h("div.actions", {}, h("button.primary", { type: "submit" }, t("show"))),
  );
  const report = await api(`/admin/reports/daily?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
  if (!isCurrent()) return;
  const sum = (key) => report.items.reduce((total, d) => total + d[key], 0);
  const box = h("div.chart", { "data-testid": "revenue-chart", role: "img", "aria-label": t("chart_label", { from, to }) });
  fill(
    root,
    h("div.page-head", {}, h("h1", {}, t("report_title"))),
    h("section.card", {}, form, h("p.hint", {}, t("beijing_days"))),
    h(
      "section.card.totals",
      { "data-testid": "report-totals" },
      h("div", {}, h("span.muted", {}, t("gross")), h("strong", {}, yuan(sum("gross_fen")))),
      h("div", {}, h("span.muted", {}, t("refunded")), h("strong", {}, yuan(sum("refunded_fen")))),
      h("div", {}, h("span.muted", {}, t("net")), h("strong", {}, yuan(sum("net_fen")))),
      h("div", {}, h("span.muted", {}, t("orders_paid")), h("strong", {}, String(sum("orders_paid")))),
    ),
    h("section.card", {}, h("h2", {}, t("revenue_chart")), box),
    h("section.card", {}, h("h2", {}, t("per_day")), reportTable([...report.items].reverse())),
  );
  chart(box, report.items);
}
