// queue/delivery.cc: see delivery.h.
#include "queue/delivery.h"

#include <algorithm>
#include <cstdio>
#include <span>

#include "core/ascii.h"
#include "core/clock.h"
#include "core/invariant.h"
#include "protocol/dsn.h"
#include "queue/outbound.h"

namespace ringrelay::queue {

namespace {

std::string domain_of(std::string_view address) {
    const auto at = address.rfind('@');
    std::string d(at == std::string_view::npos ? std::string_view() : address.substr(at + 1));
    for (char& ch : d) ch = core::ascii_lower(ch);
    return d;
}

// What the connection sends for the job: views into the message and the job's addresses.
protocol::outbound_message outbound_message_of(const stored_message& m, std::span<const std::string> rcpt_to) {
    protocol::outbound_message msg;
    msg.tag = m.queue_id;
    msg.mail_from = m.envelope.mail_from;
    msg.rcpt_to = rcpt_to;
    msg.body = m.body;
    msg.body_type = m.envelope.body == protocol::body_type::eight_bit_mime ? protocol::body_kind::eight_bit_mime
                                                                          : protocol::body_kind::seven_bit;
    msg.utf8 = m.envelope.smtputf8 ? protocol::utf8_envelope::smtputf8 : protocol::utf8_envelope::ascii;
    return msg;
}

}  // namespace

delivery::delivery(core::reactor& r, spool& s, core::log_writer& log, const core::config& config,
                   const retry_schedule& schedule, protocol::session_host& host, unsigned shard_index,
                   const std::atomic<std::uint64_t>& tls_generation)
    : _reactor(r),
      _config(config),
      _schedule(schedule),
      _shard(shard_index),
      _tls(config, tls_generation, core::system_time()),
      _log(log, shard_index),
      _dsns(s, config, host, shard_index, *this),
      _store(s, _log, _dsns, config.hold ? queue_mode::hold : queue_mode::deliver),
      _scheduler(schedule, static_cast<std::uint64_t>(core::unix_us()) * (shard_index + 1) | 1) {
    _client_config.helo_name = config.hostname;

}

delivery::~delivery() {
    for (outbound* c : _connections) delete c;
}

std::int64_t delivery::command_timeout_ms() const noexcept {
    return static_cast<std::int64_t>(_config.command_timeout) * 1000;
}

// ---- recovery -------------------------------------------------------------------------

void delivery::on_record(std::uint64_t segment, const decoded_message& rec) { _store.on_record(segment, rec); }

std::size_t delivery::finish_recovery() {
    const message_store::recovered r = _store.finish_recovery();
    // Scheduled from the first tick, once the shards' mailboxes are connected.
    for (const auto& [at_us, id] : r.due) _scheduler.retry_at(at_us, id);
    return r.unfinished;
}

// ---- new messages ---------------------------------------------------------------------

void delivery::accept(const protocol::envelope& env, std::string_view client, std::string_view message,
                      std::uint64_t segment, std::uint64_t received_us) {
    stored_message* m = _store.add(env, client, message, segment, received_us);
    if (m != nullptr) schedule(*m, core::monotonic_ms());
}

void delivery::dsn_committed(const protocol::envelope& env, std::string_view client, std::string_view body,
                             std::uint64_t segment, std::uint64_t received_us) noexcept {
    accept(env, client, body, segment, received_us);
}

delivery_counters delivery::counters() const noexcept {
    delivery_counters c = _store.counters();
    c.dsns = _dsns.queued();
    return c;
}

// The domain's outbound TLS policy; one that differs from --outbound-tls makes a destination
// of its own (its connections run under another policy).
void delivery::with_tls_policy(route_key& r, std::string_view domain) const {
    r.tls = _config.tls_policy_for(domain);
    if (r.tls != _config.outbound_tls_policy) {
        r.key += "|tls=";
        r.key += core::to_string(r.tls);
    }
}

bool delivery::route_of(std::string_view rcpt, route_key& out) const {
    const std::string domain = domain_of(rcpt);
    const core::config::route* hit = nullptr;
    for (const core::config::route& r : _config.route_table) {
        if (r.domain == domain) {
            hit = &r;
            break;
        }
    }
    if (hit == nullptr) {
        for (const core::config::route& r : _config.route_table) {
            if (r.domain == "*") {
                hit = &r;
                break;
            }
        }
    }
    if (hit == nullptr) {
        // MX delivery (RFC 5321 §5.1). An address without a domain cannot be routed.
        if (domain.empty() || _resolver == nullptr) return false;
        out.key = "mx:" + domain;
        out.name = domain;
        out.by_mx = true;
        with_tls_policy(out, domain);
        return true;
    }
    out.name = core::to_string(hit->next_hop);
    out.key = out.name;
    out.by_mx = false;
    out.hop = hit->next_hop;
    with_tls_policy(out, domain);
    return true;
}

destination& delivery::destination_for(const route_key& r) {
    auto& slot = _destinations[r.key];
    if (!slot) {
        slot = std::make_unique<destination>();
        slot->owner = this;
        slot->name = r.name;
        slot->by_mx = r.by_mx;
        slot->tls = r.tls;
        slot->ready = &_scheduler.queue_for(r.key);
        if (!r.by_mx) {
            slot->targets = {r.hop};
            slot->target_hosts = {r.name};
        }
    }
    return *slot;
}

// Groups the message's pending recipients that are not in flight by destination, one job
// per destination.
void delivery::schedule(stored_message& m, std::int64_t now_ms) {
    if (_stopping) return;
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    std::vector<delivery_job*> jobs;
    route_key r;
    for (std::uint32_t i = 0; i < m.status.size(); ++i) {
        if (final_status(m.status[i]) || m.in_flight[i] != 0) continue;
        if (!route_of(m.envelope.rcpt_to[i], r)) {
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
        job->outbound = outbound_message_of(m, job->rcpt_to);
        // The destination's owner shard runs its connections (docs/ARCHITECTURE.md): one pool, one set
        // of limits and one DNS cache per destination for the whole node.
        const auto owner = static_cast<unsigned>(std::hash<std::string>{}(job->route.key) % _shard_count);
        if (owner == _shard || _outgoing.empty() || _outgoing[owner] == nullptr) {
            enqueue_local(job);
        } else {
            cross_message msg;
            msg.type = cross_message::kind::job;
            msg.job = job;
            send_cross(owner, std::move(msg));
        }
    }
    --m.jobs;
    _store.release_if_done(m);  // the last use of m
}

void delivery::enqueue_local(delivery_job* job) noexcept {
    destination& d = destination_for(job->route);
    d.ready->push(job);
    dispatch(d);
}

void delivery::send_cross(unsigned shard, cross_message&& msg) noexcept {
    auto& pending = _cross_pending[shard];
    if (pending.empty() && _outgoing[shard]->send(_reactor, msg)) return;
    pending.push_back(std::move(msg));  // the ring is full: try again at the end of the turn
}

void delivery::flush_cross() noexcept {
    for (unsigned s = 0; s < _cross_pending.size(); ++s) {
        auto& pending = _cross_pending[s];
        while (!pending.empty() && _outgoing[s]->send(_reactor, pending.front())) pending.pop_front();
    }
}

void delivery::handle(cross_message&& msg) noexcept {
    if (msg.type == cross_message::kind::job) {
        enqueue_local(msg.job);
    } else {
        apply_outcome(msg.job, msg.outcome, msg.hop, msg.why);
    }
}

void delivery::return_job(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
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
    send_cross(job->origin_shard, std::move(msg));
}

void delivery::dispatch(destination& d) noexcept {
    if (_stopping) return;
    const std::int64_t now = core::monotonic_ms();
    if (d.by_mx && !d.ready->empty() && (d.targets.empty() || now >= d.resolved_until_ms)) {
        if (!d.resolving) {
            d.resolving = true;
            _resolver->resolve_mx(d.name, &d);  // answers later, on this shard (mx_resolved)
        }
        if (d.targets.empty()) return;
    }
    while (!d.ready->empty()) {
        outbound* idle = nullptr;
        std::size_t opening = 0;
        for (outbound* c : d.connections) {
            if (c->closing()) continue;
            if (!c->connected()) {
                ++opening;
                continue;
            }
            if (c->ready_for_job()) {
                idle = c;
                break;
            }
        }
        if (idle != nullptr) {
            delivery_job* job = d.ready->pop();
            idle->assign(job);
            continue;
        }
        // A connection being opened will take the next job; open more only for more jobs.
        if (opening >= d.ready->size()) return;
        if (d.connections.size() >= _config.max_connections_per_destination) return;
        if (now < d.backoff_until_ms) return;
        core::tls_verify verify = core::tls_verify::none;
        const protocol::client_config config = connection_config(d, verify);
        auto* c = new outbound(*this, d, config, verify);
        c->slot = _connections.size();
        _connections.push_back(c);
        d.connections.push_back(c);
        c->start();
        if (c->closing()) return;  // could not even create the socket
    }
}

protocol::client_config delivery::connection_config(const destination& d, core::tls_verify& verify) {
    protocol::client_config config = _client_config;
    const std::string address =
        d.targets.empty() ? std::string() : core::to_string(d.targets[d.next_target % d.targets.size()]);
    const tls_client_policy::connection_tls tls = _tls.for_connection(d.tls, address);
    config.starttls = tls.starttls;
    verify = tls.verify;
    return config;
}

void destination::resolved(core::mx_result result) noexcept { owner->mx_resolved(*this, std::move(result)); }

// 1 s, 2 s, 4 s ... after consecutive failures, capped at 60 s and at the first retry
// interval (a destination is never held back longer than its mail would wait anyway).
std::int64_t delivery::destination_backoff_ms(std::uint32_t failures) const noexcept {
    const std::int64_t first = _schedule.intervals().front().count();
    const std::int64_t cap = std::max<std::int64_t>(100, std::min<std::int64_t>(60000, first));
    return std::min<std::int64_t>(cap, 1000LL << std::min<std::uint32_t>(failures == 0 ? 0 : failures - 1, 6));
}

void delivery::mx_resolved(destination& d, core::mx_result result) noexcept {
    d.resolving = false;
    switch (result.status) {
        case core::dns_status::ok: {
            d.targets.clear();
            d.target_hosts.clear();
            // RFC 5321 §5.1: if we are one of the exchangers, only those more preferred than
            // us may be used; if none is, the mail would loop back to us.
            std::uint32_t self_preference = UINT32_MAX;
            for (const core::mx_target& t : result.targets) {
                bool self = core::iequals(t.host, _config.hostname);
                for (const core::endpoint& e : t.addresses)
                    for (const core::endpoint& l : _config.listen_endpoints)
                        self = self || core::to_string(e) == core::to_string(l);
                if (self) self_preference = std::min<std::uint32_t>(self_preference, t.preference);
            }
            for (const core::mx_target& t : result.targets) {
                if (t.preference >= self_preference) continue;
                for (const core::endpoint& e : t.addresses) {
                    d.targets.push_back(e);
                    d.target_hosts.push_back(t.host);
                }
            }
            d.next_target = 0;
            // The resolver caches by TTL; this only bounds how long a connection plan is reused.
            d.resolved_until_ms = core::monotonic_ms() + 60000;
            if (d.targets.empty() && self_preference != UINT32_MAX) {
                fail_ready_jobs(d, recipient_status::bounced, "mail for " + d.name + " loops back to myself", "5.4.6");
                return;
            }
            if (d.targets.empty()) {
                fail_ready_jobs(d, recipient_status::deferred, "no usable mail exchanger address", "4.4.3");
                return;
            }
            dispatch(d);
            return;
        }
        case core::dns_status::null_mx:
            fail_ready_jobs(d, recipient_status::bounced, "the domain accepts no mail (null MX, RFC 7505)", "5.1.10");
            return;
        case core::dns_status::no_such_domain:
            fail_ready_jobs(d, recipient_status::bounced, "the recipient's domain does not exist (NXDOMAIN)", "5.1.2");
            return;
        case core::dns_status::no_address:
            fail_ready_jobs(d, recipient_status::bounced, "the recipient's domain has no mail exchanger or address",
                            "5.4.4");
            return;
        case core::dns_status::temporary:
            fail_ready_jobs(d, recipient_status::deferred,
                            "DNS lookup failed temporarily" + (result.detail.empty() ? std::string() : ": " + result.detail),
                            "4.4.3");
            return;
    }
}

// Every job waiting for `d` ends without an attempt on the wire: bounced or deferred with a
// local reason (DNS).
void delivery::fail_ready_jobs(destination& d, recipient_status status, const std::string& why, const char* enhanced) {
    if (_stopping) return;  // e.g. "resolver stopped": the jobs stay in the spool for the next start
    protocol::outcome_reply reply;
    reply.origin = protocol::reply_origin::local;
    reply.code = status == recipient_status::bounced ? 550 : 451;
    reply.text = std::string(enhanced) + " " + why;
    unsigned cls = 0, subject = 0, detail = 0;
    if (std::sscanf(enhanced, "%u.%u.%u", &cls, &subject, &detail) == 3) {
        reply.enhanced.status_class = static_cast<std::uint8_t>(cls);
        reply.enhanced.subject = static_cast<std::uint16_t>(subject);
        reply.enhanced.detail = static_cast<std::uint16_t>(detail);
    }
    const next_hop_ref hop{d.name, "", ""};
    while (!d.ready->empty()) {
        delivery_job* job = d.ready->pop();
        protocol::message_outcome outcome;
        outcome.kind = status == recipient_status::bounced ? protocol::outcome_kind::permanent_failure
                                                          : protocol::outcome_kind::transient_failure;
        outcome.reply = reply;
        return_job(job, std::move(outcome), hop, why);
    }
}

// ---- outcomes -------------------------------------------------------------------------

void delivery::connection_ready(outbound& c) noexcept {
    destination& d = c.dest();
    if (_stopping || c.messages_sent() >= _config.max_messages_per_connection) {
        c.finish();
        return;
    }
    if (!d.ready->empty()) {
        delivery_job* job = d.ready->pop();
        c.assign(job);
    }
}

void delivery::job_done(outbound& c, delivery_job* job, const protocol::message_outcome& outcome) noexcept {
    bool any_accepted = outcome.kind == protocol::outcome_kind::accepted;
    for (const protocol::recipient_outcome& r : outcome.recipients)
        any_accepted = any_accepted || r.kind == protocol::outcome_kind::accepted;
    if (any_accepted) {
        c.dest().connect_failures = 0;  // the next hop works: forget its back-off
        c.dest().backoff_until_ms = 0;
    }
    return_job(job, protocol::message_outcome(outcome), next_hop_ref{c.target_host(), c.target_address(), c.tls_text()},
               "");
    if (c.messages_sent() >= _config.max_messages_per_connection || _stopping) {
        c.finish();
    } else if (!c.closing()) {
        destination& d = c.dest();
        if (!d.ready->empty() && c.ready_for_job()) {
            delivery_job* next = d.ready->pop();
            c.assign(next);
        }
    }
}

void delivery::apply_outcome(delivery_job* job, const protocol::message_outcome& outcome, const next_hop_ref& remote,
                             const std::string& why) noexcept {
    stored_message& m = *job->message;
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const std::int64_t attempt_ms = core::monotonic_ms() - job->started_ms;
    const char* reason = why.empty() ? nullptr : why.c_str();
    for (std::size_t k = 0; k < job->rcpt_index.size(); ++k) {
        const std::uint32_t i = job->rcpt_index[k];
        m.in_flight[i] = 0;
        const protocol::recipient_outcome* ro = k < outcome.recipients.size() ? &outcome.recipients[k] : nullptr;
        const protocol::outcome_kind kind = ro != nullptr ? ro->kind : outcome.kind;
        const protocol::outcome_reply& reply = ro != nullptr ? ro->reply : outcome.reply;
        const protocol::outcome_reply* reply_ptr = reply.origin == protocol::reply_origin::none ? nullptr : &reply;
        switch (kind) {
            case protocol::outcome_kind::accepted:
                ++m.attempts[i];
                _store.finish(m, i, recipient_status::delivered, outcome_note{remote, &reply, nullptr, now_us, attempt_ms});
                break;
            case protocol::outcome_kind::permanent_failure:
                ++m.attempts[i];
                _store.finish(m, i, recipient_status::bounced, outcome_note{remote, reply_ptr, reason, now_us, attempt_ms});
                break;
            case protocol::outcome_kind::transient_failure:
            case protocol::outcome_kind::protocol_error:
                ++m.attempts[i];
                defer(m, i,
                      outcome_note{remote, reply_ptr,
                                   reason != nullptr ? reason
                                   : kind == protocol::outcome_kind::protocol_error ? "connection lost or protocol error"
                                                                                     : nullptr,
                                   now_us, attempt_ms});
                break;
            case protocol::outcome_kind::not_attempted:
                break;  // rescheduled below without counting an attempt
        }
    }
    --m.jobs;
    const bool requeue = outcome.kind == protocol::outcome_kind::not_attempted;
    delete job;
    if (requeue) {
        schedule(m, core::monotonic_ms());
    } else {
        _store.release_if_done(m);
    }
}

void delivery::connection_closed(outbound& c, bool failed_before_greeting, const std::string& why) noexcept {
    destination& d = c.dest();
    if (_stopping) {
        // Jobs still queued stay as they are: the spool has them for the next start.
        std::erase(d.connections, &c);
        _graveyard.push_back(&c);
        return;
    }
    if (c.tls_failed() && c.tls_protocol_failure() && c.tls_use() == protocol::tls_use::when_offered) {
        // Opportunistic TLS whose handshake failed on TLS itself (logged by the connection):
        // this address gets plaintext for a while, starting with a new connection now. No job
        // was on this one (jobs are assigned only after EHLO), so nothing is deferred and
        // nothing counted. A connection merely lost during the handshake (a reset, a timeout:
        // something an attacker on the path can cause) is handled like any lost connection
        // below: no plaintext.
        _tls.mark_broken(c.target_address());
        std::erase(d.connections, &c);
        _graveyard.push_back(&c);
        dispatch(d);
        return;
    }
    if (!failed_before_greeting && c.why_closed() == protocol::close_reason::peer_shutdown) {
        // 421 (RFC 5321 §3.8): the next hop is shedding load. Back off before reconnecting
        // instead of opening a fresh connection for every queued job.
        ++d.connect_failures;
        const std::int64_t backoff = destination_backoff_ms(d.connect_failures);
        d.backoff_until_ms = core::monotonic_ms() + backoff;
    }
    if (failed_before_greeting && !d.targets.empty()) {
        d.next_target = (d.next_target + 1) % d.targets.size();
        // The next exchanger (RFC 5321 §5.1) gets its chance before anything is deferred.
        if (d.next_target != 0 && !_stopping) {
            std::erase(d.connections, &c);
            _graveyard.push_back(&c);
            dispatch(d);
            return;
        }
    }
    if (failed_before_greeting) {
        ++d.connect_failures;
        // Back off the destination: 1 s, 2 s, 4 s ... 60 s. Jobs waiting for it stay queued
        // and are picked up by tick() once the back-off ends.
        const std::int64_t backoff = destination_backoff_ms(d.connect_failures);
        d.backoff_until_ms = core::monotonic_ms() + backoff;
        // Jobs queued for a destination we cannot reach are deferred now, not held in memory.
        while (!d.ready->empty()) {
            delivery_job* job = d.ready->pop();
            protocol::message_outcome outcome;
            outcome.kind = protocol::outcome_kind::transient_failure;
            return_job(job, std::move(outcome), next_hop_ref{c.target_host(), c.target_address(), ""}, why);
        }
    }
    std::erase(d.connections, &c);
    _graveyard.push_back(&c);
}

// A failed attempt (or none possible): the recipient waits for its next attempt by the retry
// schedule, or expires once the message is --max-age old.
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

// ---- timers and shutdown ---------------------------------------------------------------

void delivery::tick(std::int64_t now_ms) noexcept {
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    _tls.tick();
    for (core::mailbox<cross_message>* box : _incoming) box->drain();
    _dsns.retry();
    for (std::uint64_t id = 0; _scheduler.pop_due(now_us, id);) {
        if (stored_message* m = _store.find(id)) schedule(*m, now_ms);
    }
    for (auto& [name, d] : _destinations)
        if (!d->ready->empty()) dispatch(*d);
    const std::int64_t idle_ms = static_cast<std::int64_t>(_config.idle_connection_timeout) * 1000;
    // A copy: aborting one connection may open another (the next exchanger).
    const std::vector<outbound*> snapshot = _connections;
    for (outbound* c : snapshot) {
        if (c->closing()) continue;
        const std::int64_t quiet = now_ms - c->last_activity_ms();
        if (c->busy() || !c->connected() || c->quitting()) {
            if (quiet > command_timeout_ms()) c->abort("timeout waiting for the next hop");
        } else if (quiet > idle_ms) {
            c->finish();
        }
    }
}

void delivery::stop(bool force) noexcept {
    _stopping = true;
    const std::vector<outbound*> snapshot = _connections;
    for (outbound* c : snapshot) {
        if (force) {
            c->abort("relay shutting down");
        } else if (!c->busy()) {
            c->finish();
        }
    }
}

void delivery::on_turn_end() noexcept {
    flush_cross();
    for (std::size_t i = 0; i < _flush.size(); ++i) _flush[i]->flush();
    _flush.clear();
    if (_graveyard.empty()) return;
    std::vector<outbound*> keep;
    for (outbound* c : _graveyard) {
        if (!c->retirable()) {
            keep.push_back(c);
            continue;
        }
        std::erase(_connections, c);
        delete c;
    }
    _graveyard.swap(keep);
}

}  // namespace ringrelay::queue
