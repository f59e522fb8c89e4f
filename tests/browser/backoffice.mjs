// The back-office UI walked in a real browser, as staff use it. Run by tests/browser.rs, which
// starts the engine, seeds it and passes what it made through the environment:
//   BASE_URL, ADMIN_USER, ADMIN_PASSWORD, SUPPORT_USER, SUPPORT_PASSWORD,
//   ORDER_NO (a paid order of ¥25.00), REVIEW_ORDER_NO (a needs_review order the admin resolves;
//   another stays in the queue), SCREENSHOT_DIR, CHROMIUM (the browser binary).
// Any console error, uncaught exception or CSP violation on any page fails the walk.
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { chromium } from "playwright-core";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/browser.rs sets it)`);
  return value;
}

const BASE = env("BASE_URL");
const SHOTS = env("SCREENSHOT_DIR");
const ORDER_NO = env("ORDER_NO");
const REVIEW_ORDER_NO = env("REVIEW_ORDER_NO");
const ADMIN = { user: env("ADMIN_USER"), password: env("ADMIN_PASSWORD") };
const SUPPORT = { user: env("SUPPORT_USER"), password: env("SUPPORT_PASSWORD") };

await mkdir(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  // Root in CI and containers: Chromium's sandbox needs user namespaces it may not get.
  args: ["--no-sandbox"],
});
// A browser far from Beijing: every time shown must still be Beijing time.
const context = await browser.newContext({
  acceptDownloads: true,
  viewport: { width: 1280, height: 900 },
  timezoneId: "America/New_York",
  locale: "en-US",
});
// Report CSP violations as console errors (CDP-injected, so the CSP does not apply to it).
await context.addInitScript(() => {
  document.addEventListener("securitypolicyviolation", (e) => {
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline code"}`);
  });
});
const page = await context.newPage();
page.setDefaultTimeout(15_000);

// Problems seen on the page. A step that provokes errors on purpose (an expired session) lists
// what it expects in `expected`, and only those are let through.
const problems = [];
let expected = [];
page.on("console", (message) => {
  if (message.type() !== "error") return;
  const text = message.text();
  if (expected.some((pattern) => pattern.test(text))) return;
  problems.push(`console error on ${page.url()}: ${text}`);
});
page.on("pageerror", (error) => problems.push(`uncaught on ${page.url()}: ${error.message}`));

