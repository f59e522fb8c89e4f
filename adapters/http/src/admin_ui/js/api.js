// Talking to the back-office API: the staff token (sessionStorage: it lasts as long as the tab),
// JSON in and out, and errors as ApiError carrying the API's stable `code`. Any 401 ends the
// session: the token is dropped and `onSessionEnd` (set by app.js) shows the login page.
import { has, t } from "./i18n.js";

const TOKEN = "paystream.staff.token";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN, value);
    else sessionStorage.removeItem(TOKEN);
  },
  /** `{ username, role }` of the logged-in staff member (from GET /admin/me). */
  me: null,
  get isAdmin() {
    return this.me?.role === "admin";
  },
  onSessionEnd: () => {},
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** What to tell staff about `error`: our own words for codes we know, else the API's message. */
export function errorText(error) {
  if (error instanceof ApiError) {
    const key = `error_${error.code}`;
    return has(key) ? t(key) : error.message || t("error_unknown");
  }
  if (error instanceof TypeError) return t("error_network");
  return error?.message || t("error_unknown");
}

async function send(path, { method = "GET", body, headers = {} } = {}) {
  const token = session.token;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        Accept: "application/json",
        ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (cause) {
    throw new ApiError(0, "network", t("error_network"));
  }
  if (response.status === 401 && token) {
    session.token = null;
    session.me = null;
    session.onSessionEnd();
  }
  if (!response.ok) {
    const payload = await response.json().catch(() => ({}));
    const error = payload.error || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || response.statusText);
  }
  return response;
}

/** A JSON call; resolves with the answer's body. */
export async function api(path, options) {
  const response = await send(path, options);
  return response.status === 204 ? null : response.json();
}

/**
 * Downloads `path` as a file. A plain link cannot carry the Authorization header, so the file is
 * fetched and handed to the browser as a Blob; the name is the server's (Content-Disposition).
 */
export async function download(path, fallbackName) {
  const response = await send(path, { headers: { Accept: "*/*" } });
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] || fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // Give the browser a moment to start the download before the Blob goes.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A fresh Idempotency-Key. */
export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts (https, localhost); the key only has to be unique.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}
