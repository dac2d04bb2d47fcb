'use strict';
// The driver of bench/peers: preloads, starts a peer's worker, times the
// drain, verifies the count from the peer's own store and prints one JSON
// line per run on stdout. Chatter goes to stderr. Started by
// bench/peers/run.sh, which owns the servers (Redis, the PostgreSQL database).
//
//   node driver.js --peer bullmq|sidekiq|celery|graphile --workload B1|B2|B3
//                  --durability D0|D2 [--jobs N] [--runs R] [--batched 0|1]
//                  [--concurrency C] [--rates 500,2000,...] [--seconds S]
//
// B2 (bullmq, graphile): per rate, a fresh store and worker (running the
// jobs meanwhile), then the peer's `openloop` program submits at that rate
// for S seconds, open loop, and reports the ack latencies; every submit
// must be acknowledged without an error. Stops after the first saturated
// rate (acked/s below 95 % of the offered rate, or ack p99 above 1 s).
// env: REDIS_SOCK, REDIS_PID (Redis peers); PG_URL, PG_POSTMASTER_PID (graphile)
//
// Timing (B1): the worker process connects and loads everything first and
// says READY; the driver then samples CPU time, writes GO, and the clock
// runs until the peer's own store says all N jobs completed:
//   bullmq    ZCARD of the queue's completed set (polled every 10 ms)
//   celery    the Redis counter each job increments (polled every 10 ms)
//   sidekiq   the worker's DONE line (a server middleware counts jobs after
//             they ran; Sidekiq keeps no per-job completion record), checked
//             after shutdown against Sidekiq's own stat:processed
//   graphile  the worker's DONE line, then until no job row is left in
//             graphile_worker._private_jobs (completed jobs are deleted)
// CPU: user + system time of the server's and the worker's process trees
// (live processes plus their reaped children), from /proc.
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const Redis = require('ioredis');
const { Client } = require('pg');
const { wallMs, sleep } = require('./common');

const HERE = __dirname;
const PEERS = path.dirname(HERE);
const NODE = process.execPath;
const PYTHON = '/usr/bin/python3';
const STALL_MS = 60000;
const READY_MS = 120000;
const PRELOAD_MS = 1800000;
const TAIL_MS = 60000;

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i < 0 ? dflt : process.argv[i + 1];
}
function log(s) {
  process.stderr.write(`[driver] ${s}\n`);
}
function fail(s) {
  const e = new Error(s);
  e.benchFailure = true;
  throw e;
}

const peerName = arg('peer');
const workload = arg('workload', 'B1');
const durability = arg('durability', 'D0');
// B2's workers never reach their target: they run whatever arrives.
const jobs = Number(arg('jobs', workload === 'B3' ? 200 : workload === 'B2' ? 1e12 : 100000));
const b2Rates = String(arg('rates', '500,2000,8000,16000,32000')).split(',').map(Number);
const b2Seconds = Number(arg('seconds', 5));
const runs = Number(arg('runs', 1));
const batched = arg('batched', '0') === '1';
const intervalMs = Number(arg('interval-ms', 10));

// -- CPU time of process trees ------------------------------------------------

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

function procTable() {
  const table = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let s;
    try {
      s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
    } catch (_) {
      continue;
    }
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // f[0] = state (field 3); ppid = field 4; utime..cstime = fields 14..17
    table.set(Number(d), {
      ppid: Number(f[1]),
      ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
    });
  }
  return table;
}

// CPU ticks per process: of the trees under `treeRoots`, and of the single
// processes `flat` (no descendants). Reaped children count in their parent's
// cutime/cstime.
function cpuSnapshot(treeRoots, flat = []) {
  const table = procTable();
  const children = new Map();
  for (const [pid, p] of table) {
    if (!children.has(p.ppid)) children.set(p.ppid, []);
    children.get(p.ppid).push(pid);
  }
  const snap = new Map();
  const stack = treeRoots.filter((p) => table.has(p));
  while (stack.length) {
    const pid = stack.pop();
    if (snap.has(pid)) continue;
    snap.set(pid, table.get(pid).ticks);
    for (const c of children.get(pid) || []) stack.push(c);
  }
  for (const pid of flat) if (table.has(pid)) snap.set(pid, table.get(pid).ticks);
  return snap;
}

// Seconds of CPU between two snapshots: processes alive at the end, minus
// what they had at the start (0 if they started in between).
function cpuDelta(s0, s1) {
  let ticks = 0;
  for (const [pid, t] of s1) ticks += t - (s0.get(pid) || 0);
  return ticks / CLK_TCK;
}

