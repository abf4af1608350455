// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core,
// against a real dockhand that tests/api/browser.rs started (its origin, SQLite file and a
// `pre-deploy` hook that sleeps, so a deploy runs long enough to be watched).
//
// Environment (set by tests/api/browser.rs):
//   DOCKHAND_URL     http://127.0.0.1:PORT
//   ADMIN_TOKEN      a token that may write every app
//   VIEWER_TOKEN     a read_only token
//   FIRST_DEPLOY     the id of the app's first (succeeded) deploy, the rollback target
//   NEXT_COMMIT      the origin's tip, not deployed yet
//   SCREENSHOTS      optional: a directory to save each page's screenshot in (docs/)
//   BROWSER          chromium (default: Debian's /usr/bin/chromium over CDP) or firefox
//                    (Debian's /usr/bin/firefox-esr over WebDriver BiDi)
//
// Prints one line per check; exits non-zero at the first that fails, naming it.

import { chromium, firefox } from "playwright-core";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";

const base = must("DOCKHAND_URL");
const admin = must("ADMIN_TOKEN");
const viewer = must("VIEWER_TOKEN");
const firstDeploy = must("FIRST_DEPLOY");
const nextCommit = must("NEXT_COMMIT");
const shots = process.env.SCREENSHOTS || "";
const which = process.env.BROWSER || "chromium";
const executablePath = { chromium: "/usr/bin/chromium", firefox: "/usr/bin/firefox-esr" }[which];
if (!executablePath) throw new Error(`BROWSER=${which}: chromium or firefox`);

function must(name) {
  const v = process.env[name];
  if (!v) throw new Error(`tests/browser/dashboard.mjs: ${name} is not set`);
  return v;
}

function ok(what) {
  console.log(`ok - ${what}`);
}

async function shot(page, name) {
  if (!shots || which !== "chromium") return;
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

if (!fs.existsSync(executablePath)) {
  throw new Error(`${executablePath} is missing: scripts/test-env installs Debian's ${which}`);
}
// playwright gives each launch a fresh profile directory of its own.
const browser = which === "chromium"
  ? await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
  })
  // Stock Firefox speaks WebDriver BiDi: playwright's "moz-" channels drive it through that.
  : await firefox.launch({ channel: "moz-firefox", executablePath, headless: true });
