// The catalogue: every product, active or not. Admins add products and change a product's name,
// price (typed in yuan) and whether it is on sale; support staff only read.
import { api, errorText, session } from "./api.js";
import { field, fill, h, message, table } from "./dom.js";
import { parseYuan, yuan, yuanInput } from "./format.js";
import { t } from "./i18n.js";

/** The product form: a new product when `product` is null, else that product (its sku fixed). */
function productForm(product, onSaved) {
  const status = h("div.form-status");
  const sku = h("input", { name: "sku", value: product?.sku ?? "", autocomplete: "off", readonly: Boolean(product), required: true });
  const name = h("input", { name: "name", value: product?.name ?? "", autocomplete: "off", required: true });
  const price = h("input", { name: "price", value: product ? yuanInput(product.price_fen) : "", inputmode: "decimal", autocomplete: "off", required: true });
  const active = h("input", { name: "active", type: "checkbox", checked: product ? product.active : true });
  const form = h(
    "form.filters",
    {
      "data-testid": product ? "product-edit" : "product-create",
      onsubmit: async (event) => {
        event.preventDefault();
        const parsed = parseYuan(price.value);
        if (parsed.error) return fill(status, message(t(parsed.error)));
        const body = { sku: sku.value.trim(), name: name.value.trim(), price_fen: parsed.fen, active: active.checked };
        try {
          const saved = product
            ? await api(`/admin/products/${encodeURIComponent(product.sku)}`, { method: "PUT", body })
            : await api("/admin/products", { method: "POST", body });
          onSaved(t(product ? "product_saved" : "product_created", { name: saved.name }));
        } catch (error) {
          fill(status, message(errorText(error)));
        }
      },
    },
    field(t("sku"), sku),
    field(t("product_name"), name),
    field(t("price_yuan"), price),
    h("label.check", {}, active, h("span", {}, t("on_sale"))),
    h("div.actions", {}, h("button.primary", { type: "submit" }, t(product ? "save" : "create"))),
  );
  return h("section.card", {}, h("h2", {}, product ? t("edit_product", { sku: product.sku }) : t("new_product")), form, status);
}

export async function render(root, ctx) {
  const draw = async (note, editing = null) => {
    const { items } = await api("/admin/products");
    if (!ctx.isCurrent()) return;
    const admin = session.isAdmin;
    const rows = items.map((p) =>
      h(
        "tr",
        { "data-sku": p.sku },
        h("td", { "data-label": t("sku") }, p.sku),
        h("td", { "data-label": t("product_name") }, p.name),
        h("td.money", { "data-label": t("price") }, yuan(p.price_fen)),
        h("td", { "data-label": t("on_sale") }, h(`span.badge.${p.active ? "on" : "off"}`, {}, t(p.active ? "active" : "inactive"))),
        admin ? h("td", {}, h("button", { type: "button", onclick: () => draw(null, p) }, t("edit"))) : null,
      ),
    );
    const headers = [t("sku"), t("product_name"), { text: t("price"), class: "money" }, t("on_sale"), admin ? t("actions") : null].filter(Boolean);
    fill(
      root,
      h("div.page-head", {}, h("h1", {}, t("catalogue_title"))),
      note ? message(note, "success") : null,
      admin ? productForm(editing, (saved) => draw(saved)) : null,
      h("section.card", { "data-testid": "products" }, items.length ? table(headers, rows, { class: "stack-on-phone" }) : h("p.empty", {}, t("no_products"))),
    );
  };
  await draw(null);
}
