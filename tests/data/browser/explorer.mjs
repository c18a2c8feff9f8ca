// Drives the explorer's page in Debian's Chromium over the DevTools protocol (playwright-core), as a user would:
// type a prompt, see the grid, switch views, hover a cell, compare two prompts, view their difference and the
// tracked tokens' curves, export a run and import it beside a new one. Prints what it saw as one JSON line; exits
// non-zero on the first check that fails. Usage: node explorer.mjs URL SCREENSHOT_DIR
import { chromium } from 'playwright-core';
import { join } from 'node:path';

const [url, shots] = process.argv.slice(2);
const seen = { errors: [] };
function check(condition, what) {
  if (!condition) throw new Error('check failed: ' + what + ' ' + JSON.stringify(seen));
}

// Headless, with a fresh profile of playwright's own making (it refuses --user-data-dir).
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 900 }, acceptDownloads: true });
  page.on('pageerror', (e) => seen.errors.push('page: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') seen.errors.push('console: ' + m.text()); });
  page.on('dialog', (d) => { seen.errors.push('dialog: ' + d.message()); d.dismiss(); });
  await page.goto(url);
  const ready = (prefix) => page.waitForSelector(`body[data-explorer-ready^="${prefix}"]`, { timeout: 60000 });

  // A prompt, three generated tokens, two tracked tokens.
  await page.fill('#prompt-a', '. The Space Needle is located in the city of');
  await page.fill('#generate', '3');
  await page.fill('#track', ' Seattle| Paris');
  await page.click('#run');
  await ready('a ');
  const grid = await page.evaluate(() => ({
    cells: document.querySelectorAll('#run-a td[data-r]').length,
    rows: document.querySelectorAll('#run-a tr.lens-row').length,
    heads: document.querySelectorAll('#run-a .lens-head').length,
    generated: [...document.querySelectorAll('#run-a .lens-head')].filter((e) => e.title.endsWith('(generated)')).length,
    first: document.querySelector('#run-a td[data-r="0"][data-t="0"]').textContent,
    views: [...document.querySelectorAll('#view option')].map((o) => o.value),
    curves: document.querySelectorAll('#curves svg polyline').length,
    progress: document.getElementById('progress').textContent,
  }));
  seen.grid = grid;
  check(grid.rows > 0 && grid.cells === grid.rows * (grid.heads / 2), 'a full grid');
  check(grid.generated === 2 * 3, 'three generated tokens marked');
  check(grid.views.includes('lens') && grid.views.includes('delta_lens'), 'both views offered');
  check(grid.curves === 2 * 2, 'a probability and a rank curve per tracked token');
  check(grid.progress.startsWith('done in'), 'progress ends with done');

  // Hover a cell: its top-k in the panel.
  const cell = `#run-a td[data-r="${grid.rows - 1}"][data-t="5"]`;
  await page.hover(cell);
  seen.hover = await page.textContent('#hover');
  check((seen.hover.match(/: prob /g) || []).length === 5, 'the hover lists the top 5');
  await page.screenshot({ path: join(shots, 'explorer-grid.png'), fullPage: true });

  // Switch to the delta lens and to another statistic.
  await page.selectOption('#view', 'delta_lens');
  await ready('a delta_lens');
  seen.delta_first = await page.textContent('#run-a td[data-r="0"][data-t="0"]');
  await page.selectOption('#stat', 'kl');
  await ready('a delta_lens kl');

  // Compare two prompts: both grids, then their difference per cell.
  await page.check('#compare');
  await page.fill('#prompt-b', '. The Eiffel Tower is located in the city of');
  await page.selectOption('#view', 'lens');
  await page.click('#run');
  await ready('ab ');
  seen.compare = await page.evaluate(() => ({
    a: document.querySelectorAll('#run-a td[data-r]').length,
    b: document.querySelectorAll('#run-b td[data-r]').length,
    views: [...document.querySelectorAll('#view option')].map((o) => o.value),
    curves: document.querySelectorAll('#curves svg polyline').length,
  }));
  check(seen.compare.a > 0 && seen.compare.b > 0, 'two grids side by side');
  check(seen.compare.views.includes('kl_ab'), 'a KL difference view');
  check(seen.compare.views.filter((v) => v.startsWith('dp:')).length === 2, 'a difference view per tracked token');
  check(seen.compare.curves === 2 * 2 * 2, 'curves for both runs');
  await page.screenshot({ path: join(shots, 'explorer-compare.png'), fullPage: true });
  await page.selectOption('#view', 'kl_ab');
  await ready('ab kl_ab');
  seen.kl = await page.evaluate(() => [...document.querySelectorAll('.diff-grid td[data-r]')].map((e) => ({ t: +e.dataset.t, kl: +e.textContent })));
  check(seen.kl.length > 0 && seen.kl.every((c) => c.kl >= 0), 'KL values, none negative');
  // The prompts share their first two tokens ('.', ' The'): no divergence there, some after.
  check(seen.kl.filter((c) => c.t < 2).every((c) => c.kl < 1e-3), 'no divergence where the prompts agree');
  check(seen.kl.some((c) => c.t >= 2 && c.kl > 0.1), 'divergence where they differ');
  seen.kl = seen.kl.length;
  await page.screenshot({ path: join(shots, 'explorer-difference.png'), fullPage: true });
  const dp = seen.compare.views.find((v) => v.startsWith('dp:'));
  await page.selectOption('#view', dp);
  await ready('ab ' + dp);

  // Export run A, run a new prompt alone, import the export beside it.
  await page.selectOption('#view', 'lens');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const exported = join(shots, 'exported-run.json');
  await download.saveAs(exported);
  await page.uncheck('#compare');
  await page.fill('#prompt-a', '<img src=x onerror="alert(1)"> The Colosseum is located in the city of');
  await page.click('#run');
  await page.waitForFunction(() => document.querySelector('#run-a h3').textContent.includes('Colosseum'));
  await page.setInputFiles('#import', exported);
  await ready('ab ');
  seen.imported = await page.textContent('#run-b h3');
  check(seen.imported.startsWith('B (imported): . The Space Needle'), 'the imported run as B');
  check(await page.evaluate(() => document.querySelectorAll('#run-a img, #run-b img').length) === 0,
        'a prompt\'s markup stays text');
  await page.screenshot({ path: join(shots, 'explorer-imported.png'), fullPage: true });
  check(seen.errors.length === 0, 'no page errors, console errors or dialogs');
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
