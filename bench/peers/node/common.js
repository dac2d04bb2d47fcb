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

module.exports = { wallMs, line, waitForGo, argInt, argStr, makeCounter, sleep };
