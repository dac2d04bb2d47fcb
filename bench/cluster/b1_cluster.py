#!/usr/bin/env python3
"""B1 through the cluster: drain of N preloaded no-op jobs, durable (D2).

Compares, in one run and alternating, the same jobs drained by
  A  one all-in-one process (--roles all), today's default (work-stealing
     scheduler); A-sharing the same on the sharing scheduler;
  B  a coordinator process plus two worker-node processes (half the slots
     each), talking over CAF on loopback, with the schedulers of
     config/cluster/ (sharing; workers one thread).

Per run: a fresh database; a coordinator-only node (no workers) takes N
`sleep {"ms":0,"steps":0}` jobs through POST /api/jobs/batch and stops;
then the drain setup starts on that database, recovers the N queued jobs
and runs them. The drain time is read from the audit log: the first
`started` to the last `completed` event. Store round trips are PostgreSQL
commits on the run's database over the drain (pg_stat_database.xact_commit;
the partition-lease renewals, one per second, are included). For B, the
messages between nodes come from the coordinator's node list (lease
batches, reports, heartbeats). Durability D2: fsync and synchronous_commit
on, every completion committed before it is acknowledged.

  bench/cluster/b1_cluster.py [--jobs 10000] [--runs 3]

Needs DROVER_PG_URL (scripts/lib.sh pg_start) and a built build/. Prints a
JSON line per run and a summary; exits 4 if a run lost or repeated a job.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE = os.path.join(ROOT, "build", "nodes", "drover-node")
# Extra worker-node options (--worker-args "..."), e.g. the scheduler.
WORKER_ARGS = ["--scheduler-policy", "sharing", "--scheduler-threads", "1"]
# Options for B's coordinator (--coordinator-args "..."); default as
# config/cluster/coordinator.ini.
COORD_ARGS = ["--scheduler-policy", "sharing"]
# Total slots: A has them all, B's two workers half each.
SLOTS = [4]


def psql(url, sql):
    out = subprocess.run(["psql", url, "-XAtqc", sql], check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


def db_url(base, name):
    # postgresql:///drover?host=...  ->  postgresql:///NAME?host=...
    return re.sub(r"(postgresql://[^/]*/)[^?]*", r"\g<1>" + name, base)


def run_as():
    if os.geteuid() != 0:
        return []
    return ["--run-as", os.environ.get("DROVER_RUN_AS", "drover")]


class Node:
    def __init__(self, args, wait_for, log):
        self.log = open(log, "w")
        self.proc = subprocess.Popen([NODE] + args + run_as(),
                                     stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        self.line = ""
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if wait_for in line:
                self.line = line
                return
        raise RuntimeError("node did not print %r (see %s)" % (wait_for, log))

    def field(self, name):
        m = re.search(r"\b%s=(\S+)" % name, self.line)
        return m.group(1) if m else None

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def http(addr, path, body=None):
    req = urllib.request.Request("http://%s%s" % (addr, path),
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def preload(url, jobs, logdir):
    n = Node(["--node-id", "preload", "--roles", "coordinator,gateway",
              "--cluster-port", "0", "--store", "postgres", "--pg-url", url,
              "--admin-port", "0", "--http-port", "0"], "ready",
             os.path.join(logdir, "preload.log"))
    try:
        addr = n.field("http")
        left = jobs
        while left > 0:
            k = min(left, 5000)
            r = http(addr, "/api/jobs/batch",
                     {"jobs": [{"type": "sleep", "input": {"ms": 0, "steps": 0}}] * k})
            assert r["accepted"] == k, r
            left -= k
    finally:
        n.stop()


def drain(mode, url, jobs, logdir):
    common = ["--store", "postgres", "--pg-url", url, "--admin-port", "0",
              "--http-port", "0"]
    nodes = []
    commits0 = int(psql(url, "SELECT xact_commit FROM pg_stat_database "
                             "WHERE datname = current_database()"))
    try:
        if mode.startswith("A"):
            extra = (["--scheduler-policy", "sharing"]
                     if mode == "A-sharing" else [])
            nodes.append(Node(["--node-id", "allinone", "--roles", "all",
                               "--slots", "cpu=%d" % SLOTS[0]] + common + extra,
                              "ready", os.path.join(logdir, "A.log")))
            http_addr = nodes[0].field("http")
        else:
            coord = Node(["--node-id", "coord", "--roles", "coordinator,gateway",
                          "--cluster-port", "0"] + common + COORD_ARGS, "ready",
                         os.path.join(logdir, "B-coord.log"))
            nodes.append(coord)
            http_addr = coord.field("http")
            for w in ("w1", "w2"):
                nodes.append(Node(["--node-id", w, "--roles", "worker",
                                   "--coordinator", coord.field("cluster"),
                                   "--slots", "cpu=%d" % (SLOTS[0] // 2)]
                                  + WORKER_ARGS, "joined",
                                  os.path.join(logdir, "B-%s.log" % w)))
        cpu0 = {id(n): n.cpu_seconds() for n in nodes}
        deadline = time.time() + 600
        while time.time() < deadline:
            done = int(psql(url, "SELECT count(*) FROM drover.jobs "
                                 "WHERE status = 4"))
            if done >= jobs:
                break
            time.sleep(0.2)
        per_node = [round((n.cpu_seconds() - cpu0.get(id(n), 0)) * 1e6 / jobs)
                    for n in nodes]
        cpu = sum(per_node) * jobs / 1e6
        counters = None
        if mode == "B":
            listing = http(http_addr, "/api/admin/nodes")["nodes"]
            counters = {k: sum(n.get("counters", {}).get(k, 0) for n in listing)
                        for k in ("leases", "lease_batches", "reports",
                                  "heartbeats")}
        commits = int(psql(url, "SELECT xact_commit FROM pg_stat_database "
                                "WHERE datname = current_database()")) - commits0
    finally:
        for n in reversed(nodes):
            n.stop()
    first, last = psql(url, "SELECT min(at_ms) FILTER (WHERE kind = 3), "
                            "max(at_ms) FILTER (WHERE kind = 7) "
                            "FROM drover.events").split("|")
    completed_events = int(psql(url, "SELECT count(*) FROM drover.events "
                                     "WHERE kind = 7"))
    completed_jobs = int(psql(url, "SELECT count(*) FROM drover.jobs "
                                   "WHERE status = 4"))
    seconds = (int(last) - int(first)) / 1000.0
    out = {"mode": mode, "jobs": jobs, "durability": "D2",
           "drain_s": round(seconds, 3),
           "jobs_per_s": round(jobs / seconds, 1) if seconds > 0 else None,
           "store_commits_per_job": round(commits / jobs, 3),
           "node_cpu_us_per_job": round(cpu * 1e6 / jobs),
           "cpu_us_per_job_by_process": per_node,
           "completed_jobs": completed_jobs,
           "completed_events": completed_events}
    if counters:
        out["node_messages_per_job"] = round(
            (counters["lease_batches"] + counters["reports"]
             + counters["heartbeats"]) / jobs, 4)
        out["leases_per_batch"] = round(
            counters["leases"] / max(1, counters["lease_batches"]), 1)
        out.update({"counters": counters})
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--slots", type=int, default=4,
                    help="total worker slots (A: all; B: half per worker)")
    ap.add_argument("--coordinator-args", default="",
                    help="extra options for the coordinator of setup B")
    ap.add_argument("--worker-args", default="",
                    help="options for the worker nodes of setup B (default: "
                         "--scheduler-policy sharing --scheduler-threads 1, as "
                         "config/cluster/worker-*.ini)")
    args = ap.parse_args()
    if args.worker_args:
        WORKER_ARGS[:] = args.worker_args.split()
    SLOTS[0] = args.slots
    if args.coordinator_args:
        COORD_ARGS[:] = args.coordinator_args.split()
    base = os.environ.get("DROVER_PG_URL")
    if not base:
        sys.exit("DROVER_PG_URL is not set (source scripts/lib.sh; pg_start)")
    logdir = os.path.join(ROOT, ".drover", "bench-cluster")
    os.makedirs(logdir, exist_ok=True)
    results = {"A": [], "A-sharing": [], "B": []}
    bad = False
    for i in range(args.runs):
        for mode in ("A", "A-sharing", "B"):
            name = "drover_bench_cluster_%d_%s" % (os.getpid(), mode.lower().replace("-", "_"))
            psql(base, "DROP DATABASE IF EXISTS %s" % name)
            psql(base, "CREATE DATABASE %s" % name)
            url = db_url(base, name)
            try:
                preload(url, args.jobs, logdir)
                r = drain(mode, url, args.jobs, logdir)
            finally:
                psql(base, "DROP DATABASE IF EXISTS %s" % name)
            r["run"] = i + 1
            r["load_1min"] = round(os.getloadavg()[0], 1)
            print(json.dumps(r), flush=True)
            bad |= (r["completed_jobs"] != args.jobs
                    or r["completed_events"] != args.jobs)
            results[mode].append(r)
    a = median([r["jobs_per_s"] for r in results["A"]])
    a2 = median([r["jobs_per_s"] for r in results["A-sharing"]])
    b = median([r["jobs_per_s"] for r in results["B"]])
    print(json.dumps({"summary": "B1 drain, D2, %d no-op jobs, %d slots"
                                 % (args.jobs, args.slots),
                      "all_in_one_jobs_per_s_median": a,
                      "cluster_jobs_per_s_median": b,
                      "all_in_one_sharing_jobs_per_s_median": a2,
                      "cluster_over_all_in_one": round(b / a, 2),
                      "cluster_over_all_in_one_sharing": round(b / a2, 2),
                      "cpu_us_per_job_median": {
                          m: median([r["node_cpu_us_per_job"] for r in results[m]])
                          for m in results},
                      "store_commits_per_job_median": {
                          m: median([r["store_commits_per_job"] for r in results[m]])
                          for m in results},
                      "node_messages_per_job_median":
                          median([r["node_messages_per_job"] for r in results["B"]])}))
    sys.exit(4 if bad else 0)


if __name__ == "__main__":
    main()
