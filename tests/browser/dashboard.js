// tests/browser/dashboard.js - the dashboard in a real browser (Debian's chromium, driven by
// playwright-core), run by tests/cluster/test_dashboard.sh, which starts the site and passes:
//   P_URL    the primary's HTTP URL; R and S follow it (R a replica, S a staging server)
//   S_PID    the staging server's PID: this script stops it (SIGTERM) and expects "down"
//   MIRROR   a mirroring job on P with enough content that a run lasts a few seconds
//   SHOT     where the screenshot goes
// Each step prints one line; any failed expectation throws (exit 1) with what the page showed.
"use strict";
const { chromium } = require("playwright-core");

const P = process.env.P_URL, SPID = Number(process.env.S_PID), MIRROR = process.env.MIRROR;
const t0 = Date.now();
const say = (m) => console.log(`[browser ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);

async function waitFor(what, limitMs, probe) {
  const end = Date.now() + limitMs;
  let last;
  while (Date.now() < end) {
    last = await probe();
    if (last && last.ok) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${limitMs} ms; last seen ${JSON.stringify(last)}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--disable-gpu", "--disable-dev-shm-usage"].concat(
      process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []),
  });
  say("chromium started");
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(P + "/");
    say("the page loaded");
    await waitFor("the live indicator", 10000, async () => ({
      ok: (await page.getAttribute("#live", "class")) === "on",
      live: await page.textContent("#live"),
    }));
    say("the page is live (Server-Sent Events)");

    // every server listed, with its role and a lag
    const row = (name, cell) => page.textContent(`#servers tr[data-name="${name}"] td.${cell}`);
    for (const [name, role] of [["P", "primary"], ["R", "replica"], ["S", "staging"]]) {
      await waitFor(`${name} listed as ${role} with a lag`, 10000, async () => {
        const r = await page.$(`#servers tr[data-name="${name}"]`);
        if (!r) return { ok: false, name, listed: false };
        const got = { role: await row(name, "role"), lag: await row(name, "lag") };
        return { ok: got.role === role && /^\d+$/.test(got.lag), ...got };
      });
    }
    say("P, R and S listed with their roles and lags");

    // a write: the seq moves on the page without a reload
    await page.evaluate(() => (window.__same_page = 42));
    const before = Number(await page.textContent("#summary .seq"));
    const put = await fetch(P + "/v1/items/site/browser.html", { method: "PUT", body: "<p>hi</p>" });
    if (put.status >= 300) throw new Error(`the write failed: ${put.status}`);
    const seq = Number((await (await fetch(P + "/v1/status")).json()).seq);
    if (!(seq > before)) throw new Error(`seq ${seq} after the write, ${before} before`);
    await waitFor(`seq ${seq} on the page`, 10000, async () => {
      const got = { summary: await page.textContent("#summary .seq"), R: await row("R", "seq") };
      return { ok: Number(got.summary) === seq && Number(got.R) === seq, ...got };
    });
    if ((await page.evaluate(() => window.__same_page)) !== 42) throw new Error("the page reloaded");
    say(`the write shows: seq ${before} -> ${seq} on P and on R's row, no reload`);
    await waitFor("the chart's write rate line", 10000, async () => ({
      ok: (await page.$("#rates svg.chart polyline.wrate")) !== null,
    }));
    say("the chart draws the write rate");

    // a server stopped is shown down
    process.kill(SPID, "SIGTERM");
    await waitFor("S shown down", 15000, async () => {
      const cls = await page.getAttribute('#servers tr[data-name="S"]', "class");
      return { ok: cls === "st-down", class: cls, state: await row("S", "state") };
    });
    say("S stopped: shown down, still listed");

    // a mirror run: its progress moves
    const run = await fetch(`${P}/v1/mirrors/${MIRROR}/run`, { method: "POST" });
    if (run.status !== 202) throw new Error(`the run did not start: ${run.status}`);
    const mrow = `#mirrors tr[data-name="${MIRROR}"]`;
    const seen = new Set();
    await waitFor("the mirror run to end", 40000, async () => {
      const cls = await page.getAttribute(mrow, "class");
      const bar = await page.$(`${mrow} progress`);
      if (bar) seen.add(await bar.getAttribute("value"));
      return { ok: cls === "ms-ok" && seen.size > 0, class: cls, progress: [...seen] };
    });
    const values = [...seen].map(Number);
    if (values.length < 2 || !values.some((v) => v < 100))
      throw new Error(`the progress bar did not move: ${JSON.stringify(values)}`);
    const last = await page.textContent(`${mrow} td.last`);
    if (!/ago$/.test(last)) throw new Error(`the last run: "${last}"`);
    say(`the mirror run's progress moved (${values.join(", ")} %), then ok, last run ${last}`);

    if (errors.length) throw new Error(`script errors on the page: ${errors.join("; ")}`);
    await page.screenshot({ path: process.env.SHOT, fullPage: true });
    say(`screenshot: ${process.env.SHOT}`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(`FAIL: ${e.message}`);
  process.exit(1);
});
