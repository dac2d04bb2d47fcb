#include "runtime/pg_share.hpp"

#include "runtime/errors.hpp"
#include "runtime/partition.hpp"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <limits>

namespace drover::pg {

namespace {

template <class T>
T number(std::string_view str) {
  T out{};
  std::from_chars(str.data(), str.data() + str.size(), out);
  return out;
}

std::string list(const std::vector<int32_t>& ps) {
  std::string out;
  size_t n = 0;
  for (auto p : ps) {
    if (n++ == 16) {
      out += ", ...";
      break;
    }
    out += (out.empty() ? "" : ", ") + std::to_string(p);
  }
  return out;
}

} // namespace

caf::expected<int32_t> partition_count(session& db) {
  auto res = db.conn().exec("SELECT partitions FROM drover.partitioning", {},
                            false, "reading the partition count");
  if (!res)
    return std::move(res.error());
  if (res->rows() != 1)
    return make_error(errc::bad_config, "drover.partitioning has no row");
  return number<int32_t>(res->value(0, 0));
}

caf::expected<std::optional<lease_holder>> exclusive_holder(session& db) {
  auto res = db.conn().exec(
      "SELECT l.partition, l.owner, coalesce(l.owner_node, ''), "
      "coalesce(l.owner_host, ''), coalesce(l.owner_pid, 0), l.epoch, "
      "to_char(l.expires_at AT TIME ZONE 'UTC', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), greatest(0, extract(epoch "
      "FROM l.expires_at - now()) * 1000)::bigint "
      "FROM drover.partition_leases l WHERE l.owner IS NOT NULL AND "
      "l.expires_at > now() AND NOT EXISTS (SELECT 1 FROM "
      "drover.coordinators c WHERE c.instance = l.owner AND c.shares) "
      "ORDER BY l.partition LIMIT 1",
      {}, false, "looking for a coordinator that does not share");
  if (!res)
    return std::move(res.error());
  if (res->rows() == 0)
    return std::optional<lease_holder>{};
  lease_holder h;
  h.partition = number<int32_t>(res->value(0, 0));
  h.owner.instance = std::string{res->value(0, 1)};
  h.owner.node_id = std::string{res->value(0, 2)};
  h.owner.host = std::string{res->value(0, 3)};
  h.owner.pid = number<int64_t>(res->value(0, 4));
  h.epoch = number<int64_t>(res->value(0, 5));
  h.expires_at = std::string{res->value(0, 6)};
  h.expires_in_ms = number<int64_t>(res->value(0, 7));
  return std::optional<lease_holder>{std::move(h)};
}

caf::expected<lease_grant> take_free(session& db, const lease_owner& owner,
                                     const std::vector<int32_t>& wanted,
                                     std::chrono::milliseconds ttl) {
  lease_grant g;
  g.owner = owner;
  if (wanted.empty())
    return g;
  array_param parts{array_param::element::int4, wanted.size()};
  for (auto p : wanted)
    parts.int32(p);
  // One statement. Rows locked by another transaction (a paused former
  // owner's writer, until PostgreSQL ends its idle transaction) are
  // skipped, not waited for: the others are taken now, those at a later
  // round; a row is taken only if still free once locked.
  auto taken = db.conn().exec(
      "UPDATE drover.partition_leases SET owner = $1, owner_node = $2, "
      "owner_host = $3, owner_pid = $4, epoch = epoch + 1, "
      "expires_at = now() + $5 * interval '1 millisecond', "
      "acquired_at = now() WHERE partition IN (SELECT partition FROM "
      "drover.partition_leases WHERE partition = ANY($6::int4[]) AND "
      "(owner IS NULL OR expires_at <= now()) FOR UPDATE SKIP LOCKED) "
      "RETURNING partition, epoch",
      params{}
          .text(owner.instance)
          .text(owner.node_id)
          .text(owner.host)
          .int64(owner.pid)
          .int64(ttl.count())
          .array(parts),
      false, "taking partition leases");
  if (!taken)
    return std::move(taken.error());
  std::vector<std::pair<int32_t, int64_t>> held;
  for (int row = 0; row < taken->rows(); ++row)
    held.emplace_back(number<int32_t>(taken->value(row, 0)),
                      number<int64_t>(taken->value(row, 1)));
  std::sort(held.begin(), held.end());
  for (auto& [partition, epoch] : held) {
    g.partitions.push_back(partition);
    g.epochs.push_back(epoch);
  }
  return g;
}

lease_grant subset(const lease_grant& grant, const std::vector<int32_t>& which,
                   bool keep) {
  lease_grant out;
  out.owner = grant.owner;
  for (size_t i = 0; i < grant.partitions.size(); ++i) {
    bool in
        = std::binary_search(which.begin(), which.end(), grant.partitions[i]);
    if (in == keep) {
      out.partitions.push_back(grant.partitions[i]);
      out.epochs.push_back(grant.epochs[i]);
    }
  }
  return out;
}

// -- share_keeper -------------------------------------------------------------

share_keeper::share_keeper(config cfg) : cfg_(std::move(cfg)) {
  held_.owner = cfg_.owner;
  stamped_ = renewal_clock::now_ns(); // clock_ starts as renewed (nothing held)
  taken_since_snapshot_ = std::numeric_limits<stamp_ns>::max();
}

share_keeper::~share_keeper() {
  stop();
}

void share_keeper::start(hooks h) {
  hooks_ = std::move(h);
  thread_ = std::thread{[this] { run(); }};
  renewer_ = std::thread{[this] { renew_loop(); }};
}

std::function<bool()>
share_keeper::freshness(std::chrono::milliseconds margin) const {
  return clock_.freshness(cfg_.ttl, margin);
}

lease_grant share_keeper::held() const {
  std::lock_guard<std::mutex> guard{mx_};
  return held_;
}

void share_keeper::stop() {
  {
    std::lock_guard<std::mutex> guard{mx_};
    stopping_ = true;
  }
  cv_.notify_all();
  renew_cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  if (renewer_.joinable())
    renewer_.join();
}

void share_keeper::run() {
  std::unique_ptr<session> db;
  bool healthy = true;
  for (;;) {
    round(db, healthy);
    std::unique_lock<std::mutex> guard{mx_};
    if (deposed_)
      return;
    cv_.wait_for(guard, cfg_.interval, [this] { return stopping_ || poked_; });
    if (stopping_)
      return;
    poked_ = false;
  }
}

void share_keeper::poke() {
  {
    std::lock_guard<std::mutex> guard{mx_};
    renew_now_ = true;
  }
  renew_cv_.notify_all();
}

void share_keeper::set_held(lease_grant g) {
  std::lock_guard<std::mutex> guard{mx_};
  held_ = std::move(g);
}

void share_keeper::add_held(lease_grant g, stamp_ns take_sent) {
  std::lock_guard<std::mutex> guard{mx_};
  held_ = std::move(g);
  // The leases just taken expire no earlier than take_sent + TTL (the take
  // ran after take_sent). A renewal whose snapshot came before this add
  // vouches for them only from take_sent, and so does the clock if it
  // claims more (a whole renewal may have run while the take was under
  // way: its sent is then later than take_sent).
  taken_since_snapshot_ = std::min(taken_since_snapshot_, take_sent);
  if (take_sent < stamped_)
    stamp_locked(take_sent);
}

void share_keeper::stamp_locked(stamp_ns sent) {
  stamped_ = sent;
  clock_.renewed(sent);
}

// -- the renewer's thread --

void share_keeper::renew_loop() {
  std::unique_ptr<session> db;
  bool healthy = true;
  auto next = std::chrono::steady_clock::now() + cfg_.interval;
  for (;;) {
    {
      std::unique_lock<std::mutex> guard{mx_};
      renew_cv_.wait_until(
          guard, next, [this] { return stopping_ || deposed_ || renew_now_; });
      if (stopping_ || deposed_)
        return;
      renew_now_ = false;
    }
    // Paced from the start of each renewal: a slow one does not push the
    // next one back by its own duration.
    next = std::chrono::steady_clock::now() + cfg_.interval;
    renew_once(db, healthy);
  }
}

void share_keeper::renew_once(std::unique_ptr<session>& db, bool& healthy) {
  auto trouble = [&](const caf::error& err) {
    if (healthy && cfg_.log)
      cfg_.log("cannot renew the partition leases (retrying every "
               + std::to_string(cfg_.interval.count())
               + " ms; writes stop when they expire): "
               + drover::describe(err));
    healthy = false;
    if (db && !db->ok())
      db.reset();
  };
  // `sent` before the snapshot: every lease in it is renewed by a statement
  // that runs after `sent`, so (if renewed) it expires after sent + TTL.
  auto sent = renewal_clock::now_ns();
  lease_grant snapshot;
  {
    std::lock_guard<std::mutex> guard{mx_};
    snapshot = held_;
    taken_since_snapshot_ = std::numeric_limits<stamp_ns>::max();
  }
  std::vector<int32_t> renewed;
  if (!snapshot.partitions.empty()) {
    if (!db) {
      auto s = session::open(cfg_.conninfo);
      if (!s)
        return trouble(s.error());
      db = std::make_unique<session>(std::move(*s));
    }
    auto res = renew_each(*db, snapshot, cfg_.ttl);
    if (!res)
      return trouble(res.error());
    renewed = std::move(*res);
  }
  if (!healthy && cfg_.log)
    cfg_.log("partition leases renewed again");
  healthy = true;
  bool lost_some = false;
  {
    std::lock_guard<std::mutex> guard{mx_};
    // Not renewed: taken over -- unless the keeper let it go (handed over,
    // given back, dropped) or took it again (a new epoch) meanwhile; only
    // the keeper changes held_, so what is still held at the same epoch
    // now is lost for good.
    for (size_t i = 0; i < snapshot.partitions.size(); ++i) {
      auto p = snapshot.partitions[i];
      if (std::binary_search(renewed.begin(), renewed.end(), p))
        continue;
      auto at = std::lower_bound(held_.partitions.begin(),
                                 held_.partitions.end(), p);
      auto j = static_cast<size_t>(at - held_.partitions.begin());
      if (at != held_.partitions.end() && *at == p
          && held_.epochs[j] == snapshot.epochs[i]) {
        lost_.emplace_back(p, snapshot.epochs[i]);
        lost_some = true;
      }
    }
    // Freshness is claimed for what is held NOW, and only when every lease
    // of it is known to expire after the stamp + TTL:
    // - held now and in the snapshot at the same epoch: renewed by this
    //   statement (it ran after `sent`), or lost;
    // - held now and not in the snapshot (or at another epoch): added by
    //   the keeper after the snapshot (add_held), taken by a statement that
    //   ran after its take_sent; taken_since_snapshot_ is the earliest such
    //   take_sent, hence min(sent, taken_since_snapshot_). (A take sent
    //   after `sent` -- the usual case -- changes nothing.)
    // - in the snapshot and not held now: not ours to vouch for.
    // So the stamp holds for all of held_ but the lost ones. While those
    // are held, no stamp at all: the last one (from an earlier renewal)
    // stays and ages. The keeper drops them (drop_lost) and asks for a
    // renewal at once, whose snapshot no longer has them.
    if (!lost_some)
      stamp_locked(std::min(sent, taken_since_snapshot_));
    else {
      std::sort(lost_.begin(), lost_.end());
      lost_.erase(std::unique(lost_.begin(), lost_.end()), lost_.end());
      poked_ = true;
    }
  }
  if (lost_some)
    cv_.notify_all();
}

// -- the keeper's thread --

/// Drops the leases the renewer found taken over (false: they could not
/// be dropped, the process must stop).
bool share_keeper::drop_lost() {
  lease_grant held;
  std::vector<int32_t> gone;
  {
    std::lock_guard<std::mutex> guard{mx_};
    held = held_;
    for (auto& [p, epoch] : lost_) {
      auto at
          = std::lower_bound(held.partitions.begin(), held.partitions.end(), p);
      if (at != held.partitions.end() && *at == p
          && held.epochs[static_cast<size_t>(at - held.partitions.begin())]
                 == epoch)
        gone.push_back(p);
    }
    lost_.clear();
  }
  if (gone.empty())
    return true;
  // Taken over (this process was paused or cut off past the TTL): the
  // fence already refuses its writes there; the node drops them and goes
  // on with the rest -- and, if it is still a member, gets its share back
  // by hand-off. Only if it cannot drop them does it stop.
  auto staying = subset(held, gone, false);
  auto why = "partition " + list(gone) + " was taken over by another "
             + "coordinator";
  if (!hooks_.releasing || !hooks_.releasing(staying, gone)) {
    {
      std::lock_guard<std::mutex> guard{mx_};
      deposed_ = true;
    }
    renew_cv_.notify_all();
    if (cfg_.deposed)
      cfg_.deposed(why);
    return false;
  }
  {
    std::lock_guard<std::mutex> guard{mx_};
    held_ = std::move(staying);
    renew_now_ = true; // freshness back without waiting for the interval
  }
  renew_cv_.notify_all();
  if (cfg_.log)
    cfg_.log("deposed: " + why + "; dropped it, nothing more is written there");
  return true;
}

void share_keeper::round(std::unique_ptr<session>& db, bool& healthy) {
  auto say = [this](const std::string& line) {
    if (cfg_.log)
      cfg_.log(line);
  };
  auto trouble = [&](const caf::error& err) {
    if (healthy)
      say("cannot share the partition leases (retrying every "
          + std::to_string(cfg_.interval.count())
          + " ms; the leases held are renewed apart): "
          + drover::describe(err));
    healthy = false;
    if (db && !db->ok())
      db.reset();
  };
  // The one home of "drop what was taken over"; it needs no connection.
  if (!drop_lost())
    return;
  if (replaced_)
    return; // stopping: it takes nothing more, whoever else runs
  if (!db) {
    auto s = session::open(cfg_.conninfo);
    if (!s)
      return trouble(s.error());
    db = std::make_unique<session>(std::move(*s));
  }
  if (count_ == 0) {
    auto n = partition_count(*db);
    if (!n)
      return trouble(n.error());
    count_ = *n;
  }
  // A change the node did not take in full (a hook failed) is made again:
  // the store and the queue get what is held.
  auto held = this->held();
  if (!in_sync_ && hooks_.acquired)
    in_sync_ = hooks_.acquired(held, {});
  // Membership is a second statement: its failure (a lock an operator
  // holds on drover.coordinators) only skips the balancing.
  auto started = announce_row(*db, cfg_.owner, true, started_us_, cfg_.ttl);
  if (!started)
    return trouble(started.error());
  started_us_ = *started;
  auto members = sharing_members(*db, cfg_.ttl);
  if (!members)
    return trouble(members.error());
  if (!healthy)
    say("sharing the partition leases again");
  healthy = true;
  auto view = share_keys(*members, cfg_.owner);
  if (view.newer_twin)
    return step_down(*db, *view.newer_twin);
  if (!view.mine || !in_sync_)
    return; // our announcement is not visible yet, or the node lags
  auto shares = rendezvous_shares(view.keys, count_);
  const auto& mine = shares[*view.mine];
  // Hand over what is no longer ours to hold: the node first, then the
  // rows. A node that could not drop them all keeps them (held, renewed)
  // and is brought back in line next round.
  auto gone = subset(held, mine, false).partitions;
  if (!gone.empty()) {
    if (!hand_over(*db, held, gone, true))
      return;
    held = subset(held, gone, false);
  }
  // Take what is ours and free.
  std::vector<int32_t> wanted;
  std::set_difference(mine.begin(), mine.end(), held.partitions.begin(),
                      held.partitions.end(), std::back_inserter(wanted));
  if (wanted.empty())
    return;
  auto take_sent = renewal_clock::now_ns();
  auto got = take_free(*db, cfg_.owner, wanted, cfg_.ttl);
  if (!got)
    return trouble(got.error());
  if (got->partitions.empty())
    return;
  lease_grant now_held;
  now_held.owner = cfg_.owner;
  {
    // Merge, ascending.
    std::vector<std::pair<int32_t, int64_t>> all;
    for (size_t i = 0; i < held.partitions.size(); ++i)
      all.emplace_back(held.partitions[i], held.epochs[i]);
    for (size_t i = 0; i < got->partitions.size(); ++i)
      all.emplace_back(got->partitions[i], got->epochs[i]);
    std::sort(all.begin(), all.end());
    for (auto& [p, e] : all) {
      now_held.partitions.push_back(p);
      now_held.epochs.push_back(e);
    }
  }
  add_held(now_held, take_sent);
  if (!hooks_.acquired || hooks_.acquired(now_held, got->partitions)) {
    say("took partitions " + list(got->partitions));
    return;
  }
  // The node could not take them: nobody would serve them. Give them back
  // once the node is sure to hold nothing of them (they are ours by the
  // shares: a later round tries again); until then they stay held.
  hand_over(*db, now_held, got->partitions, false);
}

bool share_keeper::hand_over(session& db, const lease_grant& held,
                             const std::vector<int32_t>& which, bool say_done) {
  auto staying = subset(held, which, false);
  if (!hooks_.releasing || !hooks_.releasing(staying, which)) {
    in_sync_ = false; // kept (renewed); the next round tries again
    return false;
  }
  set_held(staying);
  auto gone = subset(held, which, true);
  auto e = release_rows(db, gone);
  if (cfg_.log && e)
    cfg_.log("handing over partitions " + list(which)
             + " failed (they expire by themselves): " + drover::describe(e));
  else if (cfg_.log && say_done)
    cfg_.log("handed over partitions " + list(which));
  return true;
}

void share_keeper::step_down(session& db, const sharing_member& twin) {
  auto held = this->held();
  // As a hand-off, so the newer instance takes them at its next round.
  bool was_in_sync = in_sync_;
  if (!held.partitions.empty()
      && !hand_over(db, held, held.partitions, false)) {
    if (was_in_sync && cfg_.log)
      cfg_.log("a newer coordinator runs as node '" + twin.node_id
               + "', but the node could not drop partitions "
               + list(held.partitions)
               + " yet: they are kept (renewed), tried again every round");
    return;
  }
  replaced_ = true;
  auto why = "a newer coordinator runs as node '" + twin.node_id
             + "' (instance " + twin.instance + "); handed over "
             + std::to_string(held.partitions.size()) + " partitions";
  if (cfg_.log)
    cfg_.log("replaced: " + why);
  if (cfg_.replaced)
    cfg_.replaced(why);
}

caf::error share_keeper::stop_and_release() {
  stop();
  auto s = session::open(cfg_.conninfo);
  if (!s)
    return std::move(s.error());
  return release(*s, held());
}

} // namespace drover::pg