// -- child processes with the READY/GO protocol ------------------------------

class Proc {
  constructor(argv, opts = {}) {
    this.name = path.basename(argv[1] || argv[0]) + ' ' + (argv[2] || '');
    this.child = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd || HERE,
      env: { ...process.env, ...(opts.env || {}) },
      stdio: ['pipe', 'pipe', 'inherit'],
      detached: true, // own process group: killed as a whole on failure
    });
    this.exited = null;
    this.lines = [];
    this.waiters = [];
    this.progress = 0;
    this.progressAt = Date.now();
    this.done = null;
    this.lat = null;
    this.child.on('exit', (code, sig) => {
      this.exited = { code, sig };
      this.wake();
    });
    this.child.on('error', (e) => {
      this.exited = { code: -1, sig: String(e) };
      this.wake();
    });
    readline.createInterface({ input: this.child.stdout }).on('line', (l) => {
      const t = wallMs();
      if (l.startsWith('PROGRESS ')) {
        const n = Number(l.split(' ')[1]);
        if (n !== this.progress) {
          this.progress = n;
          this.progressAt = Date.now();
        }
      } else if (l.startsWith('DONE ')) {
        const p = l.split(' ');
        this.done = { n: Number(p[1]), workerMs: Number(p[2]), seenMs: t };
        this.progress = this.done.n;
        this.progressAt = Date.now();
      } else if (l.startsWith('LAT ')) {
        this.lat = JSON.parse(l.slice(4));
      } else if (l.startsWith('B2 ')) {
        this.b2 = JSON.parse(l.slice(3));
      } else if (/^(READY|CONSUMING)\b/.test(l)) {
        this.lines.push(l);
      } else if (l.trim() !== '') {
        process.stderr.write(`[${this.name.trim()}] ${l}\n`);
      }
      this.wake();
    });
    activeProcs.add(this);
  }
  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  changed(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
  async waitLine(word, ms) {
    const deadline = Date.now() + ms;
    while (!this.lines.includes(word)) {
      if (this.exited) fail(`${this.name} exited (${JSON.stringify(this.exited)}) before ${word}`);
      if (Date.now() > deadline) fail(`${this.name}: no ${word} within ${ms / 1000} s`);
      await this.changed(Math.min(1000, Math.max(1, deadline - Date.now())));
    }
  }
  send(s) {
    this.child.stdin.write(s);
  }
  async waitExit(ms, what) {
    const deadline = Date.now() + ms;
    while (!this.exited) {
      if (Date.now() > deadline) fail(`${this.name}: ${what} did not finish within ${ms / 1000} s`);
      await this.changed(Math.min(1000, Math.max(1, deadline - Date.now())));
    }
    return this.exited;
  }
  async stop(ms = 30000) {
    if (!this.exited) {
      try {
        process.kill(this.child.pid, 'SIGTERM');
      } catch (_) {}
      const deadline = Date.now() + ms;
      while (!this.exited && Date.now() < deadline) await this.changed(200);
    }
    this.killGroup();
    activeProcs.delete(this);
    return this.exited;
  }
  killGroup() {
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch (_) {}
  }
}
const activeProcs = new Set();
function killAll() {
  for (const p of activeProcs) p.killGroup();
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

async function runToCompletion(argv, what, ms, opts) {
  const p = new Proc(argv, opts);
  const ex = await p.waitExit(ms, what);
  activeProcs.delete(p);
  if (ex.code !== 0) fail(`${what} failed (${JSON.stringify(ex)})`);
}

// -- peers ----------------------------------------------------------------------

let redis = null;
let pg = null;

async function redisClient() {
  if (!redis) {
    redis = new Redis({ path: process.env.REDIS_SOCK, maxRetriesPerRequest: 3, lazyConnect: true });
    await redis.connect();
  }
  return redis;
}
async function pgClient() {
  if (!pg) {
    pg = new Client({ connectionString: process.env.PG_URL });
    await pg.connect();
  }
  return pg;
}
async function redisVersion() {
  const info = await (await redisClient()).info('server');
  return 'redis ' + /redis_version:(\S+)/.exec(info)[1];
}

function nodeVersion(pkg) {
  return require(`${pkg}/package.json`).version;
}

const peers = {
  bullmq: {
    system: 'bullmq',
    version: () => nodeVersion('bullmq'),
    concurrency: 100,
    server: redisVersion,
    serverPids: async () => ({ tree: [Number(process.env.REDIS_PID)], flat: [] }),
    async reset() {
      await (await redisClient()).flushall();
    },
    preload: () => [NODE, path.join(HERE, 'bullmq.js'), 'preload', '--jobs', String(jobs)],
    async queued() {
      const r = await redisClient();
      return r.llen('bull:bench:wait');
    },
    worker: (c, mode) => [NODE, path.join(HERE, 'bullmq.js'), 'worker', '--jobs', String(jobs),
      '--concurrency', String(c), '--mode', mode],
    submit: () => [NODE, path.join(HERE, 'bullmq.js'), 'submit', '--jobs', String(jobs),
      '--interval-ms', String(intervalMs)],
    openloop: (rate) => [NODE, path.join(HERE, 'bullmq.js'), 'openloop', '--rate', String(rate),
      '--seconds', String(b2Seconds)],
    // Polled during the drain: the system's own count of completed jobs.
    async completed() {
      return (await redisClient()).zcard('bull:bench:completed');
    },
    endBy: 'poll',
    async verify() {
      const r = await redisClient();
      const [completed, failed, wait, active, delayed] = await Promise.all([
        r.zcard('bull:bench:completed'), r.zcard('bull:bench:failed'),
        r.llen('bull:bench:wait'), r.llen('bull:bench:active'), r.zcard('bull:bench:delayed')]);
      return { verified: completed, detail: { completed, failed, wait, active, delayed },
        ok: completed === jobs && failed === 0 && wait === 0 && active === 0 && delayed === 0 };
    },
    settings: (c) => `concurrency=${c}; Queue.addBulk chunks of 1000; default job options (completed jobs kept); ioredis over a unix socket`,
  },
  sidekiq: {
    system: 'sidekiq',
    version: () => execFileSync('ruby', ['-e', 'require "sidekiq"; print Sidekiq::VERSION']).toString(),
    concurrency: 10,
    server: redisVersion,
    serverPids: async () => ({ tree: [Number(process.env.REDIS_PID)], flat: [] }),
    env: () => ({ REDIS_URL: `unix://${process.env.REDIS_SOCK}` }),
    async reset() {
      await (await redisClient()).flushall();
    },
    preload: () => ['ruby', path.join(PEERS, 'sidekiq', 'bench.rb'), 'preload', '--jobs', String(jobs)],
    async queued() {
      return (await redisClient()).llen('queue:default');
    },
    worker: (c, mode) => ['ruby', path.join(PEERS, 'sidekiq', 'bench.rb'), 'worker', '--jobs', String(jobs),
      '--concurrency', String(c), '--mode', mode],
    submit: () => ['ruby', path.join(PEERS, 'sidekiq', 'bench.rb'), 'submit', '--jobs', String(jobs),
      '--interval-ms', String(intervalMs)],
    endBy: 'done',
    // After the worker's shutdown (Sidekiq flushes its counters at exit).
    async verify() {
      const r = await redisClient();
      const [processed, failed, queued, retry, dead] = await Promise.all([
        r.get('stat:processed'), r.get('stat:failed'), r.llen('queue:default'),
        r.zcard('retry'), r.zcard('dead')]);
      const p = Number(processed || 0);
      const f = Number(failed || 0);
      return { verified: p, detail: { stat_processed: p, stat_failed: f, queued, retry, dead },
        ok: p === jobs && f === 0 && queued === 0 && retry === 0 && dead === 0 };
    },
    verifyAfterStop: true,
    settings: (c) => `concurrency=${c} threads, 1 process; Sidekiq::Client.push_bulk chunks of 1000; basic fetch; redis-rb over a unix socket`,
  },
  celery: {
    system: 'celery',
    version: () => execFileSync(PYTHON, ['-c', 'import celery; print(celery.__version__, end="")']).toString(),
    concurrency: 2,
    server: redisVersion,
    serverPids: async () => ({ tree: [Number(process.env.REDIS_PID)], flat: [] }),
    cwd: path.join(PEERS, 'celery'),
    async reset() {
      await (await redisClient()).flushall();
    },
    preload: () => [PYTHON, path.join(PEERS, 'celery', 'benchtasks.py'), 'preload', '--jobs', String(jobs)],
    async queued() {
      return (await redisClient()).llen('celery');
    },
    worker: (c) => [PYTHON, path.join(PEERS, 'celery', 'benchtasks.py'), 'worker', '--concurrency', String(c)],
    async completed() {
      return Number((await (await redisClient()).get('drover_bench:celery:done')) || 0);
    },
    endBy: 'poll',
    async verify() {
      const r = await redisClient();
      const [done, queued, unacked] = await Promise.all([
        r.get('drover_bench:celery:done'), r.llen('celery'), r.hlen('unacked')]);
      const d = Number(done || 0);
      return { verified: d, detail: { done_counter: d, queued, unacked },
        ok: d === jobs && queued === 0 && unacked === 0 };
    },
    settings: (c) => `prefork concurrency=${c}; group().apply_async chunks of 1000; prefetch multiplier 4 (default); no result backend; --without-gossip --without-mingle --without-heartbeat; kombu redis+socket`,
  },
  graphile: {
    system: 'graphile-worker',
    version: () => nodeVersion('graphile-worker'),
    concurrency: 16,
    async server() {
      const c = await pgClient();
      const r = await c.query("select current_setting('server_version') v, current_setting('fsync') f, current_setting('synchronous_commit') s");
      const { v, f, s } = r.rows[0];
      if (f !== 'on' || s !== 'on') fail(`PostgreSQL is not at D2: fsync=${f} synchronous_commit=${s}`);
      return `postgresql ${v} (fsync=${f}, synchronous_commit=${s})`;
    },
    // The cluster is the project's, possibly in use by others: count the
    // postmaster, its auxiliary processes and the backends of our database
    // only (not the postmaster's tree).
    async serverPids() {
      const r = await (await pgClient()).query(
        "select pid from pg_stat_activity where datname = current_database() or backend_type <> 'client backend'");
      return { tree: [], flat: [Number(process.env.PG_POSTMASTER_PID), ...r.rows.map((x) => x.pid)] };
    },
    async reset() {
      const c = await pgClient();
      const r = await c.query("select to_regclass('graphile_worker._private_jobs') is not null as t");
      if (r.rows[0].t) await c.query('delete from graphile_worker._private_jobs');
    },
    preload: () => [NODE, path.join(HERE, 'graphile.js'), 'preload', '--jobs', String(jobs)],
    async queued() {
      const r = await (await pgClient()).query('select count(*)::int n from graphile_worker._private_jobs where locked_at is null');
      return r.rows[0].n;
    },
    worker: (c, mode) => [NODE, path.join(HERE, 'graphile.js'), 'worker', '--jobs', String(jobs),
      '--concurrency', String(c), '--batched', batched ? '1' : '0', '--mode', mode],
    submit: () => [NODE, path.join(HERE, 'graphile.js'), 'submit', '--jobs', String(jobs),
      '--interval-ms', String(intervalMs)],
    openloop: (rate) => [NODE, path.join(HERE, 'graphile.js'), 'openloop', '--rate', String(rate),
      '--seconds', String(b2Seconds)],
    endBy: 'done',
    // After DONE: completed jobs are deleted, so the drain ends when no row is left.
    async remaining() {
      const r = await (await pgClient()).query('select count(*)::int n from graphile_worker._private_jobs');
      return r.rows[0].n;
    },
    async verify(ctx) {
      const left = await this.remaining();
      const failed = (await (await pgClient()).query(
        'select count(*)::int n from graphile_worker._private_jobs where last_error is not null')).rows[0].n;
      const verified = ctx.preloaded - left;
      return { verified, detail: { preloaded_rows: ctx.preloaded, rows_left: left, failed_rows: failed,
        handler_count: ctx.handlerCount },
      ok: left === 0 && failed === 0 && verified === jobs && ctx.handlerCount === jobs };
    },
    settings: (c) => batched
      ? `concurrency=${c}, maxPoolSize=${Math.max(10, c + 2)}, localQueue.size=500, completeJobBatchDelay=0, failJobBatchDelay=0; WorkerUtils.addJobs chunks of 10000`
      : `concurrency=${c}, maxPoolSize=${Math.max(10, c + 2)}, graphile's default fetch and completion (no local queue, no completion batching); WorkerUtils.addJobs chunks of 10000`,
  },
};

// -- workloads ----------------------------------------------------------------

function percentile(sorted, q) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}
const round = (x, d = 3) => (x == null ? null : Number(x.toFixed(d)));

