// queue/destination_pool.cc: see destination_pool.h.
#include "queue/destination_pool.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "core/ascii.h"

namespace ringrelay::queue {

void destination::resolved(core::mx_result result) noexcept { pool->mx_resolved(*this, std::move(result)); }

destination_pool::destination_pool(const core::config& config, const retry_schedule& schedule, scheduler& queues,
                                   tls_client_policy& tls, core::mx_resolver& resolver, link_factory& links,
                                   pool_owner& owner, const core::time_source& clock)
    : _config(config),
      _schedule(schedule),
      _queues(queues),
      _tls(tls),
      _resolver(resolver),
      _links(links),
      _owner(owner),
      _clock(clock),
      _backoff_ends(static_cast<std::uint64_t>(clock.monotonic_ms())) {
    _client_config.helo_name = config.hostname;
}

destination_pool::~destination_pool() {
    for (auto& [key, d] : _destinations)
        if (d->resolving) _resolver.cancel(d.get());
}

const destination* destination_pool::find(const std::string& key) const noexcept {
    const auto it = _destinations.find(key);
    return it == _destinations.end() ? nullptr : it->second.get();
}

destination& destination_pool::destination_for(const route_key& r) {
    auto& slot = _destinations[r.key];
    if (!slot) {
        slot = std::make_unique<destination>();
        slot->pool = this;
        slot->name = r.name;
        slot->by_mx = r.by_mx;
        slot->tls = r.tls;
        slot->ready = &_queues.queue_for(r.key);
        if (!r.by_mx) {
            slot->targets = {r.hop};
            slot->target_hosts = {r.name};
        }
    }
    return *slot;
}

void destination_pool::submit(delivery_job* job) noexcept {
    destination& d = destination_for(job->route);
    d.ready->push(job);
    dispatch(d);
}

void destination_pool::dispatch(destination& d) noexcept {
    if (_stopping) return;
    const std::int64_t now = _clock.monotonic_ms();
    if (d.by_mx && !d.ready->empty() && (d.targets.empty() || now >= d.resolved_until_ms)) {
        if (!d.resolving) {
            d.resolving = true;
            _resolver.resolve_mx(d.name, &d);  // answers later, on this shard (mx_resolved)
        }
        if (d.targets.empty()) return;
    }
    while (!d.ready->empty()) {
        outbound_link* idle = nullptr;
        std::size_t opening = 0;
        for (outbound_link* c : d.connections) {
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
            idle->assign(d.ready->pop());
            continue;
        }
        // A connection being opened will take the next job; open more only for more jobs.
        if (opening >= d.ready->size()) return;
        if (d.connections.size() >= _config.max_connections_per_destination) return;
        if (now < d.backoff_until_ms) return;
        const std::size_t i = d.next_target % d.targets.size();
        connection_target target{d.targets[i], d.target_hosts[i], d.name, d.by_mx};
        const tls_client_policy::connection_tls tls = _tls.for_connection(d.tls, core::to_string(target.address));
        protocol::client_config config = _client_config;
        config.starttls = tls.starttls;
        std::unique_ptr<outbound_link> made = _links.make(target, config, tls.verify, *this);
        outbound_link* c = made.get();
        c->pool_destination = &d;
        _connections.push_back(std::move(made));
        d.connections.push_back(c);
        c->start();
        if (c->closing()) return;  // could not even create the socket
    }
}

// 1 s, 2 s, 4 s ... after consecutive failures, capped at 60 s and at the first retry
// interval (a destination is never held back longer than its mail would wait anyway).
std::int64_t destination_pool::backoff_ms(std::uint32_t failures) const noexcept {
    const std::int64_t first = _schedule.intervals().front().count();
    const std::int64_t cap = std::max<std::int64_t>(100, std::min<std::int64_t>(60000, first));
    return std::min<std::int64_t>(cap, 1000LL << std::min<std::uint32_t>(failures == 0 ? 0 : failures - 1, 6));
}

void destination_pool::mx_resolved(destination& d, core::mx_result result) noexcept {
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
            d.resolved_until_ms = _clock.monotonic_ms() + 60000;
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

void destination_pool::fail_ready_jobs(destination& d, recipient_status status, const std::string& why,
                                       const char* enhanced) {
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
        _owner.job_finished(job, std::move(outcome), hop, why);
    }
}

// ---- what connections report ------------------------------------------------------------

next_step destination_pool::connection_ready(outbound_link& c) noexcept {
    destination& d = *c.pool_destination;
    if (_stopping || c.messages_sent() >= _config.max_messages_per_connection) return next_step{nullptr, true};
    // The first job goes to the new session whatever state it is in: a greeting refused with
    // QUIT still answers it, with the refusal as the job's outcome.
    if (!d.ready->empty()) return next_step{d.ready->pop(), false};
    return {};
}

next_step destination_pool::job_done(outbound_link& c, delivery_job* job, const protocol::message_outcome& outcome,
                                     const next_hop_ref& hop) noexcept {
    destination& d = *c.pool_destination;
    bool any_accepted = outcome.kind == protocol::outcome_kind::accepted;
    for (const protocol::recipient_outcome& r : outcome.recipients)
        any_accepted = any_accepted || r.kind == protocol::outcome_kind::accepted;
    if (any_accepted) {
        d.connect_failures = 0;  // the next hop works: forget its back-off
        d.backoff_until_ms = 0;
        _backoff_ends.cancel(std::exchange(d.backoff_end, {}));
    }
    _owner.job_finished(job, protocol::message_outcome(outcome), hop, "");
    if (c.messages_sent() >= _config.max_messages_per_connection || _stopping) return next_step{nullptr, true};
    if (!c.closing() && !d.ready->empty() && c.ready_for_job()) return next_step{d.ready->pop(), false};
    return {};
}

void destination_pool::retire(destination& d, outbound_link& c) {
    std::erase(d.connections, &c);
    _graveyard.push_back(&c);
}

void destination_pool::connection_closed(outbound_link& c, const close_report& report) noexcept {
    destination& d = *c.pool_destination;
    if (_stopping) {
        // Jobs still queued stay as they are: the spool has them for the next start.
        retire(d, c);
        return;
    }
    if (report.reason == protocol::close_reason::tls_failed && report.tls_protocol_failure &&
        report.tls_use == protocol::tls_use::when_offered) {
        // Opportunistic TLS whose handshake failed on TLS itself (logged by the connection):
        // this address gets plaintext for a while, starting with a new connection now. No job
        // was on this one (jobs are assigned only after EHLO), so nothing is deferred and
        // nothing counted. A connection merely lost during the handshake (a reset, a timeout:
        // something an attacker on the path can cause) is handled like any lost connection
        // below: no plaintext.
        _tls.mark_broken(report.hop.address);
        retire(d, c);
        dispatch(d);
        return;
    }
    if (!report.before_greeting && report.reason == protocol::close_reason::peer_shutdown) {
        // 421 (RFC 5321 §3.8): the next hop is shedding load. Back off before reconnecting
        // instead of opening a fresh connection for every queued job.
        back_off(d);
    }
    if (report.before_greeting && !d.targets.empty()) {
        d.next_target = (d.next_target + 1) % d.targets.size();
        // The next exchanger (RFC 5321 §5.1) gets its chance before anything is deferred.
        if (d.next_target != 0) {
            retire(d, c);
            dispatch(d);
            return;
        }
    }
    if (report.before_greeting) {
        // Back off the destination: 1 s, 2 s, 4 s ... 60 s. Jobs submitted meanwhile wait
        // and are dispatched when the back-off's timer ends it (run_timers).
        back_off(d);
        // Jobs queued for a destination we cannot reach are deferred now, not held in memory.
        while (!d.ready->empty()) {
            protocol::message_outcome outcome;
            outcome.kind = protocol::outcome_kind::transient_failure;
            _owner.job_finished(d.ready->pop(), std::move(outcome), report.hop, report.why);
        }
    }
    retire(d, c);
}

// ---- timers, shutdown, the turn's end ------------------------------------------------------

void destination_pool::back_off(destination& d) noexcept {
    ++d.connect_failures;
    d.backoff_until_ms = _clock.monotonic_ms() + backoff_ms(d.connect_failures);
    _backoff_ends.cancel(d.backoff_end);
    d.backoff_end = _backoff_ends.add(static_cast<std::uint64_t>(d.backoff_until_ms), &d);
}

void destination_pool::run_timers(std::int64_t now_ms) noexcept {
    destination* d = nullptr;
    while (_backoff_ends.pop(static_cast<std::uint64_t>(std::max<std::int64_t>(now_ms, 0)), d)) {
        d->backoff_end = {};
        // Over, by the clock the caller read, even if the pool's coarser clock has not quite
        // reached backoff_until_ms yet: dispatch() must not find it still running.
        d->backoff_until_ms = 0;
        if (!d->ready->empty()) dispatch(*d);
    }
}

std::int64_t destination_pool::next_backoff_end_ms() const noexcept {
    const std::uint64_t next = _backoff_ends.next_expiry();
    return next == core::timer_wheel<destination*>::never ? no_backoff : static_cast<std::int64_t>(next);
}

void destination_pool::tick(std::int64_t now_ms) noexcept {
    for (auto& [name, d] : _destinations)
        if (!d->ready->empty()) dispatch(*d);
    const std::int64_t idle_ms = static_cast<std::int64_t>(_config.idle_connection_timeout) * 1000;
    const std::int64_t command_ms = static_cast<std::int64_t>(_config.command_timeout) * 1000;
    // A copy: aborting one connection may open another (the next exchanger). Connections are
    // freed only at the turn's end, so every pointer stays valid.
    std::vector<outbound_link*> snapshot;
    snapshot.reserve(_connections.size());
    for (const auto& c : _connections) snapshot.push_back(c.get());
    for (outbound_link* c : snapshot) {
        if (c->closing()) continue;
        const std::int64_t quiet = now_ms - c->last_activity_ms();
        if (c->busy() || !c->connected() || c->quitting()) {
            if (quiet > command_ms) c->abort("timeout waiting for the next hop");
        } else if (quiet > idle_ms) {
            c->finish();
        }
    }
}

void destination_pool::stop(bool force) noexcept {
    _stopping = true;
    std::vector<outbound_link*> snapshot;
    snapshot.reserve(_connections.size());
    for (const auto& c : _connections) snapshot.push_back(c.get());
    for (outbound_link* c : snapshot) {
        if (force) {
            c->abort("relay shutting down");
        } else if (!c->busy()) {
            c->finish();
        }
    }
}

void destination_pool::on_turn_end() noexcept {
    // A connection may be listed more than once; flush() is idempotent. The list may grow
    // while it is walked (a local refusal hands its outcome over from flush()).
    for (std::size_t i = 0; i < _flush.size(); ++i) _flush[i]->flush();
    _flush.clear();
    if (_graveyard.empty()) return;
    std::vector<outbound_link*> keep;
    for (outbound_link* c : _graveyard) {
        if (!c->retirable()) {
            keep.push_back(c);
            continue;
        }
        std::erase_if(_connections, [c](const std::unique_ptr<outbound_link>& p) { return p.get() == c; });
    }
    _graveyard.swap(keep);
}

}  // namespace ringrelay::queue
