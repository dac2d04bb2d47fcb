#pragma once

// Helpers shared by the benchmark programs: timing, statistics, number
// formatting and a driver that keeps a window of requests outstanding.

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <iostream>
#include <string>
#include <vector>

namespace drover::bench {

using steady = std::chrono::steady_clock;
using go_atom = caf::atom_constant<caf::atom("b_go")>;

inline double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             steady::now().time_since_epoch())
      .count();
}

inline double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 == 1 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

inline double percentile(std::vector<double> xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto rank
      = static_cast<size_t>(std::ceil(p * static_cast<double>(xs.size())));
  return xs[std::min(xs.size() - 1, rank == 0 ? 0 : rank - 1)];
}

inline std::string fmt(double x, int prec = 0) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", prec, x);
  // Thousands separators for readability of large rates.
  std::string s{buf};
  auto dot = s.find('.');
  auto end = dot == std::string::npos ? s.size() : dot;
  size_t start = (!s.empty() && s[0] == '-') ? 1 : 0;
  for (auto i = static_cast<long>(end) - 3; i > static_cast<long>(start);
       i -= 3)
    s.insert(static_cast<size_t>(i), ",");
  return s;
}

// -- a driver with a window of outstanding requests
// -----------------------------

/// Issues request number `i` from `self` and calls `done(ok)` once its
/// answer (or error) is in.
using issue_fn = std::function<void(caf::event_based_actor* self, uint64_t i,
                                    std::function<void(bool)> done)>;

struct window_result {
  double seconds = 0;
  uint64_t ok = 0;
  uint64_t errors = 0;
};

struct windowed_state {
  uint64_t n = 0;
  uint64_t sent = 0;
  uint64_t finished = 0;
  uint64_t errors = 0;
  issue_fn issue;
  std::promise<window_result>* result = nullptr;
  steady::time_point t0;
};

using windowed_ptr = caf::stateful_actor<windowed_state>*;

inline void issue_next(windowed_ptr self);

inline void on_finished(windowed_ptr self, bool ok) {
  auto& st = self->state;
  ++st.finished;
  if (!ok)
    ++st.errors;
  if (st.sent < st.n) {
    issue_next(self);
  } else if (st.finished == st.n) {
    st.result->set_value(window_result{seconds_since(st.t0),
                                       st.finished - st.errors, st.errors});
    self->quit();
  }
}

inline void issue_next(windowed_ptr self) {
  auto& st = self->state;
  auto i = st.sent++;
  st.issue(self, i, [self](bool ok) { on_finished(self, ok); });
}

inline caf::behavior windowed_driver(windowed_ptr self, uint64_t n,
                                     uint64_t window, issue_fn issue,
                                     std::promise<window_result>* result) {
  auto& st = self->state;
  st.n = n;
  st.issue = std::move(issue);
  st.result = result;
  st.t0 = steady::now();
  if (n == 0) {
    result->set_value({});
    self->quit();
    return {};
  }
  for (uint64_t i = 0; i < std::min(n, window); ++i)
    issue_next(self);
  return {[](go_atom) {}};
}

/// Runs `n` requests with at most `window` outstanding; blocks until done.
inline window_result run_windowed(caf::actor_system& sys, uint64_t n,
                                  uint64_t window, issue_fn issue) {
  std::promise<window_result> result;
  auto fut = result.get_future();
  // The handle keeps the driver alive (an unreferenced actor is reaped).
  auto driver
      = sys.spawn(windowed_driver, n, window, std::move(issue), &result);
  auto r = fut.get();
  driver = nullptr;
  return r;
}

/// The benchmark programs' command lines: `--key value` pairs.
///
///   option_reader args{argc, argv};
///   while (args.next())
///     if (args.key() == "--jobs") opt.jobs = std::stoull(args.value());
///     else { usage(); return 2; }
///
/// A key without a value ends the program with status 2.
class option_reader {
public:
  option_reader(int argc, char** argv) : argc_(argc), argv_(argv) {
    // nop
  }

  /// Moves to the next key; false after the last one.
  bool next() {
    if (i_ + 1 >= argc_)
      return false;
    key_ = argv_[++i_];
    return true;
  }

  const std::string& key() const {
    return key_;
  }

  /// The current key's value (consumes it).
  std::string value() {
    if (i_ + 1 >= argc_) {
      std::cerr << key_ << " needs a value\n";
      std::exit(2);
    }
    return argv_[++i_];
  }

private:
  int argc_;
  char** argv_;
  int i_ = 0;
  std::string key_;
};

} // namespace drover::bench
