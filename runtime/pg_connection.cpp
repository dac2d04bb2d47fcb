// PostgreSQL connections (runtime/pg.hpp): what a failure means, results,
// one libpq connection and its notices, connection strings. The session
// (job writes, migrations) is in runtime/pg.cpp.

#include "runtime/pg.hpp"

#include "runtime/detail/pg_common.hpp"
#include "runtime/detail/pg_fence.hpp"
#include "runtime/errors.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

namespace drover::pg {

static_assert(std::is_same_v<Oid, uint32_t>, "libpq's Oid is 32 bits");

using detail::parse_number;

namespace {

std::string trimmed(const char* msg) {
  std::string str = msg != nullptr ? msg : "";
  while (!str.empty() && (str.back() == '\n' || str.back() == ' '))
    str.pop_back();
  return str;
}

std::string prefixed(std::string_view what, std::string msg) {
  if (what.empty())
    return msg;
  std::string str{what};
  str += ": ";
  str += msg;
  return str;
}

/// Maps an SQLSTATE (https://www.postgresql.org/docs/15/errcodes-appendix.html)
/// of a server that is still connected.
errc classify(const std::string& state) {
  if (state == "23505") // unique_violation
    return errc::conflict;
  auto cls = state.substr(0, 2);
  if (cls == "08"     // connection exception
      || cls == "40"  // transaction rollback: serialization, deadlock
      || cls == "53"  // insufficient resources: disk full, out of memory
      || cls == "55"  // object not in prerequisite state: lock timeout
      || cls == "57"  // operator intervention: shutdown, cancel
      || cls == "58"  // system error: I/O
      || cls == "XX") // internal error
    return errc::unavailable;
  if (cls == "42"     // syntax error or access rule: missing schema, privileges
      || cls == "28"  // invalid authorization
      || cls == "3D"  // invalid catalog (database) name
      || cls == "3F") // invalid schema name
    return errc::bad_config;
  return errc::invalid_value; // 22 data exception, 23 integrity, ...
}

/// The SQLSTATE a context of this layer ends with (" [SQLSTATE xxxxx]", as
/// connection::failure writes it), or empty. Only the end counts: text
/// earlier in a context may come from the data.
std::string_view trailing_sqlstate(std::string_view ctx) {
  constexpr std::string_view open = " [SQLSTATE ";
  constexpr size_t len = 11 + 5 + 1; // open, five characters, ']'
  if (ctx.size() < len || ctx.back() != ']')
    return {};
  auto tail = ctx.substr(ctx.size() - len);
  if (tail.substr(0, open.size()) != open)
    return {};
  return tail.substr(open.size(), 5);
}

/// True if `res` (the outcome of a statement on `conn`) means the
/// connection is gone although libpq still reports CONNECTION_OK. When the
/// server dies under a connection (a crash, `pg_ctl stop -m immediate`),
/// the first statement after it fails with a FATAL result that carries no
/// SQLSTATE ("server closed the connection unexpectedly"); PQstatus only
/// turns CONNECTION_BAD on the *next* call. Every error libpq raises itself
/// on a connection (no SQLSTATE: lost socket, lost protocol sync, out of
/// memory) leaves the connection in a state nobody should trust, so all of
/// them count as lost.
bool lost_unnoticed(pg_conn* conn, pg_result* res) {
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK)
    return false;
  if (res == nullptr)
    return true;
  return PQresultStatus(res) == PGRES_FATAL_ERROR
         && PQresultErrorField(res, PG_DIAG_SQLSTATE) == nullptr;
}

/// Closes a connection that libpq has not marked broken yet (see
/// lost_unnoticed): connection_ok() turns false at once, so the session's
/// owner reconnects instead of reusing it, and a COMMIT that failed this way
/// counts as "outcome unknown" (session::write), never as a rollback.
void drop_if_lost(pg_conn*& conn, pg_result* res) {
  if (lost_unnoticed(conn, res)) {
    PQfinish(conn);
    conn = nullptr;
  }
}

void collect_notice(void* arg, const char* message) {
  auto* log = static_cast<notice_log*>(arg);
  if (log == nullptr || !log->keep)
    return;
  if (log->items.size() >= notice_log::capacity)
    log->items.pop_front();
  log->items.emplace_back(trimmed(message));
}

} // namespace

// -- failures -----------------------------------------------------------------

failure_class classify_sqlstate(std::string_view state) {
  if (state.size() != 5)
    return failure_class::other;
  auto cls = state.substr(0, 2);
  if (cls == "08" || state.substr(0, 3) == "57P")
    return failure_class::connection;
  if (cls == "22" || cls == "23" || cls == "54")
    return failure_class::data;
  return failure_class::other;
}

std::string sqlstate_of(const caf::error& err) {
  if (!err || err.category() != errc_category
      || !err.context().match_elements<std::string>())
    return {};
  return std::string{trailing_sqlstate(err.context().get_as<std::string>(0))};
}

