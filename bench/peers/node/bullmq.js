'use strict';
// BullMQ peer: node bullmq.js preload|worker|submit [options]
//   env REDIS_SOCK: the private Redis' unix socket; BENCH_QUEUE: queue name
//   preload --jobs N [--chunk 1000]      Queue.addBulk in chunks (BullMQ's bulk API)
//   worker --jobs N --concurrency C [--mode B1|B3]   READY/GO handshake, see common.js
//   submit --jobs N [--interval-ms 10]  B3: one add at a time, job data {t: wall ms}
//   openloop --rate R --seconds S       B2: Queue.add at R/s, open loop (common.js)
const { Queue, Worker } = require('bullmq');
const c = require('./common');

const connection = { path: process.env.REDIS_SOCK, maxRetriesPerRequest: null };
const name = process.env.BENCH_QUEUE || 'bench';
const cmd = process.argv[2];

async function preload() {
  const jobs = c.argInt('jobs', 100000);
  const chunk = c.argInt('chunk', 1000);
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  for (let i = 0; i < jobs; i += chunk) {
    const n = Math.min(chunk, jobs - i);
    const batch = new Array(n);
    for (let k = 0; k < n; k++) batch[k] = { name: 'noop', data: { i: i + k } };
    await queue.addBulk(batch);
  }
  await queue.close();
}

async function worker() {
  const jobs = c.argInt('jobs', 100000);
  const concurrency = c.argInt('concurrency', 100);
  const mode = c.argStr('mode', 'B1');
  const counter = c.makeCounter(jobs, mode);
  const w = new Worker(name, async (job) => { counter.hit(job.data.t); },
    { connection, concurrency, autorun: false });
  w.on('error', (e) => process.stderr.write(`bullmq worker error: ${e}\n`));
  w.on('failed', (job, e) => process.stderr.write(`bullmq job failed: ${e}\n`));
  await w.waitUntilReady();
  const stop = async () => {
    await w.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  c.line('READY');
  await c.waitForGo();
  w.run().catch((e) => { process.stderr.write(`bullmq run: ${e}\n`); process.exit(3); });
}

async function submit() {
  const jobs = c.argInt('jobs', 200);
  const interval = c.argInt('interval-ms', 10);
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  for (let i = 0; i < jobs; i++) {
    await queue.add('noop', { t: c.wallMs() });
    await c.sleep(interval);
  }
  await queue.close();
}

async function openloop() {
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  await c.openLoop((i) => queue.add('noop', { i }), c.argInt('rate', 1000), c.argInt('seconds', 5), 1);
  await queue.close();
}

const main = { preload, worker, submit, openloop }[cmd];
if (!main) {
  process.stderr.write('usage: node bullmq.js preload|worker|submit|openloop [options]\n');
  process.exit(2);
}
main().catch((e) => { process.stderr.write(`bullmq ${cmd}: ${e && e.stack || e}\n`); process.exit(1); });