let stepName = "";
async function step(name, work) {
  stepName = name;
  const started = Date.now();
  await work();
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function noHorizontalOverflow(what) {
  const { scroll, inner } = await page.evaluate(() => ({
    scroll: document.scrollingElement.scrollWidth,
    inner: window.innerWidth,
  }));
  assert.ok(scroll <= inner, `${what}: the page is ${scroll}px wide in a ${inner}px window`);
}

async function login({ user, password }) {
  await page.getByLabel("用户名").fill(user);
  await page.getByLabel("密码").fill(password);
  await page.getByRole("button", { name: "登录" }).click();
  await page.getByTestId("who").waitFor();
}

const main = page.locator("main");

try {
  await step("strings exist in both languages", async () => {
    await page.goto(`${BASE}/admin/`);
    const missing = await page.evaluate(async () => {
      const { STRINGS } = await import("/admin/assets/strings.js");
      const zh = Object.keys(STRINGS["zh-CN"]);
      const en = Object.keys(STRINGS.en);
      return [...zh.filter((k) => !en.includes(k)), ...en.filter((k) => !zh.includes(k))];
    });
    assert.deepEqual(missing, [], "strings in one language only");
  });

  await step("yuan are read as text into exact fen; times are Beijing time", async () => {
    const seen = await page.evaluate(async () => {
      const { parseYuan, yuan, beijingTime, beijingToday } = await import("/admin/assets/format.js");
      const typed = ["12.5", "0.1", "0.29", "¥1,200.00", "19.99", "0", "0.001", "1e3", "-1", "12.", "", "100000000"];
      return {
        parsed: Object.fromEntries(typed.map((text) => [text, parseYuan(text)])),
        shown: [yuan(1250), yuan(5), yuan(-5), yuan(123456789)],
        time: beijingTime("2024-05-01T23:30:00.000Z"),
        day: beijingToday(Date.parse("2024-05-01T16:00:00Z")),
      };
    });
    assert.deepEqual(seen.parsed, {
      "12.5": { fen: 1250 },
      "0.1": { fen: 10 },
      "0.29": { fen: 29 },
      "¥1,200.00": { fen: 120000 },
      "19.99": { fen: 1999 },
      "0": { error: "yuan_not_positive" },
      "0.001": { error: "yuan_too_precise" },
      "1e3": { error: "yuan_malformed" },
      "-1": { error: "yuan_malformed" },
      "12.": { fen: 1200 },
      "": { error: "yuan_required" },
      "100000000": { error: "yuan_too_large" },
    });
    assert.deepEqual(seen.shown, ["¥12.50", "¥0.05", "-¥0.05", "¥1,234,567.89"]);
    assert.equal(seen.time, "2024-05-02 07:30:00");
    assert.equal(seen.day, "2024-05-02");
  });

  await step("the watch for CSP violations sees one", async () => {
    // Proves the watch works: an inline <style> must be blocked and reported, by our listener
    // and by Chromium's own console message.
    const ours = /CSP violation: style-src/;
    const chromiums = /inline style violates the following Content Security Policy directive 'style-src/;
    const seen = Promise.all([ours, chromiums].map((pattern) => page.waitForEvent("console", (m) => pattern.test(m.text()))));
    expected = [ours, chromiums];
    await page.evaluate(() => {
      const style = document.createElement("style");
      style.textContent = "body { color: red }";
      document.head.append(style);
      style.remove();
    });
    await seen;
    expected = [];
  });

  await step("the login page, in Chinese by default", async () => {
    await page.getByRole("heading", { name: "员工登录" }).waitFor();
    assert.match(page.url(), /#\/login$/);
    await shot("01-login");
  });

  await step("a wrong password is said so", async () => {
    expected = [/status of 401/];
    await page.getByLabel("用户名").fill(ADMIN.user);
    await page.getByLabel("密码").fill("not-the-password");
    await page.getByRole("button", { name: "登录" }).click();
    await main.getByRole("alert").filter({ hasText: "用户名或密码错误" }).waitFor();
    expected = [];
  });

  await step("log in as admin", async () => {
    await login(ADMIN);
    await page.getByRole("navigation").getByRole("link", { name: "员工" }).waitFor();
    assert.equal(await page.getByTestId("who").textContent(), `${ADMIN.user}（管理员）`);
    await main.locator("table.orders tbody tr").first().waitFor();
    // Paging stops at the end: every seeded order fits on one page.
    assert.ok(await page.getByTestId("next-page").isDisabled());
    assert.ok(await page.getByTestId("prev-page").isDisabled());
    await shot("02-orders");
  });

  await step("find the order by its number", async () => {
    await page.getByLabel("商户订单号").fill(ORDER_NO);
    await page.getByRole("button", { name: "搜索" }).click();
    await main.getByText("第 1 / 1 页，共 1 条").waitFor();
    const rows = main.locator("table.orders tbody tr");
    assert.equal(await rows.count(), 1);
    const row = await rows.first().innerText();
    assert.match(row, /¥25\.00/);
    assert.match(row, /已支付/);
    assert.match(row, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
  });

  await step("export the search as CSV", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-csv").click()]);
    assert.match(download.suggestedFilename(), /^orders-\d{8}\.csv$/);
    const text = await readFile(await download.path(), "utf8");
    assert.ok(text.startsWith("\uFEFF"), "the CSV starts with a BOM");
    const lines = text.slice(1).trim().split("\r\n");
    assert.equal(lines[0], "id,out_trade_no,status,created_at,paid_at,total_yuan,paid_yuan,refunded_yuan,channel,transaction_id,openid,items,note");
    assert.equal(lines.length, 2, text);
    assert.ok(lines[1].includes(`,${ORDER_NO},paid,`), lines[1]);
    assert.ok(lines[1].includes(",25.00,25.00,0.00,wechatpay_v3,"), lines[1]);
  });

  await step("open the order", async () => {
    await main.getByRole("link", { name: ORDER_NO }).click();
    await page.getByRole("heading", { name: `订单 ${ORDER_NO}` }).waitFor();
    const facts = await page.getByTestId("order-facts").innerText();
    assert.match(facts, /订单金额\s+¥25\.00/);
    assert.match(facts, /可退金额\s+¥25\.00/);
    assert.match(await page.getByTestId("order-items").innerText(), /Product tea/);
    assert.match(await page.getByTestId("order-payments").innerText(), /微信支付 v3/);
    assert.match(await page.getByTestId("timeline").innerText(), /顾客下单/);
    await shot("03-order");
  });

  await step("a refund amount is read exactly, with errors in yuan", async () => {
    const status = page.getByTestId("refund-status");
    await page.getByTestId("refund-amount").fill("5.001");
    await page.getByTestId("refund-submit").click();
    await status.getByText("金额最多两位小数").waitFor();
    await page.getByTestId("refund-amount").fill("25.01");
    await page.getByTestId("refund-submit").click();
    await status.getByText("最多可退 ¥25.00").waitFor();
  });

  await step("refund ¥5.00 after a confirmation", async () => {
    await page.getByTestId("refund-amount").fill("5");
    await page.getByTestId("refund-reason").fill("顾客要求");
    await page.getByTestId("refund-submit").click();
    const confirm = page.getByTestId("refund-confirm");
    await confirm.waitFor();
    assert.match(await page.getByTestId("confirm-amount").innerText(), /¥5\.00/);
    const remainder = await page.getByTestId("confirm-remainder").innerText();
    assert.match(remainder, /¥25\.00/);
    assert.match(remainder, /¥20\.00/);
    await shot("04-refund-confirm");
    await page.getByTestId("confirm-refund").click();
  });

  await step("the refund settles, and the lists and timeline follow", async () => {
    await main.getByText("退款 ¥5.00 已成功").waitFor({ timeout: 60_000 });
    const refunds = page.getByTestId("order-refunds");
    assert.equal(await refunds.locator("tr[data-refund]").count(), 1);
    assert.equal(await refunds.locator("tr[data-refund]").getAttribute("data-status"), "succeeded");
    assert.match(await refunds.innerText(), /顾客要求/);
    assert.match(await page.getByTestId("order-facts").innerText(), /可退金额\s+¥20\.00/);
    const timeline = page.getByTestId("timeline");
    assert.equal(await timeline.locator('li[data-type="RefundRequested"]').count(), 1);
    assert.equal(await timeline.locator('li[data-type="RefundSucceeded"]').count(), 1);
    assert.match(await timeline.innerText(), /申请退款 ¥5\.00/);
    // Each line names who did it: the staff member who asked for the refund.
    assert.equal(
      await timeline.locator('li[data-type="RefundRequested"] .actor').innerText(),
      "admin",
    );
    await shot("05-order-refunded");
  });

  await step("the daily report draws its chart with uPlot", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "日报" }).click();
    const chart = page.getByTestId("revenue-chart");
    await chart.locator(".uplot canvas").waitFor();
    const inked = await chart.locator("canvas").evaluate((canvas) => {
      const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
      let painted = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
      return painted;
    });
    assert.ok(inked > 500, `the chart canvas is (nearly) blank: ${inked} painted pixels`);
    const totals = await page.getByTestId("report-totals").innerText();
    assert.match(totals, /收款\s+¥/);
    assert.doesNotMatch(totals, /收款\s+¥0\.00/);
    assert.match(totals, /已退款\s+¥5\.00/);
    await shot("06-report");
  });

  await step("resolve the review item", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "待处理" }).click();
    const item = main.locator("li.review-item").filter({ hasText: REVIEW_ORDER_NO });
    await item.waitFor();
    assert.match(await item.innerText(), /金额不符：订单 ¥25\.00，实收 ¥24\.99/);
    await shot("07-review");
    await item.getByLabel("处理结果").selectOption("accepted");
    await item.getByLabel("说明", { exact: true }).fill("差一分，已与顾客确认");
    await item.getByRole("button", { name: "处理" }).click();
    await main.getByText(`订单 ${REVIEW_ORDER_NO} 已处理。`).waitFor();
    assert.equal(await main.locator("li.review-item").filter({ hasText: REVIEW_ORDER_NO }).count(), 0);
  });

  await step("the catalogue: list, create, edit", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "商品" }).click();
    const create = page.getByTestId("product-create");
    await create.getByLabel("SKU").fill("cake");
    await create.getByLabel("名称").fill("芝士蛋糕");
    await create.getByLabel("价格（元）").fill("8.8");
    await create.getByRole("button", { name: "创建" }).click();
    await main.getByText("已创建商品 芝士蛋糕。").waitFor();
    const row = page.getByTestId("products").locator('tr[data-sku="cake"]');
    assert.match(await row.innerText(), /¥8\.80/);
    await row.getByRole("button", { name: "编辑" }).click();
    const edit = page.getByTestId("product-edit");
    await edit.getByLabel("价格（元）").fill("9.50");
    await edit.getByRole("button", { name: "保存" }).click();
    await main.getByText("已保存商品 芝士蛋糕。").waitFor();
    assert.match(await page.getByTestId("products").locator('tr[data-sku="cake"]').innerText(), /¥9\.50/);
    await shot("08-catalogue");
  });

  await step("the staff screen", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "员工" }).click();
    const list = page.getByTestId("staff-list");
    await list.locator(`tr[data-username="${SUPPORT.user}"]`).waitFor();
    assert.match(await list.locator(`tr[data-username="${ADMIN.user}"]`).innerText(), /管理员/);
    assert.match(await list.locator(`tr[data-username="${SUPPORT.user}"]`).innerText(), /客服/);
    await main.getByLabel("用户名").fill("tom");
    await main.getByLabel("密码").fill("tom-password-1");
    await main.getByRole("button", { name: "创建" }).click();
    await main.getByText("已创建员工 tom。").waitFor();
    const tom = list.locator('tr[data-username="tom"]');
    await tom.getByRole("button", { name: "停用" }).click();
    await main.getByText("已停用 tom。").waitFor();
    assert.match(await tom.innerText(), /已停用/);
    await tom.getByRole("button", { name: "启用" }).click();
    await main.getByText("已启用 tom。").waitFor();
    await tom.getByRole("button", { name: "重设密码" }).click();
    await page.getByRole("dialog").getByLabel("新密码").fill("tom-password-2");
    await page.getByRole("dialog").getByRole("button", { name: "重设密码" }).click();
    await main.getByText("已重设 tom 的密码。").waitFor();
    await shot("09-staff");
  });

  await step("reconciliation: yesterday by default, not reconciled yet, run after a confirmation", async () => {
    // Nothing reconciled yet: the GET's 404 is that state, not an error (the browser still logs
    // it, and may deliver the message late: wait for it before no longer expecting it).
    expected = [/status of 404/];
    const notFound = page.waitForEvent("console", (m) => /status of 404/.test(m.text()));
    await page.getByRole("navigation").getByRole("link", { name: "对账" }).click();
    await page.getByRole("heading", { name: "对账" }).waitFor();
    const yesterday = await page.evaluate(async () => {
      const { addDays, beijingToday } = await import("/admin/assets/format.js");
      return addDays(beijingToday(), -1);
    });
    assert.equal(await page.getByTestId("recon-date").inputValue(), yesterday);
    await page.getByTestId("recon-none").waitFor();
    await notFound;
    assert.match(await page.getByTestId("recon-none").innerText(), new RegExp(`${yesterday} 还没有对账`));
    await page.getByTestId("recon-run").click();
    const confirm = page.getByTestId("recon-confirm");
    await confirm.waitFor();
    await confirm.getByRole("button", { name: "取消" }).click();
    assert.equal(await page.getByTestId("recon-report").count(), 0);
    await page.getByTestId("recon-run").click();
    await page.getByTestId("recon-confirm-run").click();
    await page.getByTestId("recon-report").waitFor();
    await main.getByText(`已完成 ${yesterday} 的对账。`).waitFor();
    // Before 10:00 Beijing the simulator has not made yesterday's bill; after, an empty day has none.
    assert.match(await page.getByTestId("recon-status").innerText(), /^(无账单|账单未生成|已对账)$/);
    assert.match(await page.getByTestId("recon-bill").innerText(), /¥\d+\.\d\d/);
    assert.match(await page.getByTestId("recon-log").innerText(), /¥\d+\.\d\d/);
    assert.match(await page.getByTestId("recon-ran-at").innerText(), /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d（北京时间）/);
    await shot("10-reconciliation");
    // A reload shows the stored report.
    await page.reload();
    await page.getByTestId("recon-report").waitFor();
    await page.setViewportSize({ width: 375, height: 800 });
    await noHorizontalOverflow("the reconciliation page");
    await shot("10b-phone-reconciliation");
    await page.setViewportSize({ width: 1280, height: 900 });
    expected = [];
  });

  await step("switch to English, remembered, and back", async () => {
    await page.getByTestId("lang-switch").click();
    await page.getByRole("navigation").getByRole("link", { name: "Orders" }).click();
    await page.getByRole("heading", { name: "Orders" }).waitFor();
    await page.reload();
    await page.getByRole("heading", { name: "Orders" }).waitFor();
    await main.getByRole("link", { name: ORDER_NO }).click();
    await page.getByTestId("timeline").getByText("Refund of ¥5.00 requested by admin").waitFor();
    await shot("10-order-english");
    await page.getByTestId("lang-switch").click();
    await page.getByTestId("timeline").getByText("admin 申请退款 ¥5.00").waitFor();
  });

  await step("a phone's width: nothing cut off", async () => {
    await page.setViewportSize({ width: 375, height: 800 });
    await page.getByRole("heading", { name: `订单 ${ORDER_NO}` }).waitFor();
    await noHorizontalOverflow("the order page");
    await shot("11-phone-order");
    await page.getByRole("navigation").getByRole("link", { name: "订单" }).click();
    await main.locator("table.orders tbody tr").first().waitFor();
    await noHorizontalOverflow("the orders page");
    await shot("12-phone-orders");
    await page.getByRole("navigation").getByRole("link", { name: "日报" }).click();
    await page.getByTestId("revenue-chart").locator("canvas").waitFor();
    await noHorizontalOverflow("the report");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await step("log out", async () => {
    await page.getByTestId("logout").click();
    await main.getByText("已退出登录").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  });

  await step("an expired session goes back to the login page, saying so", async () => {
    await login(ADMIN);
    expected = [/status of 401/];
    await page.evaluate(() => sessionStorage.setItem("paystream.staff.token", "expired-or-forged"));
    await page.reload();
    await main.getByText("登录已过期，请重新登录").waitFor();
    expected = [];
  });

  await step("support staff see no refund, resolve, catalogue or staff controls", async () => {
    await login(SUPPORT);
    assert.equal(await page.getByTestId("who").textContent(), `${SUPPORT.user}（客服）`);
    const nav = page.getByRole("navigation");
    await nav.getByRole("link", { name: "订单" }).waitFor();
    assert.equal(await nav.getByRole("link", { name: "员工" }).count(), 0);

    await page.getByLabel("商户订单号").fill(ORDER_NO);
    await page.getByRole("button", { name: "搜索" }).click();
    await main.getByRole("link", { name: ORDER_NO }).click();
    await page.getByTestId("timeline").waitFor();
    assert.equal(await page.getByTestId("refund-section").count(), 0);
    await shot("13-support-order");

    await nav.getByRole("link", { name: "待处理" }).click();
    await main.locator("li.review-item").first().waitFor();
    assert.equal(await main.getByRole("button", { name: "处理" }).count(), 0);

    await nav.getByRole("link", { name: "商品" }).click();
    await page.getByTestId("products").waitFor();
    assert.equal(await page.getByTestId("product-create").count(), 0);
    assert.equal(await main.getByRole("button", { name: "编辑" }).count(), 0);

    await nav.getByRole("link", { name: "对账" }).click();
    await page.getByTestId("recon-report").waitFor();
    assert.equal(await page.getByTestId("recon-run").count(), 0);
    await shot("14-support-reconciliation");

    await page.goto(`${BASE}/admin/#/staff`);
    await main.getByText("此页面仅限管理员").waitFor();
  });

  assert.deepEqual(problems, [], "console errors or CSP violations");
  console.log(`the back-office walk passed; screenshots in ${SHOTS}`);
} catch (error) {
  await shot("failure").catch(() => {});
  console.error(`FAILED at "${stepName}" on ${page.url()}`);
  if (problems.length) console.error(`problems seen:\n  ${problems.join("\n  ")}`);
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
}
