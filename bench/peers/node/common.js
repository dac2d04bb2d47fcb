'use strict';
// Shared by the peer programs: the READY/GO handshake with the driver,
// progress lines, and a wall clock with sub-millisecond resolution.
//
// Protocol (stdout lines, one per event; chatter goes to stderr):
//   READY            the worker is connected and idle, waiting for "GO\n" on stdin
//   PROGRESS <n>     handler count, once a second
//   DONE <n> <ms>    the handler count reached the target, at wall-clock ms
//   LAT <json>       B3: the submit -> start latencies in ms, when all arrived
const { performance } = require('perf_hooks');

function wallMs() {
  return performance.timeOrigin + performance.now();
}

function line(s) {
  process.stdout.write(s + '\n');
}

function waitForGo() {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d) => {
      buf += d.toString();
      if (buf.includes('GO')) {
        process.stdin.off('data', onData);
        process.stdin.pause();
        resolve();
      }
    };
    process.stdin.on('data', onData);
    process.stdin.on('end', () => reject(new Error('stdin closed before GO')));
  });
}

function argInt(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number`);
  return v;
}

function argStr(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i < 0 ? dflt : process.argv[i + 1];
}

// Counts handler runs; prints PROGRESS every second and DONE once at target.
function makeCounter(target, mode) {
  let n = 0;
  const lats = [];
  const timer = setInterval(() => line(`PROGRESS ${n}`), 1000);
  timer.unref();
  return {
    hit(submittedAtMs) {
      if (mode === 'B3') lats.push(wallMs() - submittedAtMs);
      n += 1;
      if (n === target) {
        if (mode === 'B3') line(`LAT ${JSON.stringify(lats)}`);
        line(`DONE ${n} ${wallMs().toFixed(3)}`);
      }
    },
    get count() {
      return n;
    },
  };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// B2: open-loop submissions, `rate` per second for `seconds` seconds. Submit
// i is released at t0 + i/rate whatever happened to the earlier ones, and
// its ack latency is measured from that intended time (no coordinated
// omission); the first `warmup` seconds are left out. `submitOne(i)`
// returns a promise that resolves on the system's acknowledgement. Prints
// "B2 <json>" once every submit was answered.
async function openLoop(submitOne, rate, seconds, warmup) {
  const n = Math.max(1, Math.round(rate * seconds));
  const t0 = wallMs() + 50;
  const lat = [];
  let next = 0;
  let pending = 0;
  let acked = 0;
  let errors = 0;
  let firstError = '';
  await new Promise((resolve) => {
    const tick = () => {
      const now = wallMs();
      while (next < n && t0 + (next * 1000) / rate <= now) {
        const intended = t0 + (next * 1000) / rate;
        const measured = next >= rate * warmup;
        next += 1;
        pending += 1;
        Promise.resolve()
          .then(() => submitOne(next))
          .then(
            () => {
              acked += 1;
              if (measured) lat.push(wallMs() - intended);
            },
            (e) => {
              errors += 1;
              if (!firstError) firstError = String(e);
            })
          .finally(() => {
            pending -= 1;
            if (next >= n && pending === 0) resolve();
          });
      }
      if (next < n) setTimeout(tick, 1);
    };
    tick();
  });
  const secs = (wallMs() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const pct = (q) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] : null);
  line('B2 ' + JSON.stringify({
    offered_per_s: rate, seconds_offered: seconds, submitted: n, acked, errors, first_error: firstError,
    acked_per_s: acked / secs, seconds: secs, measured: lat.length,
    ack_p50_ms: pct(0.5), ack_p99_ms: pct(0.99), ack_p999_ms: pct(0.999),
    ack_max_ms: lat.length ? lat[lat.length - 1] : null,
  }));
}

module.exports = { wallMs, line, waitForGo, argInt, argStr, makeCounter, sleep, openLoop };
