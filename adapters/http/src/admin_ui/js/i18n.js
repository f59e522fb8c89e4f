// The UI's two languages: Chinese (zh-CN) by default, English on request, remembered in
// localStorage. Every string the UI shows is in strings.js, in both.
import { STRINGS } from "./strings.js";

const KEY = "paystream.lang";
export const LANGS = ["zh-CN", "en"];

let current = LANGS.includes(localStorage.getItem(KEY)) ? localStorage.getItem(KEY) : "zh-CN";
document.documentElement.lang = current;

export function lang() {
  return current;
}

export function setLang(next) {
  current = LANGS.includes(next) ? next : "zh-CN";
  localStorage.setItem(KEY, current);
  document.documentElement.lang = current;
}

/** The string `key` in the current language, with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const text = STRINGS[current][key] ?? STRINGS["zh-CN"][key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** Whether `key` has a string (used to word API error codes we know). */
export function has(key) {
  return key in STRINGS[current];
}
