#!/usr/bin/python3
"""Where the CPU of one Drover process goes, from a system-wide perf profile.

    perf record -a -F 999 --call-graph dwarf,8192 -D -1 --control fifo:CTL \\
        -o drain.data -- drover_bench_drain ... --perf-ctl CTL
    perf script -i drain.data --pid PID -F comm,tid,ip,sym,dso > drover.script
    bench/drover/perf_breakdown.py drover.script --jobs 20000 [--pid PID]
        [--postgres-script pg.script]

(bench/drover/profile.sh does all of this.) Prints three tables, each with
the share of the process's samples and the CPU microseconds per job (samples
/ frequency / jobs):

1. by thread role: CAF scheduler workers, the actor clock, the detached
   PostgreSQL I/O actors, the attempt threads (one per attempt: every thread
   that is not long-lived), the main thread;
2. by the Drover actor whose handler was running (outermost actor frame of
   the stack), or the CAF scheduler itself when none was;
3. by what the leaf of the stack was doing (kernel: thread creation and
   exit, futex wake-ups and waits, scheduler sleeps, socket I/O, page
   faults; user space: malloc/free, Cap'n Proto, libpq, CAF, Drover...).

A sample is one stack: a header line "comm tid" then one frame per line,
leaf first.
"""
import argparse
import collections
import re
import sys

ACTORS = [
    ("pg_store_impl", "pg store actor (cache, validation, batching)"),
    ("pg_store_state", "pg store actor (cache, validation, batching)"),
    ("io_impl", "pg I/O actor (libpq, encoding rows)"),
    ("io_state", "pg I/O actor (libpq, encoding rows)"),
    ("job_supervisor_impl", "job supervisor (one per job)"),
    ("js_state", "job supervisor (one per job)"),
    ("queue_impl", "queue"),
    ("queue_state", "queue"),
    ("worker_impl", "worker"),
    ("worker_state", "worker"),
    ("publisher_impl", "progress publisher"),
    ("publisher_state", "progress publisher"),
    ("windowed_driver", "benchmark driver"),
]

LEAF_RULES = [
    # (category, regex over "sym (dso)" of any frame, scanned leaf to root)
    ("kernel: thread create (clone)", r"copy_process|kernel_clone|__do_sys_clone|clone3|wake_up_new_task"),
    ("kernel: thread exit and stack unmap", r"do_exit|__x64_sys_exit|exit_mm|__vm_munmap|__x64_sys_munmap|unmap_region|vms_complete_munmap|release_task|exit_notify"),
    ("kernel: mmap/mprotect (stacks, malloc arenas)", r"__x64_sys_mmap|__x64_sys_mprotect|do_mmap|mprotect_fixup|__x64_sys_madvise"),
    ("kernel: futex wake", r"futex_wake|wake_up_q"),
    ("kernel: futex wait", r"futex_wait|futex_do_wait"),
    ("kernel: nanosleep (CAF idle polling, bench)", r"do_nanosleep|hrtimer_nanosleep|clock_nanosleep"),
    ("kernel: socket I/O (libpq)", r"unix_stream|sock_|tcp_|__sys_sendto|__sys_recvfrom|sock_read_iter|sock_write_iter|do_sys_poll|__x64_sys_poll|__x64_sys_ppoll|do_select"),
    ("kernel: page faults", r"exc_page_fault|do_user_addr_fault|handle_mm_fault"),
    ("kernel: scheduling / context switch", r"__schedule|schedule\b|finish_task_switch|pick_next_task|try_to_wake_up"),
]

USER_RULES = [
    ("malloc/free", r"^(malloc|free|cfree|_int_malloc|_int_free|malloc_consolidate|unlink_chunk|tcache_|__libc_malloc|__libc_free|_int_realloc|realloc|operator new|operator delete|calloc)"),
    ("memcpy/memset/strings", r"__mem(move|cpy|set|cmp)|strlen|basic_string|char_traits"),
    ("Cap'n Proto (encode/decode)", r"\(/.*libcapnp|\(/.*libkj|capnp::|kj::|drover::.*(to_capnp|from_capnp|encode|decode|capnp_model)"),
    ("libpq", r"\(/.*libpq"),
    ("CAF actor clock (request timeouts)", r"actor_clock"),
    ("CAF runtime", r"\(/.*libcaf_core"),
    ("job_record/job_event/job_spec copies and destructors", r"drover::job_(record|event|spec)::(~?job_(record|event|spec))"),
    ("libstdc++ (containers, hashing)", r"\(/.*libstdc\+\+|std::_Hashtable|std::_Rb_tree|std::__detail"),
    ("Drover code", r"drover::"),
    ("libc (other)", r"\(/.*libc\.so"),
]