async function runB1(peer, concurrency, runIndex, base) {
  await peer.reset();
  log(`run ${runIndex}: preloading ${jobs} jobs`);
  const p0 = wallMs();
  await runToCompletion(peer.preload(), `${peer.system} preload`, PRELOAD_MS, { env: peer.env && peer.env(), cwd: peer.cwd });
  const preloadSeconds = (wallMs() - p0) / 1000;
  const queued = await peer.queued();
  if (queued !== jobs) fail(`preload: ${queued} jobs queued in ${peer.system}, expected ${jobs}`);
  log(`run ${runIndex}: ${queued} queued in ${preloadSeconds.toFixed(1)} s; starting the worker`);

  const w = new Proc(peer.worker(concurrency, 'B1'), { env: peer.env && peer.env(), cwd: peer.cwd });
  await w.waitLine('READY', READY_MS);
  const sp0 = await peer.serverPids();
  const cpuS0 = cpuSnapshot(sp0.tree, sp0.flat);
  const cpuW0 = cpuSnapshot([w.child.pid]);
  const load = require('os').loadavg()[0];
  const t0 = wallMs();
  w.send('GO\n');

  let t1 = null;
  let last = 0;
  let lastAt = Date.now();
  const deadline = Date.now() + 3600000;
  while (t1 === null) {
    if (w.exited) fail(`${peer.system} worker exited during the drain (${JSON.stringify(w.exited)})`);
    if (peer.endBy === 'poll') {
      const n = await peer.completed();
      if (n >= jobs) {
        t1 = wallMs();
        break;
      }
      if (n !== last) {
        last = n;
        lastAt = Date.now();
      }
      await sleep(10);
    } else {
      if (w.done) {
        if (peer.remaining) {
          // graphile: completions are written in batches; wait for the table.
          const tailDeadline = Date.now() + TAIL_MS;
          for (;;) {
            if ((await peer.remaining()) === 0) break;
            if (Date.now() > tailDeadline) fail(`${peer.system}: job rows left ${TAIL_MS / 1000} s after the handlers finished`);
            await sleep(10);
          }
          t1 = wallMs();
        } else {
          t1 = w.done.seenMs;
        }
        break;
      }
      last = w.progress;
      lastAt = w.progressAt;
      await w.changed(1000);
    }
    if (Date.now() - lastAt > STALL_MS) fail(`${peer.system}: drain stalled at ${last} of ${jobs} jobs for ${STALL_MS / 1000} s`);
    if (Date.now() > deadline) fail(`${peer.system}: drain not done within an hour`);
  }
  const cpuW = cpuDelta(cpuW0, cpuSnapshot([w.child.pid]));
  const sp1 = await peer.serverPids();
  const cpuS = cpuDelta(cpuS0, cpuSnapshot(sp1.tree, sp1.flat));
  const seconds = (t1 - t0) / 1000;
  let v;
  if (peer.verifyAfterStop) {
    await w.stop();
    v = await peer.verify({ preloaded: queued, handlerCount: w.done && w.done.n });
  } else {
    v = await peer.verify({ preloaded: queued, handlerCount: w.done && w.done.n });
    await w.stop();
  }
  if (!v.ok) fail(`${peer.system}: verification failed: ${JSON.stringify(v.detail)}`);
  const cpu = cpuS + cpuW;
  return {
    ...base, workload: 'B1', run: runIndex, jobs, verified: v.verified,
    seconds: round(seconds), jobs_per_s: Math.round(v.verified / seconds),
    cpu_seconds: round(cpu, 2), cpu_seconds_per_job: Number((cpu / v.verified).toPrecision(3)),
    cpu_server_seconds: round(cpuS, 2), cpu_worker_seconds: round(cpuW, 2),
    preload_seconds: round(preloadSeconds, 2), loadavg_1m_at_start: round(load, 2), check: v.detail,
  };
}

