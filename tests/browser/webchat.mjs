// Drives the cognigy-sandbox webchat in Debian's headless Chromium, as a customer: the bot
// greets and answers small talk; asking for an agent hands over; the agent's message shows
// under the agent's name; the customer answers. The test on the other side plays the agent.
// Usage: node webchat.mjs WEBCHAT_URL SCREENSHOT
import { chromium } from 'playwright-core';

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 600, height: 800 } });
  page.on('pageerror', (error) => { console.error('page error:', error.message); process.exitCode = 1; });
  await page.goto(url);
  await page.locator('.msg.bot', { hasText: "I'm the sandbox bot" }).first().waitFor({ timeout: 10_000 });
  const say = async (text) => {
    await page.fill('#text', text);
    await page.click('#send');
  };
  await say('hello');
  await page.locator('.msg.user', { hasText: 'hello' }).waitFor({ timeout: 10_000 });
  await page.locator('.msg.bot', { hasText: 'Hello!' }).waitFor({ timeout: 10_000 });
  await say('I would like to talk to an agent');
  await page.locator('.msg.bot', { hasText: 'Connecting you with an agent' }).waitFor({ timeout: 10_000 });
  await page.locator('#cancel.shown').waitFor({ timeout: 10_000 });
  // The agent (the test) accepts and writes.
  await page.locator('.msg.agent', { hasText: 'Hi, I am Jane' }).waitFor({ timeout: 20_000 });
  await page.locator('#state[data-status="active"]').waitFor({ timeout: 10_000 });
  const name = await page.locator('.msg.agent .who').first().textContent();
  if (name !== 'Jane') throw new Error(`the agent's name shows as ${name}`);
  await say('Thanks Jane, my card was charged twice');
  await page.locator('.msg.user', { hasText: 'charged twice' }).waitFor({ timeout: 10_000 });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log('webchat ok');
} finally {
  await browser.close();
}
