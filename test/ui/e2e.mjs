// End-to-end test of tether's dashboard in headless Chromium, driven by
// playwright-core. Started by ui_test.go, which builds tether, starts two
// servers and passes everything in the environment:
//   UI_URL, UI_PASSWORD     the main server's managed listener, account admin
//   UI_URL2, UI_PASSWORD2   a second server with a 3 s idle session limit
//   TETHER, ADMIN_CONFIG, WORK, SHOTS, CHROMIUM
//   TPM2TOOLS_TCTI          a software TPM (swtpm) for tether and tpm2-tools
// Every step is real: tether enroll / encrypt / decrypt run as processes,
// the page is never reloaded while the test waits for it to change.
import { chromium } from "playwright-core";
import { execFile, spawn } from "node:child_process";
import { createServer } from "node:http";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

const env = process.env;
const URL = env.UI_URL, TETHER = env.TETHER, WORK = env.WORK, SHOTS = env.SHOTS;
const PIN = JSON.parse(readFileSync(env.ADMIN_CONFIG, "utf8")).pin;
mkdirSync(SHOTS, { recursive: true });
const t0 = Date.now();
// shot saves a screenshot without a passing notification in it.
async function shot(p, name, full) {
  await p.evaluate(() => { const t = document.getElementById("toast"); if (t) t.hidden = true; });
  await p.screenshot({ path: join(SHOTS, name), fullPage: !!full });
}
const step = (s) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${s}`);

// tether runs the binary; it resolves to {code, stdout, stderr}.
function tether(args, input, environ) {
  return new Promise((resolve) => {
    const p = spawn(TETHER, args, { stdio: ["pipe", "pipe", "pipe"], env: environ || process.env });
    let stdout = "", stderr = "";
    p.stdout.on("data", (d) => { stdout += d; });
    p.stderr.on("data", (d) => { stderr += d; });
    p.on("close", (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(input || "");
  });
}
async function ok(args, input, environ) {
  const r = await tether(args, input, environ);
  assert.equal(r.code, 0, `tether ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  // The managed listener's certificate is self-signed (devices pin it);
  // an admin accepts it once in a real browser.
  const desk = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
  const page = await desk.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", (e) => { console.log("page error:", e.message); failed = true; });

  step("wrong password is refused");
  await page.goto(URL + "/ui/");
  assert.match(page.url(), /\/ui\/login$/);
  await shot(page, "login.png");
  await page.fill("#name", "admin");
  await page.fill("#password", "not-the-password");
  await page.click("#signin");
  await page.locator("#login-error", { hasText: "Wrong name or password" }).waitFor();
  assert.match(page.url(), /\/ui\/login$/);

  step("sign in");
  await page.fill("#password", env.UI_PASSWORD);
  await page.click("#signin");
  await page.waitForURL(URL + "/ui/");
  await page.locator("#live.on").waitFor();
  await page.evaluate(() => { window.__noReload = true; });
  const noReload = async () => assert.equal(await page.evaluate(() => window.__noReload), true, "the page reloaded");

  step("enroll: token with QR code in the page, tether enroll with it");
  await page.click("a[data-view=enroll]");
  await page.fill("#token-group", "nas");
  await page.fill("#token-note", "NAS in the basement");
  await page.click("#token-create");
  await page.locator("#token-out").waitFor();
  const qr = await page.getAttribute("#token-qr", "src");
  assert.match(qr, /^data:image\/svg\+xml;base64,/);
  assert.ok(await page.locator("#token-qr").evaluate((img) => img.complete && img.naturalWidth > 0), "QR code does not render");
  const cmd = await page.textContent("#token-cmd");
  const m = cmd.match(/^tether enroll --server (\S+) --token (\S+)$/);
  assert.ok(m, "command: " + cmd);
  await shot(page, "enroll.png");
  await page.click("a[data-view=devices]");
  const nas = join(WORK, "nas");
  const nasID = (await ok(["enroll", "--server", m[1], "--token", m[2], "--state", nas, "--name", "nas-basement", "--key-store", "file"])).trim();
  const row = page.locator(`#dev-${nasID}`);
  await row.waitFor(); // appears live
  assert.equal(await row.getAttribute("data-state"), "enabled");
  await noReload();
  // A second device asks to join without a token: pending until approved.
  const office = join(WORK, "office");
  const officeID = (await ok(["enroll", "--server", URL, "--pin", PIN, "--state", office, "--name", "office-pc", "--key-store", "file"])).trim();
  const orow = page.locator(`#dev-${officeID}`);
  await orow.waitFor();
  assert.equal(await orow.getAttribute("data-state"), "pending");

  step("unlock, seen live");
  const secret = "correct horse battery staple";
  const jwe = await ok(["encrypt", "managed", JSON.stringify({ state: nas })], secret);
  assert.match(await row.locator(".last-unlock").textContent(), /never/);
  assert.equal(await ok(["decrypt"], jwe), secret);
  await row.locator(".last-unlock", { hasText: /just now|s ago/ }).waitFor();
  assert.match(await row.textContent(), /127\.0\.0\.1/);
  await noReload();

  step("approve the pending enrolment in the page");
  await orow.locator("button", { hasText: "Approve" }).click();
  await page.locator("#confirm-ok").click();
  await page.locator(`#dev-${officeID}[data-state=enabled]`).waitFor();

  step("search and filter the device list (done by the server)");
  await page.fill("#dev-search", "OFFICE");
  await row.waitFor({ state: "detached" });
  await orow.waitFor();
  assert.match(await page.textContent("#dev-summary"), /2 enabled/); // counts stay over every device
  await page.fill("#dev-search", "no-such-device");
  await page.locator("#no-match").waitFor();
  assert.ok(await page.locator("#devices").isHidden(), "an empty device table is shown");
  await page.fill("#dev-search", "");
  await page.selectOption("#dev-state", "pending");
  await page.locator("#no-match").waitFor();
  await page.selectOption("#dev-state", "");
  await row.waitFor();
  await orow.waitFor();
  assert.ok(await page.locator("#dev-pager").isHidden(), "a pager for two devices");

  step("approval required: the unlock waits for the page's Approve");
  await ok(["admin", "device", "policy", nasID, '{"approval":true}', "--config", env.ADMIN_CONFIG]);
  const waiting = tether(["decrypt", "--timeout", "60s"], jwe);
  const card = page.locator(`li.approval[data-device=${nasID}]`);
  await card.waitFor();
  assert.match(await card.textContent(), /nas-basement wants to unlock/);
  assert.equal(await page.textContent("#apr-count"), "1");
  await shot(page, "devices-approval.png");
  // The same moment on a phone.
  const phone = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2, isMobile: true, hasTouch: true, storageState: await desk.storageState() });
  const pp = await phone.newPage();
  pp.setDefaultTimeout(15000);
  await pp.goto(URL + "/ui/");
  await pp.locator(`li.approval[data-device=${nasID}]`).waitFor();
  const overflow = await pp.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
  await shot(pp, "phone-devices.png");
  // Approve from the phone; the desktop page sees the card go.
  await pp.locator(`li.approval[data-device=${nasID}] button`, { hasText: "Approve" }).tap();
  const w = await waiting;
  assert.equal(w.code, 0, "approved unlock failed: " + w.stderr);
  assert.equal(w.stdout, secret);
  await card.waitFor({ state: "detached" });
  await noReload();

  step("new PCR values after an update: the page's Approve lets the server sign them");
  // office binds a secret to its TPM with a PCR policy the server signs
  // (its first values are approved when it binds); an "update" extends
  // PCR 16; the TPM then unseals only once the new values are approved.
  const pcrEnv = { ...process.env, TETHER_DEVICE_DIR: office };
  const tpmJWE = await ok(["encrypt", "tpm2", '{"pcr_signer":"managed","pcr_signed_ids":"16"}'], "pwenc secret", pcrEnv);
  assert.equal(await ok(["decrypt"], tpmJWE, pcrEnv), "pwenc secret");
  await new Promise((resolve, reject) => execFile("tpm2_pcrextend", ["16:sha256=" + "ab".repeat(32)],
    (err, _out, stderr) => (err ? reject(new Error("tpm2_pcrextend: " + stderr)) : resolve())));
  const unsigned = await tether(["decrypt", "--timeout", "20s"], tpmJWE, pcrEnv);
  assert.notEqual(unsigned.code, 0, "new PCR values unsealed before anyone approved them");
  assert.match(unsigned.stderr, /waits for an administrator|does not sign/);
  const pcard = page.locator(`li.pcr[data-device=${officeID}]`);
  await pcard.waitFor(); // appears live
  assert.match(await pcard.textContent(), /office-pc booted with new sha256 PCR 16 values/);
  assert.equal(await page.textContent("#apr-count"), "1");
  await shot(page, "devices-pcr.png");
  await pcard.locator("button", { hasText: "Approve" }).click();
  await pcard.waitFor({ state: "detached" });
  assert.ok(await page.locator("#pcr-box").isHidden(), "the box of waiting PCR values stays shown");
  assert.equal(await ok(["decrypt"], tpmJWE, pcrEnv), "pwenc secret");
  await noReload();

  step("a forged cross-site request is refused");
  // A page on another origin posts to the dashboard while the admin is
  // signed in: the SameSite=Strict cookie stays home, and the request
  // carries neither the CSRF token nor this origin.
  const evil = createServer((req, res) => {
    res.setHeader("Content-Type", "text/html");
    res.end(`<!doctype html><form id=f method=post action="${URL}/ui/api/lockdown" enctype="text/plain">
      <input name='{"on":true,"x":"' value='"}'></form>
      <script>fetch(${JSON.stringify(URL + "/ui/api/lockdown")}, {method:"POST", mode:"no-cors", credentials:"include",
        headers:{"Content-Type":"text/plain"}, body:'{"on":true}'}).finally(() => { document.title = "sent"; f.submit(); });</script>`);
  });
  await new Promise((r) => evil.listen(0, "127.0.0.1", r));
  const ep = await desk.newPage();
  await ep.goto(`http://127.0.0.1:${evil.address().port}/`);
  await ep.waitForURL(/\/ui\/api\/lockdown/);
  assert.match(await ep.content(), /not signed in|session expired|refused/);
  await ep.close();
  evil.close();
  await page.waitForTimeout(700);
  assert.equal(await page.locator("#lockbanner").isHidden(), true, "a cross-site request turned lockdown on");

  step("revoke (confirmation says forever), then the unlock fails");
  await ok(["admin", "device", "policy", nasID, "{}", "--config", env.ADMIN_CONFIG]);
  await row.locator("button", { hasText: "Revoke" }).click();
  assert.match(await page.textContent("#confirm-text"), /forever/);
  assert.match(await page.textContent("#confirm-ok"), /Revoke forever/);
  await page.fill("#confirm-reason", "stolen from the basement");
  await page.click("#confirm-ok");
  await page.locator(`#dev-${nasID}[data-state=revoked]`).waitFor();
  const rv = await tether(["decrypt", "--timeout", "20s"], jwe);
  assert.notEqual(rv.code, 0, "a revoked device unlocked");
  assert.match(rv.stderr, /revoked|not enrolled/);
  await shot(page, "devices.png");

  step("lockdown: the switch refuses every unlock");
  const officeJWE = await ok(["encrypt", "managed", JSON.stringify({ state: office })], "office secret");
  await page.click("a[data-view=server]");
  await page.locator("#lockdown").check();
  await page.click("#confirm-ok");
  await page.locator("#lockbanner").waitFor();
  const ld = await tether(["decrypt", "--timeout", "20s"], officeJWE);
  assert.notEqual(ld.code, 0, "unlocked during lockdown");
  assert.match(ld.stderr, /lockdown/);
  await shot(page, "server.png");
  await page.click("#lock-off-banner");
  await page.locator("#lockbanner").waitFor({ state: "hidden" });
  assert.equal(await ok(["decrypt"], officeJWE), "office secret");

  step("key rotation");
  const before = await page.locator("#keys tbody tr").count();
  await page.click("#rotate");
  await page.click("#confirm-ok");
  await page.waitForFunction((n) => document.querySelectorAll("#keys tbody tr").length === n + 2, before);

  step("audit log: verified chain, filters, actor is the admin's name");
  await page.click("a[data-view=audit]");
  await page.locator("#chain.ok", { hasText: "chain verified" }).waitFor();
  await page.selectOption("#f-decision", "deny");
  await page.locator('#audit[data-query*="decision=deny"] tbody tr').first().waitFor();
  for (const d of await page.locator("#audit tbody .badge").allTextContents()) assert.equal(d, "deny");
  // A slow answer for an older filter must not replace a newer one's rows.
  const slowAll = /\/ui\/api\/audit\?.*decision=&/;
  await page.route(slowAll, async (route) => { await new Promise((r) => setTimeout(r, 1500)); await route.continue(); });
  await page.selectOption("#f-decision", ""); // its answer is held back 1.5 s
  await page.selectOption("#f-decision", "deny");
  await page.waitForTimeout(2500); // the held-back answer has arrived by now
  await page.unroute(slowAll);
  assert.match(await page.locator("#audit").getAttribute("data-query"), /decision=deny/);
  for (const d of await page.locator("#audit tbody .badge").allTextContents()) assert.equal(d, "deny");
  await page.selectOption("#f-decision", "");
  await page.selectOption("#f-action", "device");
  await page.locator('#audit[data-query*="action=device&decision=&"] tbody tr', { hasText: "device.revoke" }).waitFor();
  assert.match(await page.locator("#audit tbody tr", { hasText: "device.revoke" }).textContent(), /admin · 127\.0\.0\.1.*stolen from the basement/);
  await page.selectOption("#f-action", "");
  await shot(page, "audit.png");
  await pp.goto(URL + "/ui/#audit");
  await pp.locator("#chain.ok").waitFor();
  await shot(pp, "phone-audit.png");
  await pp.goto(URL + "/ui/#enroll");
  await pp.click("#token-create");
  await pp.locator("#token-out").waitFor();
  await shot(pp, "phone-enroll.png", true);
  await phone.close();

  step("sign out ends the session");
  await page.click("#logout");
  await page.waitForURL(/\/ui\/login\?e=out/);
  await page.goto(URL + "/ui/");
  assert.match(page.url(), /\/ui\/login$/);
  await desk.close();

  step("an expired (idle) session is refused");
  const c2 = await browser.newContext({ ignoreHTTPSErrors: true });
  const p2 = await c2.newPage();
  await p2.goto(env.UI_URL2 + "/ui/login");
  await p2.fill("#name", "admin");
  await p2.fill("#password", env.UI_PASSWORD2);
  await p2.click("#signin");
  await p2.waitForURL(env.UI_URL2 + "/ui/");
  await p2.locator("#live.on").waitFor();
  // Idle for longer than the limit: the live stream ends the page's
  // session by itself and shows the sign-in page.
  await p2.waitForURL(/\/ui\/login\?e=expired/, { timeout: 15000 });
  await p2.locator(".notice", { hasText: "session ended" }).waitFor();
  const r2 = await c2.request.get(env.UI_URL2 + "/ui/api/state");
  assert.equal(r2.status(), 401);
  await c2.close();
  step("all passed");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
