// Building the page from data. Text always goes in as text nodes (never parsed as HTML), and
// handlers are attached with addEventListener: the CSP forbids inline code, and user data such as
// product names or refund reasons must never become markup.

/**
 * h("tag.class1.class2", { attribute: value, onclick: fn, ... }, ...children)
 * Children: strings and numbers become text; null, undefined and false are skipped; arrays are
 * flattened. `true` sets a boolean attribute, `false`/`null` leaves it out.
 */
export function h(spec, props = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = [el.className, value].filter(Boolean).join(" ");
    } else if (name === "value") {
      el.value = value;
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

/** A table inside a box that scrolls sideways on narrow screens instead of widening the page. */
export function table(headers, rows, options = {}) {
  return h(
    "div.table-wrap",
    {},
    h(
      "table",
      { class: options.class },
      h("thead", {}, h("tr", {}, headers.map((th) => h("th", { scope: "col", class: th.class }, th.text ?? th)))),
      h("tbody", {}, rows),
    ),
  );
}

/** A labelled form field: the label wraps the control, so clicking it focuses the control. */
export function field(label, control, hint) {
  return h("label.field", {}, h("span.field-label", {}, label), control, hint ? h("small.hint", {}, hint) : null);
}

/** A status line for errors and results; `role="alert"` makes screen readers announce errors. */
export function message(text, kind = "error") {
  return h(`p.message.${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/**
 * A modal dialog (the native <dialog>: focus is trapped and Escape cancels). `build(close)`
 * returns its contents; resolves with what `close(value)` was called with, or null on cancel.
 */
export function dialog(build) {
  return new Promise((resolve) => {
    const el = h("dialog.dialog");
    let result = null;
    const close = (value) => {
      result = value;
      el.close();
    };
    el.addEventListener("close", () => {
      el.remove();
      resolve(result);
    });
    fill(el, build(close));
    document.body.append(el);
    el.showModal();
  });
}