console.log(`# ${which} ${browser.version()}`);
const failures = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") failures.push(`console error: ${m.text()}`); });

  // Sign in: /ui sends the browser to the sign-in page, and back after it.
  await page.goto(`${base}/ui/apps/web`);
  assert.match(page.url(), /\/ui\/sign-in\?next=/);
  await shot(page, "dashboard-sign-in");
  await page.fill("#token", "wrong-token");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("[role=alert]"), /not one of this server/);
  await page.fill("#token", admin);
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/ui/apps/web`);
  assert.equal(new URL(page.url()).pathname, "/ui/apps/web");
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "dockhand_session");
  assert.ok(session, "a session cookie");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie), "", "scripts cannot read the cookie");
  assert.ok(!(await page.content()).includes(admin), "the token is not in the page");
  ok("sign-in: wrong token refused, then an HttpOnly SameSite=Strict session, back to the page asked for");

  await page.goto(`${base}/ui`);
  await page.waitForSelector("article.card[data-app=web]");
  await shot(page, "dashboard-overview");
  ok("overview lists the app");

  // Deploy the tip: the confirmation shows the plan; the deploy page fills in live.
  await page.goto(`${base}/ui/apps/web`);
  await page.click("#actions form:has(input[value=deploy]) button");
  await page.waitForSelector("#plan-path");
  assert.match(await page.textContent("#plan-path"), /fast/);
  assert.ok((await page.content()).includes(nextCommit), "the plan names the commit");
  await shot(page, "dashboard-plan");
  await page.click("form.confirm button.primary");
  await page.waitForURL(/\/ui\/deploys\/\d+$/);
  const loadedSteps = await page.locator("#steps li").count();
  const liveBanner = await page.locator("#live").count();
  assert.equal(liveBanner, 1, "the page opened while the deploy ran (the hook sleeps)");
  await page.waitForSelector('#status .badge[data-status="succeeded"]', { timeout: 30000 });
  const endSteps = await page.locator("#steps li").count();
  assert.ok(endSteps > loadedSteps, `steps arrived after the page loaded (${loadedSteps} → ${endSteps})`);
  const stages = await page.locator("#steps li .stage").allTextContents();
  for (const stage of ["pre-deploy", "reload"]) {
    assert.ok(stages.some((s) => s.includes(stage)), `a ${stage} step in ${stages}`);
  }
  assert.match(await page.textContent("#live"), /Finished: succeeded/);
  await shot(page, "dashboard-deploy");
  ok(`deploy page followed the deploy live: ${loadedSteps} steps at load, ${endSteps} at the end, status succeeded`);

  // Roll back to the first deploy, picked from the list.
  await page.goto(`${base}/ui/apps/web`);
  await page.selectOption("#actions select[name=to]", firstDeploy);
  await page.click("#actions form:has(input[value=rollback]) button");
  await page.waitForSelector("form.confirm");
  assert.ok((await page.content()).includes(`#${firstDeploy}`));
  await page.click("form.confirm button.primary");
  await page.waitForURL(/\/ui\/deploys\/\d+$/);
  await page.waitForSelector('#status .badge[data-status="succeeded"]', { timeout: 30000 });
  assert.match(await page.textContent("dl.facts"), /rollback by admin/);
  ok("rollback to the first deploy ran and succeeded");

  // A rollback locks the app (lock_on_rollback, the default): unlock, lock with a reason,
  // unlock again.
  await page.goto(`${base}/ui/apps/web`);
  assert.match(await page.textContent("p.badges"), /locked by admin: rolled back to/);
  await page.click("#actions form:has(input[value=unlock]) button");
  await page.click("form.confirm button.primary");
  await page.waitForURL(`${base}/ui/apps/web`);
  await page.fill("#actions input[name=reason]", "release freeze");
  await page.click("#actions form:has(input[value=lock]) button");
  await page.click("form.confirm button.primary");
  await page.waitForURL(`${base}/ui/apps/web`);
  assert.match(await page.textContent("p.badges"), /locked by admin: release freeze/);
  await shot(page, "dashboard-app");
  await page.click("#actions form:has(input[value=unlock]) button");
  await page.click("form.confirm button.primary");
  await page.waitForURL(`${base}/ui/apps/web`);
  assert.doesNotMatch((await page.textContent("main")) || "", /locked by admin/);
  ok("the rollback's lock shows; unlock, lock with a reason, unlock: each shows on the page");

  // CSRF: a page on another origin (same host, another port: same site, so the Strict cookie
  // is sent) posts a lock form to dockhand. Refused by the Origin check, nothing locked.
  const attacker = http.createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form id=f method=post action="${base}/ui/apps/web/do/lock">
      <input name=reason value=pwned><input name=csrf value=guess></form>
      <script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((r) => attacker.listen(0, "127.0.0.1", r));
  const evil = `http://127.0.0.1:${attacker.address().port}/`;
  const response = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/ui/apps/web/do/lock")),
    page.goto(evil),
  ]).then(([r]) => r);
  assert.equal(response.status(), 403);
  assert.match(await response.text(), /cross-site form refused/);
  attacker.close();
  // And a same-origin request without the form's token.
  await page.goto(`${base}/ui/apps/web`);
  const status = await page.evaluate(async () => {
    const r = await fetch("/ui/apps/web/do/lock", { method: "POST", body: new URLSearchParams({ reason: "no token" }) });
    return r.status;
  });
  assert.equal(status, 403);
  await page.goto(`${base}/ui/apps/web`);
  assert.doesNotMatch((await page.textContent("main")) || "", /locked by/);
  ok("CSRF: a cross-origin form and a tokenless same-origin POST both get 403; nothing locked");

  // Phone width: nothing wider than the screen.
  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, deviceScaleFactor: 2 });
  await phone.addCookies([session]);
  const small = await phone.newPage();
  for (const p of ["/ui", "/ui/apps/web"]) {
    await small.goto(`${base}${p}`);
    const [wide, culprits] = await small.evaluate(() => [
      document.documentElement.scrollWidth,
      [...document.querySelectorAll("body *")]
        .filter((e) => !e.closest(".scroll") && e.getBoundingClientRect().right > window.innerWidth)
        .slice(0, 5)
        .map((e) => `${e.tagName.toLowerCase()}.${e.className} (${Math.round(e.getBoundingClientRect().right)}px)`),
    ]);
    assert.ok(wide <= 375, `${p} is ${wide}px wide on a 375px screen: ${culprits.join(", ")}`);
  }
  await small.goto(`${base}/ui`);
  await shot(small, "dashboard-phone");
  await phone.close();
  ok("phone width (375 px): no page scrolls sideways");

  // Sign out: the cookie opens nothing any more.
  await page.click("header.top button.link");
  await page.waitForURL(/\/ui\/sign-in/);
  const replay = await browser.newContext();
  await replay.addCookies([session]);
  const again = await replay.newPage();
  await again.goto(`${base}/ui`);
  assert.match(again.url(), /\/ui\/sign-in/);
  await replay.close();
  ok("sign-out: the old cookie, replayed, lands on the sign-in page");

  // A read-only token: no actions, and a forged form gets 403.
  // The sign-in's redirect must land before the next navigation, or Firefox drops one of them.
  await page.fill("#token", viewer);
  await page.click("button[type=submit]");
  await page.waitForURL((u) => u.pathname !== "/ui/sign-in");
  await page.goto(`${base}/ui/apps/web`);
  assert.equal(await page.locator("#actions").count(), 0, "no actions for a read-only token");
  const refused = await page.evaluate(async () => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch("/ui/apps/web/do/lock", { method: "POST", body: new URLSearchParams({ reason: "viewer", csrf }) });
    return [r.status, await r.text()];
  });
  assert.equal(refused[0], 403);
  assert.match(refused[1], /read-only/);
  ok("read-only token: no action buttons, and its forged lock form gets 403");

  // The console stays clean: the CSP allowed everything the pages use. The refusals above are
  // the only failed loads (the wrong token's 401, the forged forms' 403s).
  const expected = (f) => /status of (401|403)/.test(f);
  const real = failures.filter((f) => !expected(f));
  assert.deepEqual(real, [], "no script errors or CSP violations");
  ok("no page errors or CSP violations");
  await context.close();
} catch (e) {
  // What the page said, for whoever reads the failure.
  console.log(`page and console errors so far: ${JSON.stringify(failures)}`);
  if (page) console.log(`at ${page.url()}:\n${await page.content()}`);
  throw e;
} finally {
  await browser.close();
}
