'use strict';
// graphile-worker peer: node graphile.js preload|worker|submit [options]
//   env PG_URL: libpq URL of the benchmark's own database
//   preload --jobs N [--chunk 10000]     migrate, then WorkerUtils.addJobs in chunks
//                                        (graphile-worker's bulk API, one add_jobs() call each)
//   worker --jobs N --concurrency C [--batched 1] [--mode B1|B3]
//          batched: localQueue {size: 500}, completeJobBatchDelay 0, failJobBatchDelay 0
//          (https://worker.graphile.org/docs/performance#batching); otherwise defaults.
//   submit --jobs N [--interval-ms 10]   B3: one addJob at a time, payload {t: wall ms}
const { run, makeWorkerUtils, Logger } = require('graphile-worker');
const c = require('./common');

const connectionString = process.env.PG_URL;
const cmd = process.argv[2];
// graphile-worker logs to stdout by default, stdout is the driver's channel,
// and its info level has a line per job: warnings and errors only, to stderr.
const logger = new Logger(() => (level, message) => {
  if (level === 'warning' || level === 'error') process.stderr.write(`graphile ${level}: ${message}\n`);
});

async function preload() {
  const jobs = c.argInt('jobs', 100000);
  const chunk = c.argInt('chunk', 10000);
  const utils = await makeWorkerUtils({ connectionString, logger });
  try {
    await utils.migrate();
    for (let i = 0; i < jobs; i += chunk) {
      const n = Math.min(chunk, jobs - i);
      const specs = new Array(n);
      for (let k = 0; k < n; k++) specs[k] = { identifier: 'noop', payload: { i: i + k } };
      await utils.addJobs(specs);
    }
  } finally {
    await utils.release();
  }
}

async function worker() {
  const jobs = c.argInt('jobs', 100000);
  const concurrency = c.argInt('concurrency', 1);
  const batched = c.argInt('batched', 0) === 1;
  const mode = c.argStr('mode', 'B1');
  const counter = c.makeCounter(jobs, mode);
  const preset = { worker: {} };
  if (batched) {
    preset.worker.localQueue = { size: 500 };
    preset.worker.completeJobBatchDelay = 0;
    preset.worker.failJobBatchDelay = 0;
  }
  // Connect, migrate-check and load everything before the handshake: the
  // driver times only the drain.
  const utils = await makeWorkerUtils({ connectionString, logger });
  await utils.migrate();
  await utils.release();
  c.line('READY');
  await c.waitForGo();
  const runner = await run({
    connectionString,
    concurrency,
    // graphile's advice: max(10, concurrency + 2)
    maxPoolSize: Math.max(10, concurrency + 2),
    noHandleSignals: true,
    logger,
    taskList: { noop: async (payload) => { counter.hit(payload && payload.t); } },
    preset,
  });
  const stop = async () => {
    await runner.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  await runner.promise;
}

async function submit() {
  const jobs = c.argInt('jobs', 200);
  const interval = c.argInt('interval-ms', 10);
  const utils = await makeWorkerUtils({ connectionString, logger });
  try {
    for (let i = 0; i < jobs; i++) {
      await utils.addJob('noop', { t: c.wallMs() });
      await c.sleep(interval);
    }
  } finally {
    await utils.release();
  }
}

// B2: utils.addJob (one INSERT, committed) at R/s, open loop (common.js).
async function openloop() {
  const utils = await makeWorkerUtils({ connectionString, logger });
  try {
    await c.openLoop((i) => utils.addJob('noop', { i }), c.argInt('rate', 1000), c.argInt('seconds', 5), 1);
  } finally {
    await utils.release();
  }
}

const main = { preload, worker, submit, openloop }[cmd];
if (!main) {
  process.stderr.write('usage: node graphile.js preload|worker|submit|openloop [options]\n');
  process.exit(2);
}
main().catch((e) => { process.stderr.write(`graphile ${cmd}: ${e && e.stack || e}\n`); process.exit(1); });
