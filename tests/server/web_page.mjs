// web_page.mjs - the page at / in headless Chromium (the Debian package, driven by
// playwright-core): attach an image with the file picker, send, watch the answer stream in
// (reasoning apart from the answer) and the cache line appear; paste a second image, send a
// second turn, and see the cache reuse the first turn (reused tokens > 0, the first image not
// encoded again).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MOE, IMG, startServer, requireNode, runCases } from './lib.mjs';

const { chromium } = requireNode('playwright-core');
const CHROMIUM = process.env.QVLM_CHROMIUM || '/usr/bin/chromium';

const server = await startServer(['-m', MOE, '--verbose']);
const profile = mkdtempSync(join(tmpdir(), 'qvlm-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run'],
});
const page = browser.pages()[0] || (await browser.newPage());
const consoleErrors = [];
page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
page.on('pageerror', (e) => consoleErrors.push(String(e)));

/* Record every change of the n-th assistant bubble's text, to see it stream. */
async function watchStreaming(n) {
  await page.evaluate((n) => {
    window.__updates = [];
    const obs = new MutationObserver(() => {
      const b = document.querySelectorAll('[data-testid=message-assistant]')[n];
      if (b) window.__updates.push(b.querySelector('[data-testid=reasoning]').textContent.length +
                                   b.querySelector('[data-testid=answer]').textContent.length);
    });
    obs.observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
  }, n);
}

async function finishedTurn(n) {
  const bubble = page.locator('[data-testid=message-assistant]').nth(n);
  await page.locator('[data-testid=message-assistant][data-done="1"]').nth(n).waitFor({ timeout: 120000 });
  const errors = await bubble.locator('[data-testid=error]').allTextContents();
  assert.deepEqual(errors, [], `turn ${n + 1} failed: ${errors.join(' | ')}\nconsole: ${consoleErrors.join(' | ')}\n` +
                   `server:\n${server.stderr()}`);
  const cache = await bubble.locator('[data-testid=cache-line]').evaluate((e) => ({ ...e.dataset, text: e.textContent }));
  const reasoning = await bubble.locator('[data-testid=reasoning]').textContent();
  const answer = await bubble.locator('[data-testid=answer]').textContent();
  const updates = await page.evaluate(() => window.__updates);
  console.log(`  turn ${n + 1}: ${cache.text}`);
  return { cache, reasoning, answer, updates };
}

const failed = await runCases([
  ['two image turns in the browser; the second reuses the first', async () => {
    await page.goto(server.url);
    await page.locator('#model').filter({ hasText: 'model' }).waitFor();
    // Turn 1: thinking on (the default), an image from the file picker.
    // Long enough answers (thinking rarely ends in a random model) that they arrive in many reads.
    await page.fill('[data-testid=max-tokens]', '1024');
    await page.setInputFiles('[data-testid=file-input]', IMG.a);
    await page.locator('[data-testid=pending-thumb]').waitFor();
    await page.fill('[data-testid=prompt]', 'What is in this picture?');
    await watchStreaming(0);
    // The tiny model answers at ~10k tokens/s, so the whole stream could arrive in one or two
    // reads and the page's incremental rendering would go unseen (1 run in 3 failed so): a slow
    // download link (CDP network emulation) spreads the same events over many reads.
    const cdp = await browser.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions',
                   { offline: false, latency: 0, downloadThroughput: 16 * 1024, uploadThroughput: -1 });
    await page.click('[data-testid=send]');
    const t1 = await finishedTurn(0);
    await cdp.send('Network.emulateNetworkConditions',
                   { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    assert.equal(await page.locator('[data-testid=message-user] [data-testid=thumb]').count(), 1);
    assert.ok(t1.reasoning.length > 0, 'the thinking is shown apart');
    assert.ok(new Set(t1.updates).size >= 3, `the answer streamed in (${new Set(t1.updates).size} distinct updates)`);
    assert.equal(t1.cache.imagesEncoded, '1');
    assert.equal(t1.cache.cached, '0');

    // Turn 2: thinking off, an image pasted into the text box.
    await page.uncheck('[data-testid=think]');
    const png = readFileSync(IMG.b).toString('base64');
    await page.locator('[data-testid=prompt]').evaluate((ta, b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
      ta.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, png);
    await page.locator('[data-testid=pending-thumb]').waitFor();
    await page.fill('[data-testid=prompt]', 'And this one?');
    await watchStreaming(1);
    await page.press('[data-testid=prompt]', 'Enter');
    const t2 = await finishedTurn(1);
    assert.ok(Number(t2.cache.cached) > 0, 'the second turn reuses the first');
    assert.ok(Number(t2.cache.cached) >= Number(t1.cache.prompt) - 2, 'all of the first prompt but its <think>\\n');
    assert.equal(t2.cache.imagesEncoded, '1', 'only the new image is encoded');
    assert.equal(t2.cache.imagesCached, '1', 'the first image is reused');
    assert.ok(t2.answer.length > 0, 'thinking off: an answer');
    assert.match(t2.cache.text, /reused \d+ of \d+ prompt tokens/);
    assert.equal(await page.locator('[data-testid=error]').count(), 0);
    assert.deepEqual(consoleErrors, []);
  }],
]);
await browser.close();
rmSync(profile, { recursive: true, force: true });
await server.stop();
process.exit(failed ? 1 : 0);
