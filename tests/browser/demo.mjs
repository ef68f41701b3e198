// The demo as two people use it, in Debian's headless Chromium: a customer in the webchat and
// an agent in the console. Walks through chatting with the bot, the handover, the queue, the
// agent joining, messages both ways, the customer closing and reopening the tab, a transfer,
// and the end. Saves screenshots of both pages at each step.
// Usage: node demo.mjs WEBCHAT_URL CONSOLE_URL SCREENSHOT_DIR
import { chromium } from 'playwright-core';

const [webchat, consoleUrl, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const timeout = 15_000;
let step = 0;

try {
  const customerContext = await browser.newContext({ viewport: { width: 480, height: 760 } });
  const agentContext = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const watch = (page, who) => page.on('pageerror', (error) => {
    console.error(`${who} page error:`, error.message);
    process.exitCode = 1;
  });
  let customer = await customerContext.newPage();
  watch(customer, 'webchat');
  const agent = await agentContext.newPage();
  watch(agent, 'console');
  const snap = async (name) => {
    step += 1;
    const prefix = `${shots}/${String(step).padStart(2, '0')}-${name}`;
    await customer.screenshot({ path: `${prefix}-webchat.png`, fullPage: true });
    await agent.screenshot({ path: `${prefix}-console.png`, fullPage: true });
  };
  const say = async (text) => {
    await customer.fill('#text', text);
    await customer.click('#send');
    await customer.locator('.msg.user', { hasText: text }).last().waitFor({ timeout });
  };
  const agentSays = async (text) => {
    await agent.fill('#message', text);
    await agent.click('#composer button[type=submit]');
    await agent.locator('#transcript .entry.Agent', { hasText: text }).waitFor({ timeout });
  };

  // 1. The customer chats with the bot, then asks for an agent.
  await customer.goto(webchat);
  await agent.goto(consoleUrl);
  await customer.locator('.msg.bot').first().waitFor({ timeout });
  await say('hello');
  await customer.locator('.msg.bot', { hasText: 'What can I do for you' }).waitFor({ timeout });
  await say('I would like to talk to an agent');
  await customer.locator('.msg.bot', { hasText: 'Connecting you' }).waitFor({ timeout });

  // 3a. The queue banner.
  await customer.locator('#banner.shown', { hasText: 'in the queue' }).waitFor({ timeout });
  await customer.locator('#state[data-status="queue"]').waitFor({ timeout });

  // 2. The console lists the conversation with its routing attributes and the transcript.
  const item = agent.locator('#waiting .item').first();
  await item.waitFor({ timeout });
  await item.click();
  await agent.getByText('issueType=Sandbox').waitFor({ timeout });
  await agent.locator('#transcript .entry.EndUser', { hasText: 'talk to an agent' }).first().waitFor({ timeout });
  await snap('queued');
  await agent.click('#accept');

  // 3b. The customer sees the agent join and the reply under the agent's name.
  await customer.locator('.msg.system', { hasText: 'joined the chat' }).waitFor({ timeout });
  await customer.locator('#state[data-status="active"]').waitFor({ timeout });
  await agentSays('Hello, I am Sandbox Agent. How can I help?');
  const reply = customer.locator('.msg.agent', { hasText: 'How can I help' });
  await reply.waitFor({ timeout });
  const name = await reply.locator('.who').textContent();
  if (!name || !name.includes('Agent')) throw new Error(`the agent's name shows as ${name}`);
  await snap('agent-joined');

  // 4. The customer writes; the agent sees it.
  await say('My card was charged twice');
  await agent.locator('#transcript .entry.EndUser', { hasText: 'charged twice' }).waitFor({ timeout });

  // 5. The customer closes the tab and comes back: the agent sees both notices, and what the
  //    agent wrote meanwhile is there.
  await customer.close({ runBeforeUnload: true });
  await agent.locator('#transcript .entry', { hasText: 'User left the conversation' }).waitFor({ timeout });
  await agentSays('I refunded one of the charges.');
  customer = await customerContext.newPage();
  watch(customer, 'webchat');
  await customer.goto(webchat);
  await agent.locator('#transcript .entry', { hasText: 'User joined the conversation' }).waitFor({ timeout });
  await customer.locator('.msg.agent', { hasText: 'refunded one of the charges' }).waitFor({ timeout });
  await customer.locator('.msg.agent', { hasText: 'How can I help' }).waitFor({ timeout });
  await snap('reopened');

  // 6. The agent transfers; the customer stays and meets the new agent.
  agent.once('dialog', (dialog) => dialog.accept('Second Agent'));
  await agent.click('#transfer');
  await customer.locator('.msg.system', { hasText: 'chatting with Second Agent' }).waitFor({ timeout });
  await agentSays('Second Agent here, anything else?');
  await customer.locator('.msg.agent', { hasText: 'anything else' }).waitFor({ timeout });
  await snap('transferred');

  // 7. The agent ends the session: the handover completes and the bot is back.
  await agent.click('#end');
  await customer.locator('.msg.bot', { hasText: 'has ended' }).waitFor({ timeout });
  await customer.locator('#state[data-status="bot"]').waitFor({ timeout });
  await say('thanks');
  await customer.locator('.msg.bot', { hasText: "You're welcome" }).waitFor({ timeout });
  await snap('ended');

  // Each output is shown once: the page polls from a timer and after every send, and the two
  // must never render the same output twice (CI once caught the greeting shown twice).
  const seqs = await customer.locator('#log .msg').evaluateAll((nodes) => nodes.map((n) => n.dataset.seq));
  const repeated = seqs.filter((seq, i) => seqs.indexOf(seq) !== i);
  if (repeated.length) throw new Error(`the webchat shows outputs ${repeated.join(', ')} more than once`);
  console.log('demo walk-through ok');
} finally {
  await browser.close();
}