def parse(path, pid_filter=None):
    samples = []
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur:
                    samples.append(cur)
                cur = None
                continue
            if not line.startswith("\t") and not line.startswith(" "):
                parts = line.split()
                # "comm tid" ; comm may contain spaces: tid is the last field
                tid = parts[-1]
                comm = " ".join(parts[:-1])
                if "/" in tid:
                    tid = tid.split("/")[-1]
                cur = {"comm": comm, "tid": tid, "frames": []}
            elif cur is not None:
                fr = line.strip()
                # "addr sym (dso)"
                fr = re.sub(r"^[0-9a-f]+ ", "", fr)
                cur["frames"].append(fr)
    if cur:
        samples.append(cur)
    return samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("--jobs", type=int, required=True)
    ap.add_argument("--freq", type=float, default=999.0)
    ap.add_argument("--long-lived-min", type=int, default=20,
                    help="threads with at least this many samples are long-lived")
    ap.add_argument("--postgres-script", help="perf script of the postgres processes")
    args = ap.parse_args()
    samples = parse(args.script)
    n = len(samples)
    if n == 0:
        print("no samples", file=sys.stderr)
        return 1
    per_tid = collections.Counter(s["tid"] for s in samples)
    us_per_sample = 1e6 / args.freq / args.jobs

    def role(s):
        c, t = s["comm"], s["tid"]
        if c == "caf.clock":
            return "CAF actor clock thread"
        if c == "caf.actor":
            return "detached actors (pg I/O: libpq calls)"
        if c.startswith("drover_bench"):
            return "main thread (benchmark polling)"
        if c == "caf.multiplexer" and per_tid[t] >= args.long_lived_min:
            return "CAF scheduler workers (2)"
        return "attempt threads (one per attempt)"

    def actor(s):
        for fr in reversed(s["frames"]):  # root first
            for key, name in ACTORS:
                if key in fr:
                    return name
        if s["comm"] == "caf.multiplexer" and per_tid[s["tid"]] >= args.long_lived_min:
            return "CAF scheduler, no actor handler on the stack"
        return "-"

    def leaf(s):
        frames = s["frames"]
        kernel = [f for f in frames if "[kernel.kallsyms]" in f]
        if kernel:
            for cat, rx in LEAF_RULES:
                r = re.compile(rx)
                if any(r.search(f) for f in kernel):
                    return cat
            return "kernel: other"
        top = frames[0] if frames else ""
        for cat, rx in USER_RULES:
            r = re.compile(rx)
            # the leaf frame decides, but Cap'n Proto and the clock count
            # inclusively (anything called from them)
            if cat.startswith("Cap'n Proto") or cat.startswith("CAF actor clock"):
                if any(r.search(f) for f in frames[:6]):
                    return cat
            elif r.search(top):
                return cat
        return "other"

    def table(title, key):
        cnt = collections.Counter(key(s) for s in samples)
        print(f"\n{title}")
        print(f"| {'':60} | share | µs/job |")
        print(f"|{'-'*62}|------:|-------:|")
        for k, v in cnt.most_common():
            print(f"| {k:60} | {100*v/n:4.1f} % | {v*us_per_sample:6.1f} |")
        print(f"| {'total':60} | 100 % | {n*us_per_sample:6.1f} |")

    def centre(s):
        """One cost centre per sample, first match wins (disjoint)."""
        frames = s["frames"]
        joined = "\n".join(frames)
        r = role(s)
        if r.startswith("attempt threads") or re.search(
                r"copy_process|kernel_clone|clone3|do_exit|__x64_sys_exit|__vm_munmap"
                r"|__x64_sys_mmap|__x64_sys_mprotect|pthread_create", joined):
            return "1 thread per attempt: clone, stack mmap, exit, unmap, the thread's own run"
        if r.startswith("CAF actor clock") or "actor_clock" in joined:
            return "2 CAF actor clock: a 30 s timeout registered per request"
        if r.startswith("detached actors") or re.search(r"libpq|unix_stream|tcp_|sock_", joined):
            return "3 PostgreSQL client: libpq, row building, socket I/O (I/O actor thread)"
        if re.search(r"futex|__schedule|finish_task_switch|try_to_wake_up|nanosleep", joined):
            return "4 wake-ups: futex wake/wait, context switches, CAF idle polling sleeps"
        if re.search(r"libcapnp|libkj|capnp::|kj::", joined):
            return "5 Cap'n Proto encode/decode"
        top = frames[0] if frames else ""
        if re.search(USER_RULES[0][1], top) or re.search(USER_RULES[1][1], top) \
                or re.search(r"drover::job_(record|event|spec)::~?job_", top) \
                or re.search(r"exc_page_fault|do_user_addr_fault", joined):
            return "6 allocation and copying: malloc/free, memcpy, strings, record copies, page faults"
        if "libcaf_core" in top:
            return "7 CAF messaging: mailboxes, dispatch, message objects, scheduler"
        if r.startswith("main thread"):
            return "9 benchmark's own polling"
        if re.search(r"drover::|libstdc\+\+|std::", top):
            return "8 Drover logic: store cache and validation, queue, supervisors, publisher"
        return "9 other (kernel and libc, unattributed)"

    print(f"{n} samples at {args.freq:.0f} Hz for {args.jobs} jobs "
          f"= {n*us_per_sample:.1f} µs of process CPU per job")
    table("Cost centres (disjoint; each sample counted once, first match)", centre)
    table("By thread role", role)
    table("By actor handler on the stack", actor)
    table("By leaf activity", leaf)

    # Inclusive markers: how many samples have such a frame anywhere.
    markers = [
        ("attempt thread lifecycle (clone + exit + stack unmap, any thread)",
         r"copy_process|kernel_clone|clone3|do_exit|__x64_sys_exit|__vm_munmap|pthread_create"),
        ("Cap'n Proto anywhere on the stack", r"libcapnp|libkj|capnp::|kj::"),
        ("CAF actor clock anywhere on the stack", r"actor_clock"),
        ("futex anywhere", r"futex"),
        ("malloc/free anywhere", r"^(malloc|free|cfree|_int_malloc|_int_free|malloc_consolidate|operator new|operator delete)"),
    ]
    print("\nInclusive (a frame anywhere on the stack; shares overlap)")
    print(f"| {'':66} | share | µs/job |")
    print(f"|{'-'*68}|------:|-------:|")
    for name, rx in markers:
        r = re.compile(rx)
        v = sum(1 for s in samples if any(r.search(f) for f in s["frames"]))
        print(f"| {name:66} | {100*v/n:4.1f} % | {v*us_per_sample:6.1f} |")

    if args.postgres_script:
        pg = parse(args.postgres_script)
        m = len(pg)
        print(f"\nPostgreSQL processes (comm postgres, all databases): {m} samples"
              f" = {m*us_per_sample:.1f} µs per job")
        rules = [
            ("fsync / WAL flush (kernel I/O)", r"fdatasync|issue_flush|XLogFlush|blkdev|ext4_sync"),
            ("WAL record insertion", r"XLogInsert|XLogRecordAssemble|CopyXLogRecordToWAL|XLogWrite"),
            ("parse, analyze, plan (no prepared statements)", r"raw_parser|base_yyparse|parse_analyze|pg_analyze|planner|pg_plan_query|transformStmt|core_yylex|pg_parse_query"),
            ("index maintenance (btree inserts, bottom-up deletion)", r"btinsert|_bt_doinsert|index_insert|ExecInsertIndexTuples|heap_index_delete_tuples|_bt_bottomupdel|_bt_delitems"),
            ("heap insert/update", r"heap_insert|heap_update|heap_multi_insert|RelationGetBufferForTuple"),
            ("triggers", r"ExecBR|ExecAR|Trigger"),
            ("transaction start/commit, locks", r"CommitTransaction|LockAcquire|LockRelease|ProcArray|StartTransaction"),
            ("socket I/O", r"secure_read|secure_write|pq_getbyte|pq_recvbuf|pq_flush|unix_stream|sock_"),
            ("executor, other", r"ExecProcNode|ExecScan|ExecModifyTable|ExecutorRun|ExecInitNode|ExecutorStart|ExecEndPlan|ExecUpdate|ExecInsert"),
        ]
        cnt = collections.Counter()
        for s in pg:
            joined = "\n".join(s["frames"])
            for k, rx in rules:
                if re.search(rx, joined):
                    cnt[k] += 1
                    break
            else:
                cnt["other / not unwound"] += 1
        print(f"| {'':60} | share | µs/job |")
        print(f"|{'-'*62}|------:|-------:|")
        for k, v in cnt.most_common():
            print(f"| {k:60} | {100*v/m:4.1f} % | {v*us_per_sample:6.1f} |")
        top = collections.Counter()
        for s in pg:
            fr = s["frames"][0] if s["frames"] else "?"
            fr = re.sub(r"\s*\(.*\)$", "", fr)
            top[fr] += 1
        print("leaf symbols:")
        for k, v in top.most_common(12):
            print(f"  {100*v/m:5.1f} %  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
