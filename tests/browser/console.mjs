// Drives the agent console in Debian's headless Chromium: the conversation is listed with its
// routing attributes and the customer's message; the agent accepts it, writes, and sees the
// message in the transcript. Usage: node console.mjs SANDBOX_URL CONVERSATION_ID SCREENSHOT
import { chromium } from 'playwright-core';

const [url, conversation, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on('pageerror', (error) => { console.error('page error:', error.message); process.exitCode = 1; });
  await page.goto(`${url}/console`);
  const item = page.locator(`#waiting .item[data-conversation="${conversation}"]`);
  await item.waitFor({ timeout: 10_000 });
  await item.click();
  await page.getByText('Routing attributes: issueType=Billing').waitFor({ timeout: 10_000 });
  await page.locator('#transcript .entry.EndUser', { hasText: 'I need help with my bill' }).waitFor({ timeout: 10_000 });
  await page.click('#accept');
  await page.locator(`#active .item[data-conversation="${conversation}"]`).waitFor({ timeout: 10_000 });
  await page.fill('#message', 'Hello, I am looking at your bill now.');
  await page.click('#composer button[type=submit]');
  await page.locator('#transcript .entry.Agent', { hasText: 'looking at your bill' }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log('console ok');
} finally {
  await browser.close();
}
