// The job endpoints (submit, batch, list, cancel, result, events) and the
// dead-letter queue's (list, retry, purge). See
// gateway/detail/gateway_impl.hpp.

#include "gateway/detail/gateway_impl.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_strict.hpp"

namespace drover::http::gateway_detail {

// -- exec scope (issue 11 item 3) ---------------------------------------------
/// Jobs of type `exec` run programs on the workers: submitting one needs
/// the exec scope on top of submit. The message a key without it gets,
/// or "" if it may.
std::string gateway_impl::exec_refusal(const principal& who,
                                       const std::string& type) {
  if (type != "exec" || who.has(scope_exec))
    return {};
  return "key '" + who.key_name
         + "' lacks the exec scope (needed for jobs of type exec)";
}

// -- endpoints ----------------------------------------------------------------

/// Applies the Idempotency-Key header; false (and answered) if it
/// contradicts the body.
bool gateway_impl::apply_idempotency_header(const ex_ptr& ex,
                                            submit_request& req) {
  auto& fields = ex->req();
  auto found = fields.find("Idempotency-Key");
  if (found == fields.end())
    return true;
  auto h = found->value();
  std::string key{h.data(), h.size()};
  if (key.empty()) {
    fail(ex, 400, "invalid_request",
         "Idempotency-Key header: must not be empty (omit it for none)");
    return false;
  }
  if (auto err = check_text_field(key, "Idempotency-Key header")) {
    fail(ex, err);
    return false;
  }
  if (!req.idempotency_key.empty() && req.idempotency_key != key) {
    fail(ex, 400, "invalid_request",
         "Idempotency-Key header and idempotency_key field differ");
    return false;
  }
  req.idempotency_key = std::move(key);
  return true;
}

void gateway_impl::submit(const ex_ptr& ex, const principal& who) {
  auto req = parse_submit(ex->req().body(), json_limits_);
  if (!req)
    return fail(ex, req.error());
  if (!apply_idempotency_header(ex, *req))
    return;
  if (auto refusal = exec_refusal(who, req->type); !refusal.empty())
    return fail(ex, 403, "forbidden", refusal); // exec scope check
  req->tenant = who.tenant;
  auto api = api_;
  auto timeout = cfg_.request_timeout;
  auto self = shared_from_this();
  sys_.spawn([=](caf::event_based_actor* a) {
    a->request(api, timeout, submit_atom::value, *req)
        .then(
            [self, ex](job_record& job) {
              self->reply(ex, 202, submitted_json(job),
                          {{"Location", "/api/jobs/" + job.job_id}});
            },
            [self, ex](caf::error& err) {
              if (is(err, errc::conflict))
                self->fail(ex, 422, "idempotency_conflict",
                           "this idempotency key was used for a different job "
                           "specification");
              else
                self->fail(ex, err);
            });
  });
}

void gateway_impl::batch(const ex_ptr& ex, const principal& who) {
  auto items = parse_batch(ex->req().body(), json_limits_, cfg_.max_batch);
  if (!items)
    return fail(ex, items.error());
  // Items the parser refused are answered here; the others go to the
  // node in one request, which the store commits in one transaction.
  std::vector<std::string> results(items->size());
  std::vector<size_t> index; // result slot of each request sent
  std::vector<submit_request> reqs;
  size_t accepted = 0;
  for (size_t i = 0; i < items->size(); ++i) {
    auto& item = (*items)[i];
    if (item.error) {
      auto s = classify(item.error);
      results[i] = item_error_json(s.code, context_of(item.error), s.status);
      continue;
    }
    if (auto refusal = exec_refusal(who, item.request.type);
        !refusal.empty()) { // exec scope check
      results[i] = item_error_json("forbidden", refusal, 403);
      continue;
    }
    item.request.tenant = who.tenant;
    index.push_back(i);
    reqs.push_back(std::move(item.request));
  }
  auto finish = [](const ex_ptr& ex, gateway_impl& gw,
                   const std::vector<std::string>& results, size_t accepted) {
    std::string body
        = "{\"accepted\":" + std::to_string(accepted) + ",\"rejected\":"
          + std::to_string(results.size() - accepted) + ",\"results\":[";
    for (size_t i = 0; i < results.size(); ++i) {
      if (i > 0)
        body += ',';
      body += results[i];
    }
    body += "]}";
    gw.reply(ex, 200, std::move(body));
  };
  if (reqs.empty())
    return finish(ex, *this, results, accepted);
  auto self = shared_from_this();
  auto shared = std::make_shared<std::vector<std::string>>(std::move(results));
  ask<std::vector<job_record>>(
      ex,
      [self, ex, shared, index, finish](std::vector<job_record>& recs) {
        size_t accepted = 0;
        for (size_t k = 0; k < recs.size() && k < index.size(); ++k) {
          auto& rec = recs[k];
          auto& out = (*shared)[index[k]];
          if (!rec.job_id.empty()) {
            out = submitted_json(rec);
            ++accepted;
            continue;
          }
          auto code = rec.error.code == "conflict"
                          ? std::string{"idempotency_conflict"}
                          : rec.error.code;
          // A tenant's or a partition's cap of waiting jobs (admission
          // control) keeps its code: the client should retry that item
          // later.
          auto status = code == "idempotency_conflict" ? 422u
                        : code == "too_large"          ? 413u
                        : code == "rate_limited"       ? 429u
                        : code == "overloaded"         ? 503u
                                                       : 400u;
          if (status == 400)
            code = "invalid_request";
          out = item_error_json(code, rec.error.message, status);
        }
        finish(ex, *self, *shared, accepted);
      },
      submit_atom::value, std::move(reqs));
}

/// One refused batch item: the error and the status it would have had
/// as a single submission.
std::string gateway_impl::item_error_json(const std::string& code,
                                          const std::string& message,
                                          unsigned status) {
  auto body = error_json(code, message);
  body.pop_back();
  return body + ",\"status\":" + std::to_string(status) + "}";
}

void gateway_impl::list(const ex_ptr& ex, const principal& who, const target& t,
                        bool dlq) {
  job_query q;
  q.tenant = keys_.development_mode() ? std::string{} : who.tenant;
  q.dead_lettered = dlq;
  for (auto& kv : t.query) {
    if (kv.first == "status") {
      job_status s;
      if (!from_string(kv.second, s))
        return fail(ex, 400, "invalid_request",
                    "status: unknown status '" + kv.second + "'");
      q.status = static_cast<int32_t>(s);
    } else if (kv.first == "type") {
      q.type = kv.second;
    } else if (kv.first == "cursor") {
      if (!kv.second.empty() && !valid_job_id(kv.second))
        return fail(ex, 400, "invalid_request", "cursor: not a job id");
      q.after = kv.second;
    } else if (kv.first == "limit") {
      char* end = nullptr;
      auto n = std::strtol(kv.second.c_str(), &end, 10);
      if (kv.second.empty() || *end != '\0' || n < 1 || n > 1000)
        return fail(ex, 400, "invalid_request",
                    "limit: an integer from 1 to 1000");
      q.limit = static_cast<uint32_t>(n);
    } else {
      return fail(ex, 400, "invalid_request",
                  kv.first + ": unknown query parameter");
    }
  }
  auto want = q.limit;
  q.limit = want + 1; // one more tells whether there is a next page
  auto self = shared_from_this();
  ask<std::vector<job_record>>(
      ex,
      [self, ex, want](std::vector<job_record>& jobs) {
        bool more = jobs.size() > want;
        if (more)
          jobs.resize(want);
        self->reply(ex, 200, job_page_json(jobs, more));
      },
      list_atom::value, q);
}

void gateway_impl::cancel(const ex_ptr& ex, const principal& who,
                          const std::string& id) {
  auto reason = parse_reason(ex->req().body(), json_limits_);
  if (!reason)
    return fail(ex, reason.error());
  auto self = shared_from_this();
  // The audit log records who asked (the key's name) and why.
  auto why = "requested with API key '" + who.key_name + "'"
             + (reason->empty() ? std::string{} : ": " + *reason);
  with_job(ex, who, id, [self, ex, id, why](job_record& job) {
    if (is_terminal(job.status)) {
      self->fail(ex, 409, "conflict",
                 "job '" + id + "' is already " + to_string(job.status));
      return;
    }
    self->act_then_show(ex, 202, id, cancel_atom::value, id, why);
  });
}

/// Purges the whole dead-letter queue (every tenant's); `{"purged": n}`.
void gateway_impl::purge_all(const ex_ptr& ex) {
  auto self = shared_from_this();
  ask<uint32_t>(
      ex,
      [self, ex](uint32_t& n) {
        self->reply(ex, 200, "{\"purged\":" + std::to_string(n) + "}");
      },
      purge_atom::value, all_atom::value);
}

void gateway_impl::result(const ex_ptr& ex, const principal& who,
                          const std::string& id) {
  auto self = shared_from_this();
  with_job(ex, who, id, [self, ex, id](job_record& job) {
    if (job.status == job_status::completed) {
      self->reply(ex, 200, job.result.empty() ? "null" : job.result);
      return;
    }
    self->fail(ex, 409, "not_completed",
               "job '" + id + "' is " + to_string(job.status)
                   + "; its result exists once it is completed");
  });
}

void gateway_impl::events(const ex_ptr& ex, const principal& who,
                          const std::string& id, const target& t) {
  // Without `after` or `limit`: the whole log, as before. With either: a
  // page of at most `limit` (default 1000) events after sequence `after`.
  bool paged = false;
  uint64_t after = 0;
  uint32_t want = 1000;
  for (auto& [name, value] : t.query) {
    // Digits only, as Last-Event-ID (parse_event_id); empty is no number.
    bool number = false;
    auto n = parse_event_id(value, number);
    number = number && !value.empty();
    if (name == "after") {
      if (!number)
        return fail(ex, 400, "invalid_request",
                    "after: an event sequence (a non-negative integer)");
      after = n;
    } else if (name == "limit") {
      if (!number || n < 1 || n > 1000)
        return fail(ex, 400, "invalid_request",
                    "limit: an integer from 1 to 1000");
      want = static_cast<uint32_t>(n);
    } else {
      return fail(ex, 400, "invalid_request",
                  name + ": unknown query parameter");
    }
    paged = true;
  }
  auto self = shared_from_this();
  with_job(ex, who, id, [self, ex, id, paged, after, want](job_record&) {
    if (!paged) {
      self->ask<std::vector<job_event>>(
          ex,
          [self, ex, id](std::vector<job_event>& evs) {
            self->reply(ex, 200, events_json(id, evs));
          },
          events_atom::value, id);
      return;
    }
    // One more tells whether there is a next page.
    self->ask<std::vector<job_event>>(
        ex,
        [self, ex, id, want](std::vector<job_event>& evs) {
          bool more = evs.size() > want;
          if (more)
            evs.resize(want);
          self->reply(ex, 200, events_page_json(id, evs, more));
        },
        events_atom::value, id, after, want + 1);
  });
}

} // namespace drover::http::gateway_detail