failure_class failure_class_of(const caf::error& err) {
  if (!err || err.category() != errc_category)
    return failure_class::other;
  std::string ctx;
  if (err.context().match_elements<std::string>())
    ctx = err.context().get_as<std::string>(0);
  if (auto state = trailing_sqlstate(ctx); !state.empty())
    return classify_sqlstate(state);
  switch (static_cast<errc>(err.code())) {
    case errc::unavailable:
      // Without SQLSTATE: libpq's own failures (lost connection, outcome
      // unknown) and "not connected". A fence found expired says so
      // itself and is not a connection failure.
      return ctx.find(detail::expired_lease_marker) != std::string::npos
                 ? failure_class::other
                 : failure_class::connection;
    case errc::invalid_value:
    case errc::conflict:
    case errc::not_found:
      return failure_class::data;
    default:
      return failure_class::other;
  }
}

// -- result -------------------------------------------------------------------

result& result::operator=(result&& other) noexcept {
  if (this != &other) {
    if (res_ != nullptr)
      PQclear(res_);
    res_ = std::exchange(other.res_, nullptr);
  }
  return *this;
}

result::~result() {
  if (res_ != nullptr)
    PQclear(res_);
}

int result::rows() const {
  return res_ != nullptr ? PQntuples(res_) : 0;
}

int result::columns() const {
  return res_ != nullptr ? PQnfields(res_) : 0;
}

bool result::is_null(int row, int col) const {
  return res_ == nullptr || PQgetisnull(res_, row, col) != 0;
}

std::string_view result::value(int row, int col) const {
  if (res_ == nullptr)
    return {};
  return {PQgetvalue(res_, row, col),
          static_cast<size_t>(PQgetlength(res_, row, col))};
}

uint64_t result::affected() const {
  uint64_t n = 0;
  if (res_ != nullptr)
    parse_number(std::string_view{PQcmdTuples(res_)}, n);
  return n;
}

// -- connection ---------------------------------------------------------------

connection::connection() noexcept = default;

connection::connection(pg_conn* conn)
    : conn_(conn), notices_(std::make_unique<notice_log>()) {
  // libpq's default processor prints to stderr; collect instead.
  PQsetNoticeProcessor(conn_, collect_notice, notices_.get());
}

connection::connection(connection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      prepared_(std::move(other.prepared_)),
      notices_(std::move(other.notices_)) {
  other.prepared_.clear();
}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    if (conn_ != nullptr)
      PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
    prepared_ = std::move(other.prepared_);
    other.prepared_.clear();
    notices_ = std::move(other.notices_);
  }
  return *this;
}

connection::~connection() {
  if (conn_ != nullptr)
    PQfinish(conn_);
}

namespace {

std::mutex application_name_mx;
std::string application_name = "drover";

std::string current_application_name() {
  std::lock_guard<std::mutex> guard{application_name_mx};
  return application_name;
}

} // namespace

void set_application_name(std::string name) {
  if (name.size() > 63)
    name.resize(63);
  std::lock_guard<std::mutex> guard{application_name_mx};
  application_name = std::move(name);
}

caf::expected<connection> connection::open(const std::string& conninfo) {
  auto app = current_application_name();
  // Keywords are processed in order and later ones win: the defaults come
  // before dbname (which expands `conninfo`), the encoding after it.
  const char* const keywords[] = {
      "connect_timeout",
      "keepalives",
      "keepalives_idle",
      "keepalives_interval",
      "keepalives_count",
      "fallback_application_name",
      "dbname",
      "client_encoding",
      nullptr,
  };
  const char* const values[] = {
      "10",   "1",     "30", "10", "3", app.c_str(), conninfo.c_str(),
      "UTF8", nullptr,
  };
  PGconn* raw = PQconnectdbParams(keywords, values, 1);
  if (raw == nullptr)
    return make_error(errc::unavailable,
                      "cannot connect to PostgreSQL: out of memory");
  connection conn{raw};
  if (PQstatus(raw) != CONNECTION_OK)
    return make_error(errc::unavailable, "cannot connect to PostgreSQL: "
                                             + trimmed(PQerrorMessage(raw)));
  return caf::expected<connection>{std::move(conn)};
}