async function runB3(peer, concurrency, runIndex, base) {
  if (!peer.submit) fail(`B3 is not implemented for ${peer.system}`);
  await peer.reset();
  const w = new Proc(peer.worker(concurrency, 'B3'), { env: peer.env && peer.env(), cwd: peer.cwd });
  await w.waitLine('READY', READY_MS);
  w.send('GO\n');
  await sleep(1000); // let the worker settle into its idle wait
  log(`run ${runIndex}: submitting ${jobs} jobs one at a time, ${intervalMs} ms apart`);
  await runToCompletion(peer.submit(), `${peer.system} submit`, 600000, { env: peer.env && peer.env(), cwd: peer.cwd });
  const deadline = Date.now() + TAIL_MS;
  while (!w.lat) {
    if (w.exited) fail(`${peer.system} worker exited (${JSON.stringify(w.exited)})`);
    if (Date.now() > deadline) fail(`${peer.system}: only ${w.progress} of ${jobs} jobs started within ${TAIL_MS / 1000} s of the last submit`);
    await w.changed(1000);
  }
  if (peer.remaining) {
    const tailDeadline = Date.now() + TAIL_MS;
    while ((await peer.remaining()) !== 0) {
      if (Date.now() > tailDeadline) fail(`${peer.system}: job rows left after B3`);
      await sleep(50);
    }
  }
  let v;
  if (peer.verifyAfterStop) {
    await w.stop();
    v = await peer.verify({ preloaded: jobs, handlerCount: w.done && w.done.n });
  } else {
    v = await peer.verify({ preloaded: jobs, handlerCount: w.done && w.done.n });
    await w.stop();
  }
  if (!v.ok) fail(`${peer.system}: verification failed: ${JSON.stringify(v.detail)}`);
  const lats = w.lat.slice().sort((a, b) => a - b);
  return {
    ...base, workload: 'B3', run: runIndex, jobs, verified: v.verified,
    interval_ms: intervalMs,
    p50_ms: round(percentile(lats, 0.5)), p99_ms: round(percentile(lats, 0.99)),
    max_ms: round(lats[lats.length - 1]), mean_ms: round(lats.reduce((a, b) => a + b, 0) / lats.length),
    check: v.detail,
  };
}

