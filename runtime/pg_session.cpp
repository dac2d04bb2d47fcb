// The PostgreSQL session's life (runtime/pg.hpp): opening a connection
// for it, preparing and re-opening it, and migrating the schema
// (runtime/pg_schema.cpp holds the migrations). Its group-commit write is in
// runtime/pg.cpp, connections in runtime/pg_connection.cpp.

#include "runtime/pg.hpp"

#include "runtime/detail/pg_common.hpp"
#include "runtime/errors.hpp"

#include <string>

namespace drover::pg {

using detail::parse_number;

namespace {

/// Key of the transaction-level advisory lock that serialises migrations
/// ("drover" in ASCII).
constexpr int64_t migration_lock_key = 0x64726f766572;

} // namespace

// -- session ------------------------------------------------------------------

session::session(std::string conninfo, connection conn, decode_limits limits)
    : conninfo_(std::move(conninfo)), conn_(std::move(conn)), limits_(limits) {}

caf::expected<session> session::open(const std::string& conninfo,
                                     decode_limits limits) {
  auto conn = connection::open(conninfo);
  if (!conn)
    return std::move(conn.error());
  session s{conninfo, std::move(*conn), limits};
  if (auto err = s.prepare_connection())
    return err;
  return caf::expected<session>{std::move(s)};
}

caf::error session::prepare_connection() {
  fence_applied_ = false;
  // Acknowledged means committed: never run with synchronous_commit off,
  // whatever the server's default. (local, remote_write, on, remote_apply
  // all wait for the local flush and are kept.)
  auto res = conn_.exec("SELECT current_setting('synchronous_commit')", {},
                        false, "reading synchronous_commit");
  if (!res)
    return std::move(res.error());
  if (res->rows() == 1 && res->value(0, 0) == "off") {
    auto set = conn_.exec("SET synchronous_commit = on", {}, false,
                          "enabling synchronous_commit");
    if (!set)
      return std::move(set.error());
  }
  return caf::none;
}

caf::error session::reconnect() {
  auto conn = connection::open(conninfo_);
  if (!conn) {
    conn_ = connection{};
    return std::move(conn.error());
  }
  conn_ = std::move(*conn);
  return prepare_connection();
}

caf::error session::rollback_quietly() {
  if (!conn_.in_transaction())
    return caf::none;
  auto res = conn_.exec("ROLLBACK", {}, false, "rolling back");
  return res ? caf::none : std::move(res.error());
}

caf::expected<int32_t> session::schema_version() {
  auto exists
      = conn_.exec("SELECT to_regclass('drover.schema_migrations') IS NOT NULL",
                   {}, false, "reading the schema version");
  if (!exists)
    return std::move(exists.error());
  if (exists->value(0, 0) != "t")
    return int32_t{0};
  auto res = conn_.exec(
      "SELECT coalesce(max(version), 0) FROM drover.schema_migrations", {},
      false, "reading the schema version");
  if (!res)
    return std::move(res.error());
  int32_t version = 0;
  if (!parse_number(res->value(0, 0), version))
    return make_error(errc::malformed, "unreadable schema version");
  return version;
}

caf::error session::migrate() {
  if (auto err = rollback_quietly())
    return err;
  auto fail = [this](caf::error err) {
    rollback_quietly();
    return err;
  };
  if (auto res = conn_.exec("BEGIN", {}, false, "migrating"); !res)
    return std::move(res.error());
  // Held until COMMIT/ROLLBACK: concurrent migrators queue up here, and each
  // sees what the previous one committed.
  if (auto res = conn_.exec("SELECT pg_advisory_xact_lock($1)",
                            params{}.int64(migration_lock_key), false,
                            "taking the migration lock");
      !res)
    return fail(std::move(res.error()));
  auto exists
      = conn_.exec("SELECT to_regclass('drover.schema_migrations') IS NOT NULL",
                   {}, false, "migrating");
  if (!exists)
    return fail(std::move(exists.error()));
  if (exists->value(0, 0) != "t") {
    auto err = conn_.exec_script(
        "CREATE SCHEMA IF NOT EXISTS drover;\n"
        "CREATE TABLE drover.schema_migrations (\n"
        "  version     integer PRIMARY KEY,\n"
        "  description text NOT NULL,\n"
        "  applied_at  timestamptz NOT NULL DEFAULT now()\n"
        ");\n"
        "COMMENT ON TABLE drover.schema_migrations IS\n"
        "  'Drover schema versions applied (runtime/pg_schema.cpp)';\n",
        "creating drover.schema_migrations");
    if (err)
      return fail(std::move(err));
  }
  auto applied_res
      = conn_.exec("SELECT version, description FROM drover.schema_migrations "
                   "ORDER BY version",
                   {}, false, "reading drover.schema_migrations");
  if (!applied_res)
    return fail(std::move(applied_res.error()));
  const auto& known = migrations();
  std::map<int32_t, std::string> applied;
  for (int row = 0; row < applied_res->rows(); ++row) {
    int32_t version = 0;
    if (!parse_number(applied_res->value(row, 0), version))
      return fail(make_error(errc::malformed, "unreadable schema version"));
    auto description = std::string{applied_res->value(row, 1)};
    auto i = std::find_if(known.begin(), known.end(), [version](const auto& m) {
      return m.version == version;
    });
    if (i == known.end())
      return fail(make_error(
          errc::bad_config,
          "the database has schema version " + std::to_string(version)
              + ", which this binary does not know (newest: "
              + std::to_string(known.empty() ? 0 : known.back().version)
              + ")"));
    if (description != i->description)
      return fail(make_error(
          errc::bad_config,
          "schema version " + std::to_string(version) + " in the database is '"
              + description + "', this binary's is '" + i->description + "'"));
    applied.emplace(version, std::move(description));
  }
  for (const auto& m : known) {
    if (applied.count(m.version) > 0)
      continue;
    auto what = "applying schema version " + std::to_string(m.version);
    if (auto err = conn_.exec_script(m.sql, what))
      return fail(std::move(err));
    auto rec = conn_.exec(
        "INSERT INTO drover.schema_migrations (version, description) "
        "VALUES ($1, $2)",
        params{}.int32(m.version).text(m.description), false, what);
    if (!rec)
      return fail(std::move(rec.error()));
  }
  if (auto res = conn_.exec("COMMIT", {}, false, "committing the migration");
      !res)
    return fail(std::move(res.error()));
  return caf::none;
}
} // namespace drover::pg