bool connection::connection_ok() const {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

caf::error connection::failure(pg_result* res, std::string_view what) const {
  std::string msg;
  std::string state;
  if (res != nullptr) {
    if (const char* s = PQresultErrorField(res, PG_DIAG_SQLSTATE))
      state = s;
    if (const char* m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
      msg = m;
    else
      msg = trimmed(PQresultErrorMessage(res));
    if (const char* d = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL)) {
      msg += " (";
      msg += d;
      msg += ')';
    }
  }
  if (!connection_ok() || lost_unnoticed(conn_, res)) {
    auto conn_msg = conn_ != nullptr ? trimmed(PQerrorMessage(conn_))
                                     : std::string{"not connected"};
    if (!conn_msg.empty() && conn_msg != msg)
      msg = msg.empty() ? conn_msg : msg + "; " + conn_msg;
    if (!state.empty())
      msg += " [SQLSTATE " + state + "]";
    return make_error(errc::unavailable,
                      prefixed(what, "PostgreSQL unavailable: " + msg));
  }
  if (state.empty()) {
    // A client-side failure on a healthy connection (or a result status we
    // never ask for).
    if (msg.empty() && res != nullptr)
      msg = std::string{"unexpected result "}
            + PQresStatus(PQresultStatus(res));
    return make_error(errc::invalid_value, prefixed(what, msg));
  }
  return make_error(classify(state),
                    prefixed(what, msg + " [SQLSTATE " + state + "]"));
}

caf::error connection::check_params(const params& ps,
                                    std::string_view what) const {
  if (conn_ == nullptr)
    return make_error(errc::unavailable,
                      prefixed(what, "PostgreSQL unavailable: not connected"));
  if (!ps.invalid_.empty())
    return make_error(errc::invalid_value, prefixed(what, ps.invalid_));
  if (ps.size() > max_params)
    return make_error(errc::invalid_value,
                      prefixed(what, std::to_string(ps.size())
                                         + " parameters in one statement"));
  return caf::none;
}

caf::expected<result> connection::finish(result res, std::string_view what) {
  if (res) {
    auto status = PQresultStatus(res.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
      return caf::expected<result>{std::move(res)};
  }
  auto err = failure(res.get(), what);
  drop_if_lost(conn_, res.get());
  if (conn_ == nullptr)
    prepared_.clear();
  return err;
}

caf::expected<result> connection::exec(const std::string& sql, const params& ps,
                                       bool binary_results,
                                       std::string_view what) {
  if (auto err = check_params(ps, what))
    return err;
  const auto n = ps.size();
  const auto wire = ps.wire();
  return finish(result{PQexecParams(conn_, sql.c_str(), static_cast<int>(n),
                                    ps.types_.data(), wire.values.data(),
                                    wire.lengths.data(), ps.formats_.data(),
                                    binary_results ? 1 : 0)},
                what);
}

caf::expected<result> connection::exec_prepared(const std::string& name,
                                                const std::string& sql,
                                                const params& ps,
                                                bool binary_results,
                                                std::string_view what) {
  if (auto err = check_params(ps, what))
    return err;
  const auto n = ps.size();
  if (prepared_.count(name) == 0) {
    auto res = finish(result{PQprepare(conn_, name.c_str(), sql.c_str(),
                                       static_cast<int>(n), ps.types_.data())},
                      what);
    if (!res)
      return std::move(res.error());
    prepared_.insert(name);
  }
  const auto wire = ps.wire();
  return finish(
      result{PQexecPrepared(conn_, name.c_str(), static_cast<int>(n),
                            wire.values.data(), wire.lengths.data(),
                            ps.formats_.data(), binary_results ? 1 : 0)},
      what);
}

caf::error connection::exec_script(const std::string& sql,
                                   std::string_view what) {
  if (conn_ == nullptr)
    return make_error(errc::unavailable,
                      prefixed(what, "PostgreSQL unavailable: not connected"));
  result res{PQexec(conn_, sql.c_str())};
  if (res) {
    auto status = PQresultStatus(res.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
      return caf::none;
  }
  auto err = failure(res.get(), what);
  drop_if_lost(conn_, res.get());
  return err;
}

bool connection::in_transaction() const {
  if (conn_ == nullptr)
    return false;
  auto st = PQtransactionStatus(conn_);
  return st == PQTRANS_INTRANS || st == PQTRANS_INERROR || st == PQTRANS_ACTIVE;
}

int connection::backend_pid() const {
  return conn_ != nullptr ? PQbackendPID(conn_) : 0;
}

std::vector<std::string> connection::take_notices() {
  std::vector<std::string> out;
  if (notices_) {
    out.assign(std::make_move_iterator(notices_->items.begin()),
               std::make_move_iterator(notices_->items.end()));
    notices_->items.clear();
  }
  return out;
}

void connection::drop_notices() {
  if (notices_) {
    notices_->keep = false;
    notices_->items.clear();
  }
}

caf::expected<std::string> conninfo_with(
    const std::string& conninfo,
    const std::vector<std::pair<std::string, std::string>>& settings) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    auto msg = err != nullptr ? trimmed(err) : std::string{"out of memory"};
    if (err != nullptr)
      PQfreemem(err);
    return make_error(errc::bad_config,
                      "cannot parse the connection string: " + msg);
  }
  std::vector<std::pair<std::string, std::string>> kv;
  for (auto* opt = opts; opt->keyword != nullptr; ++opt)
    if (opt->val != nullptr)
      kv.emplace_back(opt->keyword, opt->val);
  PQconninfoFree(opts);
  for (const auto& [key, val] : settings) {
    auto i = std::find_if(kv.begin(), kv.end(), [&key = key](const auto& x) {
      return x.first == key;
    });
    if (i != kv.end())
      i->second = val;
    else
      kv.emplace_back(key, val);
  }
  std::string out;
  for (const auto& [key, val] : kv) {
    if (!out.empty())
      out += ' ';
    out += key;
    out += "='";
    for (char c : val) {
      if (c == '\'' || c == '\\')
        out += '\\';
      out += c;
    }
    out += '\'';
  }
  return out;
}

} // namespace drover::pg