async function runB2(peer, concurrency, runIndex, base) {
  if (!peer.openloop) fail(`B2 is not implemented for ${peer.system}`);
  const out = [];
  for (const rate of b2Rates) {
    await peer.reset();
    const w = new Proc(peer.worker(concurrency, 'B1'), { env: peer.env && peer.env(), cwd: peer.cwd });
    await w.waitLine('READY', READY_MS);
    w.send('GO\n');
    log(`run ${runIndex}: ${rate} submits/s for ${b2Seconds} s, open loop`);
    const p = new Proc(peer.openloop(rate), { env: peer.env && peer.env(), cwd: peer.cwd });
    const ex = await p.waitExit(b2Seconds * 1000 + 300000, `${peer.system} openloop`);
    activeProcs.delete(p);
    const handled = w.progress;
    await w.stop();
    if (ex.code !== 0 || !p.b2) fail(`${peer.system} openloop failed (${JSON.stringify(ex)})`);
    const r = p.b2;
    if (r.errors !== 0 || r.acked !== r.submitted)
      fail(`${peer.system}: ${r.acked} of ${r.submitted} submits acknowledged, ${r.errors} errors (${r.first_error})`);
    const saturated = r.acked_per_s < 0.95 * rate || (r.ack_p99_ms !== null && r.ack_p99_ms > 1000);
    out.push({
      ...base, workload: 'B2', run: runIndex, offered_per_s: rate, acked_per_s: round(r.acked_per_s),
      submitted: r.submitted, verified_acked: r.acked, measured: r.measured,
      ack_p50_ms: round(r.ack_p50_ms), ack_p99_ms: round(r.ack_p99_ms), ack_p999_ms: round(r.ack_p999_ms),
      ack_max_ms: round(r.ack_max_ms), handled_meanwhile_at_least: handled, saturated,
    });
    if (saturated) break;
  }
  return out;
}

