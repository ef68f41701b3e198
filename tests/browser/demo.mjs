// The demo, as two people see it in Debian's headless Chromium: a customer in the webchat asks
// for an agent and writes; the agent finds the conversation in the console, sees the
// customer's message, accepts and answers; the customer reads the answer.
// Usage: node demo.mjs WEBCHAT_URL CONSOLE_URL SCREENSHOT_PREFIX
import { chromium } from 'playwright-core';

const [webchat, consoleUrl, prefix] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const customer = await browser.newPage({ viewport: { width: 600, height: 800 } });
  customer.on('pageerror', (error) => { console.error('webchat error:', error.message); process.exitCode = 1; });
  await customer.goto(webchat);
  await customer.locator('.msg.bot').first().waitFor({ timeout: 10_000 });
  const say = async (text) => {
    await customer.fill('#text', text);
    await customer.click('#send');
  };
  await say('I need a human agent please');
  await customer.locator('.msg.bot', { hasText: 'Connecting you' }).waitFor({ timeout: 10_000 });
  await say('My card was charged twice');

  const agent = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  agent.on('pageerror', (error) => { console.error('console error:', error.message); process.exitCode = 1; });
  await agent.goto(consoleUrl);
  const item = agent.locator('#waiting .item').first();
  await item.waitFor({ timeout: 15_000 });
  await item.click();
  await agent.locator('#transcript .entry.EndUser', { hasText: 'charged twice' }).waitFor({ timeout: 15_000 });
  await agent.click('#accept');
  await agent.fill('#message', 'Hello, I am looking into the double charge.');
  await agent.click('#composer button[type=submit]');

  await customer.locator('.msg.agent', { hasText: 'double charge' }).waitFor({ timeout: 15_000 });
  await agent.screenshot({ path: `${prefix}-console.png`, fullPage: true });
  await customer.screenshot({ path: `${prefix}-webchat.png`, fullPage: true });
  console.log('demo ok');
} finally {
  await browser.close();
}
