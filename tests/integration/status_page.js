// tests/integration/status_page.js: drives headless Chromium (Debian's, /usr/bin/chromium) with
// playwright-core for status_page_test.py. Usage: node status_page.js PLAYWRIGHT_CORE_DIR URL.
// Loads the page once (never reloads it) and answers one JSON line on stdout per JSON line on
// stdin:
//   {"cmd": "expect", "want": {...}, "timeout_ms": N}: waits (bounded) until what the page shows
//       (state() below) has every key of `want` equal to it; {"matched", "shown", "problems"};
//   {"cmd": "screenshot", "path": P}: {"done": true};
//   {"cmd": "quit"}: {"problems", "reloaded"} and exits.
// problems: console errors and warnings (a CSP violation is one), uncaught page errors, failed
// requests and answers >= 400. Diagnostics go to stderr.
'use strict';
const readline = require('readline');

const [module_dir, url] = process.argv.slice(2);
const { chromium } = require(module_dir);

const problems = [];

// What the page shows, read from its text (the ids of etc/status/index.html).
function state() {
  const text = (id) => document.getElementById(id).textContent;
  const rows = [...document.querySelectorAll('#sites tbody tr')].map((tr) => {
    const field = (f) => tr.querySelector(`td[data-field="${f}"]`).textContent;
    return {
      site: tr.querySelector('td.site').textContent,
      queued: Number(field('queued')),
      deferred: Number(field('deferred')),
      in_flight: Number(field('in_flight')),
      state: field('state'),
    };
  }).sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0));
  return {
    received: text('received-total'),
    delivered: text('delivered-total'),
    received_peak: text('received-peak'),
    sites: rows,
    suspended: [...document.querySelectorAll('#suspended li')].map((li) => li.dataset.site).sort(),
    refreshes: Number(document.getElementById('updated').dataset.refreshes || 0),
    live: text('state'),
    error: document.getElementById('error').hidden ? '' : text('error'),
    loaded_at: window.status_page_test_loaded_at || null,
  };
}

function matches(shown, want) {
  return Object.keys(want).every((k) => JSON.stringify(shown[k]) === JSON.stringify(want[k]));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // Chromium's sandbox cannot start as root (the tests run as root in CI).
    args: process.getuid && process.getuid() === 0 ? ['--no-sandbox'] : [],
  });
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
  // A CSP violation is also on the console; this names the directive for certain.
  await page.addInitScript(() => document.addEventListener('securitypolicyviolation',
    (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`)));
  const response = await page.goto(url, { waitUntil: 'load' });
  if (!response || response.status() !== 200) problems.push(`GET ${url}: ${response && response.status()}`);
  // Set once; a reload would lose it.
  await page.evaluate(() => { window.status_page_test_loaded_at = Date.now(); });
  const loaded_at = await page.evaluate(() => window.status_page_test_loaded_at);

  const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const cmd = JSON.parse(line);
    if (cmd.cmd === 'expect') {
      const end = Date.now() + (cmd.timeout_ms || 30000);
      let shown = await page.evaluate(state);
      while (!matches(shown, cmd.want) && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 100));
        shown = await page.evaluate(state);
      }
      out({ matched: matches(shown, cmd.want), shown, problems });
    } else if (cmd.cmd === 'screenshot') {
      await page.screenshot({ path: cmd.path, fullPage: true });
      out({ done: true });
    } else if (cmd.cmd === 'quit') {
      const now = await page.evaluate(() => window.status_page_test_loaded_at || null);
      await browser.close();
      out({ problems, reloaded: now !== loaded_at });
      process.exit(0);  // stdout is a pipe: written synchronously on Linux
    }
  }
  await browser.close();
})().catch((e) => {
  console.error(e && e.stack || String(e));
  process.stdout.write(JSON.stringify({ fatal: String(e && e.message || e) }) + '\n');
  process.exit(1);
});
