// Money and time as staff read them: yuan (never fen) and Beijing time (UTC+8, no daylight
// saving), whatever the time zone of the browser.

/** Integer fen as "¥1,234.50" (integer arithmetic only, so no rounding surprises). */
export function yuan(fen) {
  const n = Number(fen) || 0;
  const sign = n < 0 ? "-" : "";
  const abs = Math.abs(n);
  const whole = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const cents = String(abs % 100).padStart(2, "0");
  return `${sign}¥${whole}.${cents}`;
}

/** The largest amount accepted from a form: ¥10,000,000.00 (far above any order). */
const MAX_FEN = 1_000_000_000;

/**
 * Yuan as typed ("12", "12.5", "12.50", "¥12.50", "1,200") to integer fen, read as text so that
 * no floating point is involved. Returns { fen } or { error } with a key of strings.js.
 */
export function parseYuan(text) {
  const cleaned = String(text ?? "").trim().replace(/^[¥￥]\s*/, "").replace(/,/g, "");
  if (cleaned === "") return { error: "yuan_required" };
  // Up to 12 digits of yuan stays far inside exact integers (2^53) once in fen.
  const match = /^(\d{1,12})(?:\.(\d{0,2}))?$/.exec(cleaned);
  if (!match) {
    return { error: /^\d*\.\d{3,}$/.test(cleaned) ? "yuan_too_precise" : "yuan_malformed" };
  }
  const fen = Number(match[1]) * 100 + Number((match[2] || "").padEnd(2, "0"));
  if (fen <= 0) return { error: "yuan_not_positive" };
  if (fen > MAX_FEN) return { error: "yuan_too_large" };
  return { fen };
}

/** Fen as the plain number a yuan input shows ("12.50"). */
export function yuanInput(fen) {
  return yuan(fen).replace("¥", "").replace(/,/g, "");
}

const BEIJING_MS = 8 * 3600 * 1000;

/** An RFC 3339 instant as Beijing wall-clock time, "2024-05-02 07:30:00"; "" when absent. */
export function beijingTime(iso) {
  if (!iso) return "";
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return String(iso);
  return new Date(at + BEIJING_MS).toISOString().slice(0, 19).replace("T", " ");
}

/** Today's date in Beijing, "YYYY-MM-DD" (the API's `from`/`to` are Beijing days). */
export function beijingToday(now = Date.now()) {
  return new Date(now + BEIJING_MS).toISOString().slice(0, 10);
}

/** `ymd` plus `days` (may be negative), as "YYYY-MM-DD". */
export function addDays(ymd, days) {
  const at = Date.parse(`${ymd}T00:00:00Z`) + days * 86400 * 1000;
  return new Date(at).toISOString().slice(0, 10);
}
