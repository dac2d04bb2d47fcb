// A real browser against a real node: Debian's Chromium, driven by
// playwright-core, loads a page from an origin the gateway allows (a second
// port on 127.0.0.1 served here) and uses the API as a web app would: REST
// with a bearer key (CORS preflight), a stream token, an EventSource and a
// WebSocket on the job. It checks that the page sees progress and the
// terminal event, and that its EventSource stops reconnecting once the job
// has finished (the gateway's own counters say how many stream requests it
// served). A page from an origin the gateway does not list must get
// nothing done. Run by CTest (tests/gateway/browser_tests.cmake):
//
//   node browser_test.mjs path/to/drover-node
//
// Any failure, including a browser that cannot start or connect, exits 1.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const nodeBin = process.argv[2];
if (!nodeBin) {
  console.error('usage: node browser_test.mjs path/to/drover-node');
  process.exit(2);
}

let passed = 0;
const failures = [];
function check(ok, what, detail) {
  if (ok) {
    passed++;
  } else {
    failures.push(what);
    console.error(`FAIL: ${what}${detail === undefined ? '' : ': ' + JSON.stringify(detail)}`);
  }
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'drover-browser-'));

// -- the pages' origins: two ports of one static server --------------------

const page = '<!doctype html><html><head><meta charset="utf-8"><title>drover</title></head>'
  + '<body><p>drover browser test</p></body></html>';

function serve() {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      if (req.url === '/favicon.ico') {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(page);
    });
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// -- the node -------------------------------------------------------------

function startNode(args) {
  return new Promise((resolve, reject) => {
    const argv = ['--node-id', 'browser-test', '--admin-port', '0', '--http-port', '0',
      '--slots', 'cpu=2', ...args];
    // As root, the node runs jobs as an unprivileged user (scripts/test
    // creates 'drover'), like the C++ process tests.
    if (process.getuid && process.getuid() === 0) {
      argv.push('--run-as', process.env.DROVER_RUN_AS || 'drover');
    }
    const child = spawn(nodeBin, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const timer = setTimeout(() => reject(new Error(`no ready line in 30 s:\n${output}`)), 30000);
    const onData = (chunk) => {
      output += chunk.toString();
      for (const line of output.split('\n')) {
        const m = line.includes('ready') && line.match(/http=[^\s]*:(\d+)/);
        if (m) {
          clearTimeout(timer);
          resolve({ child, port: Number(m[1]), output: () => output });
          return;
        }
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`drover-node exited with ${code}:\n${output}`));
    });
  });
}

