// queue/delivery.cc: see delivery.h.
#include "queue/delivery.h"

#include <algorithm>
#include <span>
#include <utility>
#include <vector>

#include "core/ascii.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/log.h"
#include "protocol/dsn.h"

namespace ringrelay::queue {

namespace {

// The domain of a sender address ("" for the null sender or an address without one).
std::string_view sender_domain(std::string_view mail_from) noexcept {
    const std::size_t at = mail_from.rfind('@');
    return at == std::string_view::npos ? std::string_view() : mail_from.substr(at + 1);
}

// What the connection sends for the job: views into the message and the job's addresses.
protocol::outbound_message outbound_message_of(const stored_message& m, std::span<const std::string> rcpt_to) {
    protocol::outbound_message msg;
    msg.tag = m.queue_id;
    msg.mail_from = m.envelope.mail_from;
    msg.rcpt_to = rcpt_to;
    msg.body_type = m.envelope.body == protocol::body_type::eight_bit_mime ? protocol::body_kind::eight_bit_mime
                                                                          : protocol::body_kind::seven_bit;
    msg.utf8 = m.envelope.smtputf8 ? protocol::utf8_envelope::smtputf8 : protocol::utf8_envelope::ascii;
    return msg;
}

}  // namespace

delivery::delivery(core::reactor& r, spool& s, core::log_writer& log, const core::config& config,
                   const retry_schedule& schedule, protocol::session_host& host, unsigned shard_index,
                   const core::stream_services& streams, core::mx_resolver& resolver,
                   const std::atomic<std::uint64_t>& tls_generation, const shard_links& links,
                   const protocol::bounce_rules& bounce_rules, const shaping_table& shaping,
                   const egress_table& egress, suppression_list* suppressions)
    : _shard(shard_index),
      _flush_recovered(config.drain),
      _shards(links.shards()),
      _spool_dir(s.directory()),
      _router(config),
      _suppressions(suppressions),
      _shaping_log(log),
      _egress(egress),
      _shaping(shaping),
      _tls(config, tls_generation, core::system_time()),
      _log(log, shard_index, bounce_rules),
      _dsns(s, config, host, shard_index, *this),
      _store(s, _log, _dsns, config.hold ? queue_mode::hold : queue_mode::deliver,
             config.body_cache_bytes / (config.shards == 0 ? 1 : config.shards), this),
      _compactor(s, _store),
      _scheduler(schedule, static_cast<std::uint64_t>(core::unix_us()) * (shard_index + 1) | 1),
      _connections(streams, _tls),
      _pool(config, schedule, _scheduler, _tls, resolver, _connections, *this, core::system_time(), shaping, &_holds),
      _hop(r, links, shard_index),
      _retry_alarm(*this, r, core::alarm_clock::realtime),
      _backoff_alarm(*this, r, core::alarm_clock::monotonic),
      _egress_chooser(egress),
      _warmup(shard_index, _shards),
      _rules(shaping.current()),
      _rules_generation(shaping.generation()),
      _warmup_held(&_scheduler.queue_for("warmup:held")) {
    // Both were checked by load_config and the relay (an unparsable one never gets here).
    if (config.delay_warning != "0")
        if (auto d = core::parse_duration(config.delay_warning); d && d->count() > 0)
            _delay_warning_us = static_cast<std::uint64_t>(d->count()) * 1000;
    if (auto d = core::parse_duration(config.max_age); d) _max_age_us = static_cast<std::uint64_t>(d->count()) * 1000;
}

// ---- messages in ------------------------------------------------------------------------

void delivery::on_record(std::uint64_t segment, const decoded_message& rec) { _store.on_record(segment, rec); }

std::size_t delivery::finish_recovery() {
    const message_store::recovered r = _store.finish_recovery();
    for (const auto& [at_us, id] : r.due) _scheduler.retry_at(_flush_recovered ? 0 : at_us, id);
    arm_alarms();  // submitted with the loop's first turn, once the mailboxes are connected
    return r.unfinished;
}

void delivery::accept(const protocol::envelope& env, std::string_view client, std::string_view message,
                      const record_location& where, std::uint64_t received_us, std::string_view campaign) {
    stored_message* m = _store.add(env, client, message, where, received_us, campaign);
    if (m != nullptr) schedule(*m, core::monotonic_ms());
}

void delivery::dsn_committed(const protocol::envelope& env, std::string_view client, std::string_view body,
                             const record_location& where, std::uint64_t received_us) noexcept {
    accept(env, client, body, where, received_us);
}

// The body read back for a DSN (message_store::release_if_done) is there, or is not (the DSN
// then goes without the original); either way the message is released now. (An attempt's body
// is read by the connection that sends it: queue/outbound.h.)
void delivery::body_ready(stored_message& m, const std::string& error) noexcept {
    if (!error.empty())
        core::diag("shard " + std::to_string(_shard) + ": " + protocol::format_queue_id(m.queue_id) + ": " + error +
                   "; its DSN goes without the original message");
    _store.release_if_done(m);
}

void delivery::fill_snapshot(shard_snapshot& out) const {
    out.sites.clear();
    out.rest = site_depth{};
    _pool.site_depths(out.sites);
    keep_deepest(out.sites, out.rest, max_site_series);
    out.outcomes = _outcomes;  // element by element: the strings keep their buffers
    out.bounced_by_class = _bounced_by_class;
}

delivery_counters delivery::counters() const noexcept {
    delivery_counters c = _store.counters();
    c.dsns = _dsns.queued();
    return c;
}

// ---- jobs out ---------------------------------------------------------------------------

void delivery::schedule(stored_message& m, std::int64_t now_ms) {
    if (_stopping) return;
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    // The message's pool (null: the system-chosen address); each job's source is chosen below.
    const egress_pool* pool = _egress.pool_for(sender_domain(m.envelope.mail_from), m.envelope.auth_user);
    // A source with a warm-up may have a schedule for the site's provider: the choice waits
    // until the site is known (choose_source()).
    const bool choose_later = pool != nullptr && pool_has_warmup(_egress, *pool, *_rules);
    std::vector<delivery_job*> jobs;
    route_key r;
    // The operator's suspensions of a domain or a tenant (queue/operator_holds.h).
    const std::string tenant = _holds.empty() ? std::string() : core::ascii_lowered(tenant_of(m.envelope));
    for (std::uint32_t i = 0; i < m.status.size(); ++i) {
        if (final_status(m.status[i]) || m.in_flight[i] != 0) continue;
        if (!_holds.empty()) {
            if (const std::uint64_t until = _holds.recipient_until_us(domain_of(m.envelope.rcpt_to[i]), tenant, now_us);
                until != 0) {
                const next_hop_ref none;
                _store.defer(m, i, until, outcome_note{none, nullptr, "suspended by the operator (POST /api/v1/suspend)", now_us});
                _scheduler.retry_at(until, m.queue_id);
                continue;
            }
        }
        if (!_router.route_of(m.envelope.rcpt_to[i], r)) {
            const next_hop_ref none;
            defer(m, i, outcome_note{none, nullptr, "no route to the recipient's domain", now_us});
            continue;
        }
        delivery_job* job = nullptr;
        for (delivery_job* j : jobs)
            if (j->route.key == r.key) job = j;
        if (job == nullptr) {
            job = new delivery_job();
            job->message = &m;
            job->origin_shard = _shard;
            job->route = r;
            job->started_ms = now_ms;
            job->expires_us = _max_age_us == 0 ? 0 : m.arrival_us + _max_age_us;
            job->arrival_us = m.arrival_us;
            job->warn_us = _delay_warning_us == 0 || m.delay_warned ? 0 : m.arrival_us + _delay_warning_us;
            // This shard's chooser: the source must be known before the site's owner is (the
            // source is part of the site's key), and per-shard state needs no lock. Over a
            // pool's total weight of jobs made here, each source gets exactly its weight.
            if (choose_later) {
                job->choose_from = pool;
            } else if (pool != nullptr) {
                job->egress = &_egress.sources()[_egress_chooser.next(*pool)];
            }
            // Its tenant and campaign limits' keys (queue/shaping_rules.h): both compare without case.
            job->tenant = core::ascii_lowered(tenant_of(m.envelope));
            if (m.has_campaign) job->campaign = core::ascii_lowered(_store.campaign_of(m));
            jobs.push_back(job);
        }
        job->rcpt_index.push_back(i);
        job->rcpt_to.push_back(m.envelope.rcpt_to[i]);
        m.in_flight[i] = 1;
    }
    // A guard job count: a dispatch may finish a job at once (a local refusal) and must not
    // finish, and free, the message while this function still uses it.
    ++m.jobs;
    m.jobs += static_cast<std::uint32_t>(jobs.size());
    for (delivery_job* job : jobs) {
        // No body yet: the connection that takes the job gets it (from the cache if it is
        // still there, else from the spool), so jobs waiting for a connection cost no body memory.
        job->cached = m.body;
        job->where = m.where;
        job->message_size = m.size;
        job->spool_dir = &_spool_dir;
        job->outbound = outbound_message_of(m, job->rcpt_to);
        // A static route's site is known now: its owner shard runs its connections, one set of
        // limits for the whole node. A domain's owner looks up its MX plan (one DNS cache per
        // domain for the node) and sends the job on to its site's owner (to_site()).
        if (!job->route.by_mx) destination_pool::set_route_site(*job);
        if (!job->route.by_mx && job->choose_from != nullptr) {
            choose_source(job);  // a route has no provider: its site is known now
            continue;
        }
        const unsigned owner = _hop.owner_of(job->route.by_mx ? job->route.key : job->site_key);
        if (_hop.local(owner)) {
            _pool.submit(job);
        } else {
            cross_message msg;
            msg.type = cross_message::kind::job;
            msg.job = job;
            _hop.send(owner, std::move(msg));
        }
    }
    --m.jobs;
    forget_if_done(m);
    _store.release_if_done(m);  // the last use of m
}

void delivery::handle(cross_message&& msg) noexcept {
    if (msg.type == cross_message::kind::job) {
        _pool.submit(msg.job);
    } else if (msg.type == cross_message::kind::site_job) {
        _pool.submit_site(msg.job);
    } else if (msg.type == cross_message::kind::choose) {
        choose_source(msg.job);
    } else if (msg.type == cross_message::kind::automate) {
        _pool.apply_automation(msg.hop.site, *msg.rule, msg.why, nullptr);
    } else if (msg.type == cross_message::kind::admin) {
        msg.call->report = administer(*msg.call->request);
        const unsigned to = msg.call->from;
        cross_message back;
        back.type = cross_message::kind::admin_done;
        back.call = std::move(msg.call);
        _hop.send(to, std::move(back));
    } else if (msg.type == cross_message::kind::admin_done) {
        admin_answered(msg.call->ticket, std::move(msg.call->report));
    } else if (msg.type == cross_message::kind::held) {
        held_at_site(*msg.message, msg.rcpt_index, msg.why);
    } else {
        apply_outcome(msg.job, msg.outcome, msg.hop, msg.why);
    }
}

// The site is named in `why`; the notice needs no more of the hop.
void delivery::job_held(delivery_job* job, const next_hop_ref& /*hop*/, const std::string& why) noexcept {
    if (job->origin_shard == _shard) {
        held_at_site(*job->message, job->rcpt_index, why);
        return;
    }
    // Copies: the job stays at the site, on this shard, and the origin must not read it.
    cross_message msg;
    msg.type = cross_message::kind::held;
    msg.message = job->message;
    msg.rcpt_index = job->rcpt_index;
    msg.why = why;
    _hop.send(job->origin_shard, std::move(msg));
}

void delivery::held_at_site(stored_message& m, std::span<const std::uint32_t> rcpt_index,
                            const std::string& why) noexcept {
    // The message has a job out (this notice comes before its outcome, on the same ring), so m
    // is alive; a notice sent meanwhile (another job's deferral) makes this one moot.
    if (_delay_warning_us == 0 || m.delay_warned) return;
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    std::vector<failed_recipient> delayed;
    for (std::uint32_t i : rcpt_index) {
        if (final_status(m.status[i])) continue;
        failed_recipient f;
        f.rcpt_index = i;
        f.status = recipient_status::deferred;
        f.time_us = now_us;  // no next hop was reached: no remote
        f.diagnostic = why;
        f.enhanced = "4.0.0";
        delayed.push_back(std::move(f));
    }
    const std::string_view original = m.body ? m.body->text : std::string_view();
    if (!delayed.empty() && _dsns.report_delay(m, delayed, original, m.arrival_us + _max_age_us))
        _store.delay_warned(m);
}

void delivery::job_finished(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                            const std::string& why) noexcept {
    if (job->origin_shard == _shard) {
        apply_outcome(job, outcome, hop, why);
        return;
    }
    cross_message msg;
    msg.type = cross_message::kind::outcome;
    msg.job = job;
    msg.outcome = std::move(outcome);
    msg.hop = hop;
    msg.why = why;
    _hop.send(job->origin_shard, std::move(msg));
}

void delivery::to_site(delivery_job* job) noexcept {
    if (job->choose_from != nullptr && job->egress == nullptr) {
        // Its site is known: back to its origin for its source (the origin's share of the day).
        if (job->origin_shard == _shard) {
            choose_source(job);
            return;
        }
        cross_message msg;
        msg.type = cross_message::kind::choose;
        msg.job = job;
        _hop.send(job->origin_shard, std::move(msg));
        return;
    }
    const unsigned owner = _hop.owner_of(job->site_key);
    if (_hop.local(owner)) {
        _pool.submit_site(job);
        return;
    }
    cross_message msg;
    msg.type = cross_message::kind::site_job;
    msg.job = job;
    _hop.send(owner, std::move(msg));
}

void delivery::shaping_changed(const site& s, const shaping_change& change) noexcept {
    if (!_shaping_log.enabled()) return;
    // The controller's times are the pool's monotonic clock; the record says wall-clock time.
    const std::int64_t unix_now = core::unix_us();
    const std::int64_t mono_now_us = core::monotonic_ms() * 1000;
    const std::int64_t until = change.until_us == 0 ? 0 : unix_now + (static_cast<std::int64_t>(change.until_us) - mono_now_us);
    append_shaping_record(_shaping_log.line_buffer(), s.name, s.egress != nullptr ? s.egress->name : "default", change,
                          unix_now, until);
}

void delivery::automation_fired(const site& s, const automation_rule& rule, const std::string& subject) noexcept {
    if (_shards <= 1) return;
    // One copy for every shard (the table it came from may be replaced meanwhile).
    const auto copy = std::make_shared<const automation_rule>(rule);
    for (unsigned k = 0; k < _shards; ++k) {
        if (k == _shard) continue;
        cross_message msg;
        msg.type = cross_message::kind::automate;
        msg.hop.site = s.name;
        msg.rule = copy;
        msg.why = subject;
        _hop.send(k, std::move(msg));
    }
}

// ---- warm-up ------------------------------------------------------------------------------

void delivery::choose_source(delivery_job* job) noexcept {
    const std::int64_t now_us = core::unix_us();
    const std::int64_t day = unix_day(now_us);
    _used_up.clear();
    const std::optional<std::uint32_t> source = choose_warm_source(_egress_chooser, _warmup, _egress, *job->choose_from,
                                                                   *_rules, job->site_provider, day, _used_up);
    if (_shaping_log.enabled())
        for (const warmup_used_up& u : _used_up) append_warmup_record(_shaping_log.line_buffer(), u, _shard, now_us);
    if (!source) {
        // Every source of the pool has used up today's allowance (this shard's share): the job
        // waits for the next day, no retry used; --max-age still ends it (tick_warmup_held()).
        _warmup_held->push(job);
        _warmup_held_day = day;
        return;
    }
    destination_pool::set_source(*job, _egress.sources()[*source]);
    to_site(job);
}

void delivery::release_warmup_held() noexcept {
    _taken.clear();
    _warmup_held->take_if([](const delivery_job&) { return true; }, _taken);
    std::vector<delivery_job*> jobs;
    jobs.swap(_taken);  // apply_outcome() may hold a job again (a message made anew)
    for (delivery_job* job : jobs) {
        protocol::message_outcome outcome;
        outcome.kind = protocol::outcome_kind::not_attempted;
        apply_outcome(job, outcome, next_hop_ref{}, "");
    }
}

void delivery::tick_warmup_held(std::int64_t now_ms) noexcept {
    if (_shaping.generation() != _rules_generation) {
        _rules_generation = _shaping.generation();
        _rules = _shaping.current();
        if (!_stopping) release_warmup_held();  // the schedules may allow them now
    }
    if (_warmup_held->empty() || _stopping) return;
    const std::int64_t now_us = core::unix_us();
    if (unix_day(now_us) != _warmup_held_day) {
        release_warmup_held();  // a new day, a new allowance
        return;
    }
    if (now_ms < _next_held_sweep_ms) return;
    _next_held_sweep_ms = now_ms + expiry_sweep_ms;
    _taken.clear();
    const auto unix_now = static_cast<std::uint64_t>(now_us);
    // Past --delay-warning, as mail waiting at its site: the sender's delay notice, once.
    _warmup_held->for_each([&](delivery_job& j) {
        if (j.warn_us == 0 || j.warn_us > unix_now) return;
        j.warn_us = 0;
        held_at_site(*j.message, j.rcpt_index,
                     "waiting at " + j.site + " for an egress source's warm-up allowance (every source of its pool used today's)");
    });
    _warmup_held->take_if([unix_now](const delivery_job& j) { return j.expires_us != 0 && j.expires_us <= unix_now; },
                          _taken);
    if (_taken.empty()) return;
    std::vector<delivery_job*> jobs;
    jobs.swap(_taken);
    const std::string why = "held past --max-age: every egress source of its pool had used up its warm-up allowance";
    const protocol::outcome_reply reply = local_reply(451, "4.4.7", why);
    for (delivery_job* job : jobs) {
        protocol::message_outcome outcome;
        outcome.kind = protocol::outcome_kind::transient_failure;
        outcome.reply = reply;
        apply_outcome(job, outcome, next_hop_ref{"", "", "", job->site}, why);
    }
}

// ---- outcomes back ----------------------------------------------------------------------

void delivery::apply_outcome(delivery_job* job, const protocol::message_outcome& outcome, const next_hop_ref& hop,
                             const std::string& why) noexcept {
    stored_message& m = *job->message;
    // The records say which egress source the job had, whether or not it got as far as a site.
    next_hop_ref remote = hop;
    if (job->egress != nullptr) remote.egress_source = job->egress->name;
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    // From scheduling the attempt (routing, connecting, the transaction) to its outcome.
    const std::int64_t attempt_ms = core::monotonic_ms() - job->started_ms;
    const char* reason = why.empty() ? nullptr : why.c_str();
    std::vector<failed_recipient> delayed;  // for a --delay-warning notice
    provider_outcomes& counted =
        outcomes_for(_outcomes, job->site_provider, job->egress != nullptr ? job->egress->name : "default");
    for (std::size_t k = 0; k < job->rcpt_index.size(); ++k) {
        const std::uint32_t i = job->rcpt_index[k];
        m.in_flight[i] = 0;
        const protocol::recipient_outcome* ro = k < outcome.recipients.size() ? &outcome.recipients[k] : nullptr;
        const protocol::outcome_kind kind = ro != nullptr ? ro->kind : outcome.kind;
        const protocol::outcome_reply& reply = ro != nullptr ? ro->reply : outcome.reply;
        const protocol::outcome_reply* reply_ptr = reply.origin == protocol::reply_origin::none ? nullptr : &reply;
        if (kind != protocol::outcome_kind::not_attempted)
            remember(m, i, remote, reply_ptr != nullptr ? reply_line(*reply_ptr) : why);
        switch (kind) {
            case protocol::outcome_kind::accepted:
                ++m.attempts[i];
                _store.finish(m, i, recipient_status::delivered, outcome_note{remote, &reply, nullptr, now_us, attempt_ms});
                ++counted.delivered;
                break;
            case protocol::outcome_kind::permanent_failure: {
                ++m.attempts[i];
                // Classified here, once, whether the log is on or not: the Bounce record's
                // bounce_class and the suppression list read this one verdict.
                outcome_note note{remote, reply_ptr, reason, now_us, attempt_ms};
                const protocol::bounce_verdict verdict = _log.classify(note);
                note.verdict = &verdict;
                _store.finish(m, i, recipient_status::bounced, note);
                bounced(m, i, verdict, now_us);
                ++counted.bounced;
                ++_bounced_by_class[static_cast<std::size_t>(verdict.cls)];
                break;
            }
            case protocol::outcome_kind::transient_failure:
            case protocol::outcome_kind::protocol_error: {
                ++m.attempts[i];
                const char* why_deferred = reason != nullptr ? reason
                                           : kind == protocol::outcome_kind::protocol_error
                                               ? "connection lost or protocol error"
                                               : nullptr;
                defer(m, i, outcome_note{remote, reply_ptr, why_deferred, now_us, attempt_ms});
                ++counted.deferred;
                if (m.status[i] == recipient_status::expired) ++counted.expired;
                if (m.status[i] == recipient_status::deferred && _delay_warning_us != 0 && !m.delay_warned) {
                    failed_recipient f;
                    f.rcpt_index = i;
                    f.status = recipient_status::deferred;
                    f.remote = remote.name;
                    f.time_us = now_us;
                    if (reply_ptr != nullptr) {
                        f.diagnostic = reply_line(*reply_ptr);
                        f.from_peer = reply_ptr->origin == protocol::reply_origin::peer;
                        if (reply_ptr->enhanced.present() && reply_ptr->enhanced.status_class == 4)
                            f.enhanced = std::to_string(reply_ptr->enhanced.status_class) + "." +
                                         std::to_string(reply_ptr->enhanced.subject) + "." +
                                         std::to_string(reply_ptr->enhanced.detail);
                    } else {
                        f.diagnostic = why_deferred != nullptr ? why_deferred : "delivery deferred";
                    }
                    if (f.enhanced.empty()) f.enhanced = "4.0.0";
                    delayed.push_back(std::move(f));
                }
                break;
            }
            case protocol::outcome_kind::not_attempted:
                break;  // rescheduled below without counting an attempt
        }
    }
    // --delay-warning: the first deferral after the message has waited that long sends its
    // sender one notice (never for null-sender mail), journaled so a restart sends no other.
    if (!delayed.empty() && now_us >= m.arrival_us + _delay_warning_us &&
        _dsns.report_delay(m, delayed, job->body ? job->body->text : std::string_view(), m.arrival_us + _max_age_us))
        _store.delay_warned(m);
    --m.jobs;
    const bool requeue = outcome.kind == protocol::outcome_kind::not_attempted;
    delete job;
    forget_if_done(m);
    if (requeue) {
        schedule(m, core::monotonic_ms());
    } else {
        _store.release_if_done(m);
    }
}

// The recipient waits for its next attempt by the retry schedule, or expires once the message
// is --max-age old.
void delivery::defer(stored_message& m, std::uint32_t i, const outcome_note& note) {
    const retry_plan plan = _scheduler.plan_retry(m.attempts[i], m.arrival_us, note.now_us);
    if (plan.expired) {
        outcome_note expiry = note;
        if (expiry.why == nullptr) expiry.why = "message expired (--max-age)";
        _store.finish(m, i, recipient_status::expired, expiry);
        return;
    }
    _store.defer(m, i, plan.at_us, note);
    _scheduler.retry_at(plan.at_us, m.queue_id);
}

void delivery::bounced(const stored_message& m, std::uint32_t i, const protocol::bounce_verdict& verdict,
                       std::uint64_t now_us) noexcept {
    if (_suppressions != nullptr)
        (void)_suppressions->on_permanent_failure(m.envelope, m.envelope.rcpt_to[i], verdict, now_us);
}

// ---- timers and shutdown ------------------------------------------------------------------

void delivery::tick(std::int64_t now_ms) noexcept {
    _tls.tick();
    _hop.drain();
    _dsns.retry();
    _pool.tick(now_ms);
    tick_warmup_held(now_ms);
    _compactor.tick(now_ms);
}

void delivery::on_retry_alarm() noexcept {
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const std::int64_t now_ms = core::monotonic_ms();
    for (std::uint64_t id = 0; _scheduler.pop_due(now_us, id);) {
        if (stored_message* m = _store.find(id)) schedule(*m, now_ms);
    }
}

// The pool's clock is the coarse monotonic one; the alarm fired by the precise one, which may
// be ahead of it by a scheduler tick: the back-offs are popped by the precise reading.
void delivery::on_backoff_alarm() noexcept { _pool.run_timers(core::monotonic_ns() / 1'000'000); }

// Each wheel's next expiry is a lower bound (core/timer_wheel.h): a wake-up there may only
// cascade timers closer, and this arms the next one. An alarm already armed for the same time
// or earlier costs nothing here.
void delivery::arm_alarms() noexcept {
    if (_stopping) return;
    if (const std::uint64_t at_us = _scheduler.next_retry_us(); at_us != scheduler::no_retry)
        _retry_alarm.arm_at(at_us >= static_cast<std::uint64_t>(INT64_MAX / 1000) ? INT64_MAX : static_cast<std::int64_t>(at_us) * 1000);
    if (const std::int64_t at_ms = _pool.next_backoff_end_ms(); at_ms != destination_pool::no_backoff)
        _backoff_alarm.arm_at(at_ms >= INT64_MAX / 1'000'000 ? INT64_MAX : at_ms * 1'000'000);
}

void delivery::stop(bool force) noexcept {
    _stopping = true;
    _compactor.stop();
    _pool.stop(force);
}

void delivery::on_turn_end() noexcept {
    _hop.flush();
    _pool.on_turn_end();
    arm_alarms();
}

// ---- the queue control API (issue 18) --------------------------------------------------------

namespace {

bool recipient_in_domain(std::string_view rcpt, std::string_view domain) {
    const std::size_t at = rcpt.rfind('@');
    return at != std::string_view::npos && core::iequals(rcpt.substr(at + 1), domain);
}

std::string_view status_name(recipient_status s) noexcept {
    switch (s) {
    case recipient_status::pending: return "pending";
    case recipient_status::delivered: return "delivered";
    case recipient_status::bounced: return "bounced";
    case recipient_status::deferred: return "deferred";
    case recipient_status::expired: return "expired";
    }
    return "pending";
}

// A recipient that waits at its message's shard for a retry (not final, not on its way).
bool waiting_here(const stored_message& m, std::uint32_t i) noexcept {
    return m.status[i] == recipient_status::deferred && m.in_flight[i] == 0;
}

}  // namespace

void delivery::administer_all(std::shared_ptr<const admin_request> request,
                              std::function<void(admin_report&&)> done) noexcept {
    const std::uint64_t ticket = ++_next_ticket;
    admin_ticket& t = _tickets[ticket];
    t.request = request;
    t.done = std::move(done);
    t.waiting = 1;  // this shard's, below
    for (unsigned k = 0; k < _shards; ++k) {
        if (_hop.local(k)) continue;
        auto call = std::make_unique<admin_call>();
        call->request = request;
        call->ticket = ticket;
        call->from = _shard;
        cross_message msg;
        msg.type = cross_message::kind::admin;
        msg.call = std::move(call);
        ++t.waiting;
        _hop.send(k, std::move(msg));
    }
    admin_answered(ticket, administer(*request));
}

void delivery::admin_answered(std::uint64_t ticket, admin_report&& report) noexcept {
    const auto it = _tickets.find(ticket);
    if (it == _tickets.end()) return;
    merge(it->second.report, std::move(report));
    if (--it->second.waiting > 0) return;
    std::function<void(admin_report&&)> done = std::move(it->second.done);
    admin_report merged = std::move(it->second.report);
    _tickets.erase(it);
    done(std::move(merged));
}

admin_report delivery::administer(const admin_request& request) noexcept {
    admin_report out;
    switch (request.action) {
    case admin_action::queue: report_queue(out); break;
    case admin_action::message: report_message(request.queue_id, out); break;
    case admin_action::suspend: suspend(request, out); break;
    case admin_action::resume: resume(request, out); break;
    case admin_action::flush: flush(request, out); break;
    case admin_action::bounce: bounce(request, out); break;
    }
    return out;
}

void delivery::report_queue(admin_report& out) const {
    const std::int64_t now_ms = core::monotonic_ms();
    const auto now_us = static_cast<std::uint64_t>(now_ms) * 1000;  // the pool's clock
    const auto wall_us = static_cast<std::uint64_t>(core::unix_us());  // arrivals' clock, for the ages
    // Owner side: the sites this shard owns. A job's message is its origin's, but arrival_us is
    // fixed before any job of it is made (read-only here, like the envelope the connection sends).
    admin_report rows;  // one per site key and per (message, site): merged by name at the end
    _pool.for_each_site([&](const site& s) {
        site_row& r = rows.sites.emplace_back();
        r.site = s.name;
        r.owned = true;
        auto count_job = [&r, wall_us](const delivery_job& j) {
            ++r.queued;
            ++r.ages[age_bucket(j.message->arrival_us, wall_us)];
            if (r.oldest_us == 0 || j.message->arrival_us < r.oldest_us) r.oldest_us = j.message->arrival_us;
        };
        s.ready->for_each(count_job);
        for (const auto& [tenant, h] : s.tenants)
            for (const delivery_job* j : h.held) count_job(*j);
        for (const outbound_link* c : s.connections) {
            if (c->closing()) continue;
            ++r.connections;
            if (c->busy()) ++r.in_flight;
        }
        if (_holds.site_until_ms(s.name, s.limits.provider, now_ms) != 0 || s.controller->suspended(now_us)) {
            r.state = site_state::suspended;
        } else if (s.backoff_until_ms > now_ms) {
            r.state = site_state::backing_off;
        }
        r.connection_limit = s.controller->connections();
        r.rate_milli = s.controller->rate_milli();
    });
    // Origin side: this shard's deferred messages, by the site of their last attempt (else the
    // recipient's domain), once per message and site.
    _store.for_each([&](const stored_message& m) {
        const std::size_t first = rows.sites.size();
        const auto memo = _memos.find(m.queue_id);
        for (std::uint32_t i = 0; i < m.status.size(); ++i) {
            if (!waiting_here(m, i)) continue;
            std::string name;
            if (memo != _memos.end() && i < memo->second.size() && !memo->second[i].site.empty()) {
                name = memo->second[i].site;
            } else {
                name = core::ascii_lowered(domain_of(m.envelope.rcpt_to[i]));
            }
            if (std::any_of(rows.sites.begin() + static_cast<std::ptrdiff_t>(first), rows.sites.end(),
                            [&](const site_row& r) { return r.site == name; }))
                continue;
            site_row& r = rows.sites.emplace_back();
            r.site = std::move(name);
            r.deferred = 1;
            r.oldest_us = m.arrival_us;
            r.next_attempt_us = m.next_attempt_us;
        }
    });
    merge(out, std::move(rows));
}

void delivery::report_message(std::uint64_t queue_id, admin_report& out) {
    const stored_message* m = _store.find(queue_id);
    if (m == nullptr) return;
    message_view& v = out.message.emplace();
    v.queue_id = m->queue_id;
    v.shard = _shard;
    v.sender = m->envelope.mail_from;
    v.client = m->client;
    v.size = m->size;
    v.arrival_us = m->arrival_us;
    const auto memo = _memos.find(m->queue_id);
    for (std::uint32_t i = 0; i < m->status.size(); ++i) {
        recipient_view& r = v.recipients.emplace_back();
        r.address = m->envelope.rcpt_to[i];
        r.state = m->in_flight[i] != 0 ? "in flight" : status_name(m->status[i]);
        r.attempts = m->attempts[i];
        if (memo != _memos.end() && i < memo->second.size()) {
            r.last_reply = memo->second[i].reply;
            r.site = memo->second[i].site;
        }
        if (r.last_reply.empty())
            for (const failed_recipient& f : m->failures)
                if (f.rcpt_index == i) r.last_reply = f.diagnostic;
        if (waiting_here(*m, i)) v.next_attempt_us = m->next_attempt_us;
    }
}

void delivery::suspend(const admin_request& request, admin_report& out) noexcept {
    const std::int64_t now_ms = core::monotonic_ms();
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    _holds.add(operator_holds::hold{request.selector, request.value, now_us + request.duration_us,
                                    now_ms + static_cast<std::int64_t>(request.duration_us / 1000)});
    if (request.selector == admin_selector::site || request.selector == admin_selector::provider) {
        // The sites' dispatch holds their jobs from now on (destination_pool::held_by_operator).
        _pool.for_each_site([&](const site& s) {
            if (_holds.site_until_ms(s.name, s.limits.provider, now_ms) != 0) ++out.sites_reached;
        });
        return;
    }
    // A domain's or a tenant's jobs waiting at this shard's sites go back to their messages'
    // shards, which defer them until the end (schedule()).
    std::vector<delivery_job*> jobs;
    const std::string& value = request.value;
    if (request.selector == admin_selector::domain) {
        _pool.take_waiting_if(
            [&](const delivery_job& j) {
                return std::any_of(j.rcpt_to.begin(), j.rcpt_to.end(),
                                   [&](const std::string& r) { return recipient_in_domain(r, value); });
            },
            jobs);
    } else {
        _pool.take_waiting_if([&](const delivery_job& j) { return j.tenant == value; }, jobs);
    }
    out.messages += jobs.size();
    _pool.return_jobs(jobs, "suspended by the operator (POST /api/v1/suspend)");
}

void delivery::resume(const admin_request& request, admin_report& out) noexcept {
    out.suspensions = _holds.remove(request.selector, request.value);
    if (request.selector == admin_selector::site || request.selector == admin_selector::provider) {
        const std::string& value = request.value;
        const bool by_site = request.selector == admin_selector::site;
        out.sites_reached += _pool.wake_sites([&](const site& s) {
            return by_site ? s.name == value : core::iequals(s.limits.provider, value);
        });
        return;
    }
    // The recipients deferred by the suspension are tried now.
    std::vector<std::uint64_t> ids;
    _store.for_each([&](const stored_message& m) {
        const bool tenant_match = request.selector == admin_selector::tenant &&
                                  core::ascii_lowered(tenant_of(m.envelope)) == request.value;
        for (std::uint32_t i = 0; i < m.status.size(); ++i) {
            if (!waiting_here(m, i)) continue;
            if (tenant_match || (request.selector == admin_selector::domain &&
                                 recipient_in_domain(m.envelope.rcpt_to[i], request.value))) {
                ids.push_back(m.queue_id);
                break;
            }
        }
    });
    const std::int64_t now_ms = core::monotonic_ms();
    for (const std::uint64_t id : ids)
        if (stored_message* m = _store.find(id)) {
            ++out.messages;
            schedule(*m, now_ms);
        }
}

void delivery::flush(const admin_request& request, admin_report& out) noexcept {
    std::vector<std::uint64_t> ids;
    _store.for_each([&](const stored_message& m) {
        std::uint64_t n = 0;
        for (std::uint32_t i = 0; i < m.status.size(); ++i)
            if (waiting_here(m, i) && (request.selector == admin_selector::all ||
                                       recipient_in_domain(m.envelope.rcpt_to[i], request.value)))
                ++n;
        if (n == 0) return;
        ids.push_back(m.queue_id);
        out.recipients += n;
    });
    const std::int64_t now_ms = core::monotonic_ms();
    for (const std::uint64_t id : ids)
        if (stored_message* m = _store.find(id)) {
            ++out.messages;
            schedule(*m, now_ms);  // its retry timer finds nothing left to do when it fires
        }
}

void delivery::bounce(const admin_request& request, admin_report& out) noexcept {
    std::vector<std::uint64_t> ids;
    _store.for_each([&](const stored_message& m) {
        if (m.unfinished == 0) return;
        const bool match = request.selector == admin_selector::domain ||
                           (request.selector == admin_selector::sender && core::iequals(m.envelope.mail_from, request.value)) ||
                           (request.selector == admin_selector::queue_id && m.queue_id == request.queue_id);
        if (match) ids.push_back(m.queue_id);
    });
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const protocol::outcome_reply reply =
        local_reply(550, "5.0.0", "administrative bounce (POST /api/v1/bounce): " + request.reason);
    const next_hop_ref none;
    for (const std::uint64_t id : ids) {
        stored_message* m = _store.find(id);
        if (m == nullptr) continue;
        std::uint64_t n = 0;
        for (std::uint32_t i = 0; i < m->status.size(); ++i) {
            if (final_status(m->status[i])) continue;
            if (request.selector == admin_selector::domain && !recipient_in_domain(m->envelope.rcpt_to[i], request.value))
                continue;
            if (m->in_flight[i] != 0) {
                ++out.in_flight;  // at a site or on a connection: its attempt decides
                continue;
            }
            _store.finish(*m, i, recipient_status::bounced, outcome_note{none, &reply, nullptr, now_us});
            ++n;
        }
        if (n == 0) continue;
        ++out.messages;
        out.recipients += n;
        out.queue_ids.push_back(protocol::format_queue_id(id));
        forget_if_done(*m);
        _store.release_if_done(*m);  // the DSN; may free m
    }
}

void delivery::remember(const stored_message& m, std::uint32_t i, const next_hop_ref& hop, const std::string& reply) {
    std::vector<recipient_memo>& memo = _memos[m.queue_id];
    if (memo.size() < m.status.size()) memo.resize(m.status.size());
    if (!hop.site.empty()) memo[i].site = hop.site;
    if (!reply.empty()) memo[i].reply = reply;
}

void delivery::forget_if_done(const stored_message& m) noexcept {
    if (m.unfinished == 0) _memos.erase(m.queue_id);
}

}  // namespace ringrelay::queue