async function main() {
  const peer = peers[peerName];
  if (!peer) fail(`unknown peer '${peerName}' (bullmq, sidekiq, celery, graphile)`);
  if (!['B1', 'B2', 'B3'].includes(workload)) fail(`unknown workload '${workload}' (B1, B2, B3)`);
  const concurrency = Number(arg('concurrency', peer.concurrency));
  const base = {
    system: peer.system, version: peer.version(), server: await peer.server(),
    durability, settings: peer.settings(concurrency),
    machine: `${require('os').cpus().length} cores`,
  };
  for (let i = 1; i <= runs; i++) {
    if (workload === 'B2') {
      for (const res of await runB2(peer, concurrency, i, base))
        process.stdout.write(JSON.stringify(res) + '\n');
      continue;
    }
    const res = workload === 'B1'
      ? await runB1(peer, concurrency, i, base)
      : await runB3(peer, concurrency, i, base);
    process.stdout.write(JSON.stringify(res) + '\n');
  }
}

main()
  .then(async () => {
    if (redis) redis.disconnect();
    if (pg) await pg.end();
    process.exit(0);
  })
  .catch((e) => {
    log(`FAILED: ${e.benchFailure ? e.message : (e && e.stack) || e}`);
    killAll();
    process.exit(1);
  });