async function main() {
  const allowedServer = await serve();
  const foreignServer = await serve();
  const allowed = `http://127.0.0.1:${allowedServer.address().port}`;
  const foreign = `http://127.0.0.1:${foreignServer.address().port}`;

  const secret = 'drv_' + crypto.randomBytes(24).toString('hex');
  const hash = crypto.createHash('sha256').update(secret).digest('hex');
  const node = await startNode([
    '--api-key', `page:${hash}:acme:submit,read,admin`,
    '--http-cors-origin', allowed,
    '--stream-token-key', 'base64:' + crypto.randomBytes(32).toString('base64'),
  ]);
  const gw = `http://127.0.0.1:${node.port}`;
  const auth = { Authorization: `Bearer ${secret}` };
  const streamStats = async () => (await fetch(`${gw}/api/admin/streams`, { headers: auth })).json();
  const jobCount = async () => (await (await fetch(`${gw}/api/jobs`, { headers: auth })).json()).data.length;

  const userDataDir = path.join(scratch, 'chromium-profile');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const tokens = [];
  try {
    // -- a page on the allowed origin ------------------------------------
    const tab = await context.newPage();
    const streamRequests = [];
    tab.on('response', (res) => {
      if (res.url().includes('/stream?')) streamRequests.push(res.status());
    });
    await tab.goto(allowed + '/');
    const before = await streamStats();
    const out = await tab.evaluate(async ({ gw, key }) => {
      const out = { sse: [], ws: [], errors: [], esOpens: 0 };
      const auth = { Authorization: `Bearer ${key}` };
      const submitted = await fetch(`${gw}/api/jobs`, {
        method: 'POST',
        headers: { ...auth, 'Content-Type': 'application/json' },
        body: JSON.stringify({ type: 'sleep', input: { ms: 1500, steps: 5 } }),
      });
      out.submitStatus = submitted.status;
      const job = await submitted.json();
      out.jobId = job.job_id;
      const minted = await fetch(`${gw}/api/jobs/${job.job_id}/stream-token`, {
        method: 'POST', headers: auth,
      });
      out.tokenStatus = minted.status;
      const { token } = await minted.json();
      out.token = token;
      const deadline = (ms) => new Promise((resolve) => setTimeout(() => resolve('timeout'), ms));
      const ws = new Promise((resolve) => {
        const socket = new WebSocket(`${gw.replace('http:', 'ws:')}/api/ws?token=${token}`);
        socket.onopen = () => socket.send(JSON.stringify({ action: 'subscribe', job_id: job.job_id }));
        socket.onmessage = (m) => {
          const d = JSON.parse(m.data);
          out.ws.push(d.type === 'event' ? d.event : d.type);
          if (d.type === 'end' || d.type === 'error') {
            socket.close();
            resolve('end');
          }
        };
        socket.onerror = () => { out.errors.push('websocket error'); resolve('error'); };
      });
      const sse = new Promise((resolve) => {
        const es = new EventSource(`${gw}/api/jobs/${job.job_id}/stream?token=${token}`);
        es.onopen = () => { out.esOpens++; };
        for (const name of ['progress', 'stage', 'status', 'completed', 'failed', 'cancelled',
          'webhook', 'error']) {
          es.addEventListener(name, (e) => { if (e.data !== undefined) out.sse.push(name); });
        }
        // An ended stream makes it CONNECTING (it will reconnect); only a
        // 204 (or an error status) makes it CLOSED for good.
        es.onerror = () => { if (es.readyState === EventSource.CLOSED) resolve('closed'); };
      });
      out.wsOutcome = await Promise.race([ws, deadline(60000)]);
      out.sseOutcome = await Promise.race([sse, deadline(60000)]);
      return out;
    }, { gw, key: secret });
    tokens.push(out.token);
    check(out.submitStatus === 202, 'the allowed page submits a job (CORS preflight with Authorization)', out);
    check(out.tokenStatus === 200, 'the allowed page mints a stream token', out);
    check(out.wsOutcome === 'end', 'the WebSocket streams the job to its end', out);
    check(out.ws.some((e) => e === 'progress' || e === 'stage'), 'the WebSocket shows progress', out.ws);
    check(out.ws.includes('completed') && out.ws.at(-1) === 'end', 'the WebSocket shows the terminal event, then end', out.ws);
    check(out.sseOutcome === 'closed', 'the EventSource ends CLOSED (it stopped reconnecting)', out);
    check(out.sse.some((e) => e === 'progress' || e === 'stage'), 'the EventSource shows progress', out.sse);
    check(out.sse.at(-1) === 'completed', 'the EventSource ends with the terminal event', out.sse);
    check(out.esOpens === 1, 'the EventSource opened once', out.esOpens);
    // The gateway served exactly two stream requests: the stream, and the
    // reconnect after its end, answered 204. Nothing comes after it (the
    // stream asks for a reconnect after 2 s; watch three times as long).
    const after = await streamStats();
    check(after.stream_requests - before.stream_requests === 2, 'the gateway saw 2 stream requests', { before, after });
    check(after.finished_no_content - before.finished_no_content === 1, 'the gateway answered one of them 204', { before, after });
    await new Promise((resolve) => setTimeout(resolve, 6000));
    const later = await streamStats();
    check(later.stream_requests === after.stream_requests, 'no stream request after the 204', { after, later });
    check(JSON.stringify(streamRequests) === JSON.stringify([200, 204]), 'the browser made exactly the stream requests 200, 204', streamRequests);

    // -- a page on an origin the gateway does not list -----------------------
    const jobsBefore = await jobCount();
    const leaked = await (await fetch(`${gw}/api/jobs/${out.jobId}/stream-token`, { method: 'POST', headers: auth })).json();
    tokens.push(leaked.token);
    const evil = await context.newPage();
    await evil.goto(foreign + '/');
    const refused = await evil.evaluate(async ({ gw, key, token, jobId }) => {
      const out = {};
      try {
        await fetch(`${gw}/api/jobs`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ type: 'sleep', input: { ms: 1 } }),
        });
        out.cors = 'allowed';
      } catch (e) {
        out.cors = 'blocked';
      }
      // A "simple" request needs no preflight: it is sent, and must fail.
      await fetch(`${gw}/api/jobs`, {
        method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' },
        body: JSON.stringify({ type: 'exec', input: { argv: ['true'] } }),
      });
      out.ws = await new Promise((resolve) => {
        const socket = new WebSocket(`${gw.replace('http:', 'ws:')}/api/ws?token=${token}`);
        socket.onopen = () => resolve('open');
        socket.onerror = () => resolve('refused');
        setTimeout(() => resolve('timeout'), 20000);
      });
      out.sse = await new Promise((resolve) => {
        // Reading needs CORS: the EventSource fails for a foreign page.
        const es = new EventSource(`${gw}/api/jobs/${jobId}/stream?token=${token}`);
        es.onopen = () => resolve('open');
        es.onerror = () => { es.close(); resolve('refused'); };
        setTimeout(() => resolve('timeout'), 20000);
      });
      return out;
    }, { gw, key: secret, token: leaked.token, jobId: out.jobId });
    check(refused.cors === 'blocked', 'a foreign page cannot call the API with a key (preflight 403)', refused);
    check(refused.ws === 'refused', 'a foreign page cannot open a WebSocket, even with a token', refused);
    check(refused.sse === 'refused', 'a foreign page cannot read an event stream', refused);
    check(await jobCount() === jobsBefore, 'a foreign page created no job', { jobsBefore });
  } finally {
    await context.close();
    node.child.kill('SIGTERM');
    await new Promise((resolve) => node.child.once('exit', resolve));
    allowedServer.close();
    foreignServer.close();
  }
  const output = node.output();
  check(tokens.length === 2 && tokens.every((t) => typeof t === 'string' && t.length > 40),
    'tokens were minted');
  check(tokens.every((t) => !output.includes(t)), 'no token appears in the node output');
  if (failures.length > 0) {
    console.error(`drover-node output:\n${output.slice(-4000)}`);
  }
}

try {
  await main();
} catch (e) {
  failures.push(String(e && e.stack ? e.stack : e));
  console.error(e);
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failures.length} failed`);
process.exit(failures.length === 0 ? 0 : 1);
