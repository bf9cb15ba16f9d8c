// queue/destination_pool.cc: see destination_pool.h.
#include "queue/destination_pool.h"

#include <algorithm>
#include <cstdio>
#include <span>
#include <utility>

#include "core/ascii.h"
#include "core/log.h"
#include "queue/router.h"
#include "queue/site_name.h"

namespace ringrelay::queue {

namespace {

// "|tls=P" of a route key, or "".
std::string tls_suffix_of(const std::string& key) {
    const std::size_t at = key.find("|tls=");
    return at == std::string::npos ? std::string() : key.substr(at);
}

// The same addresses, in any order.
bool same_address_set(const std::vector<core::endpoint>& a, const std::vector<core::endpoint>& b) {
    if (a.size() != b.size()) return false;
    std::vector<std::string> x, y;
    x.reserve(a.size());
    y.reserve(b.size());
    for (const core::endpoint& e : a) x.push_back(core::to_string(e));
    for (const core::endpoint& e : b) y.push_back(core::to_string(e));
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    return x == y;
}

// "|src=NAME" of a job's egress source, or "" (the system-chosen address).
std::string source_suffix(const delivery_job& job) {
    return job.egress == nullptr ? std::string() : "|src=" + job.egress->name;
}

// max_recipients_per_transaction (issue 17): the job's outcome as the origin reads it, one per
// recipient of the job: those of its earlier transactions (job.batched), then the last
// transaction's (the outcome's own, in the order of outbound.rcpt_to), then, for recipients of
// no transaction yet, `rest`'s kind with the outcome's reply.
protocol::message_outcome whole_outcome(delivery_job& job, protocol::message_outcome&& last,
                                        protocol::outcome_kind rest) {
    if (job.batched.empty()) return std::move(last);
    protocol::message_outcome whole;
    whole.tag = last.tag;
    whole.kind = last.kind;
    whole.reply = last.reply;
    whole.recipients = std::move(job.batched);
    job.batched.clear();
    const std::size_t sent = last.kind == protocol::outcome_kind::not_attempted ? 0 : job.outbound.rcpt_to.size();
    for (std::size_t k = job.batch_first; k < job.rcpt_to.size(); ++k) {
        const std::size_t at = k - job.batch_first;
        if (at < sent && at < last.recipients.size()) {
            whole.recipients.push_back(std::move(last.recipients[at]));
            continue;
        }
        protocol::recipient_outcome r;
        r.kind = at < sent ? last.kind : rest;
        r.reply = last.reply;
        whole.recipients.push_back(std::move(r));
    }
    return whole;
}

}  // namespace

protocol::outcome_reply local_reply(std::uint16_t code, const char* enhanced, const std::string& why) {
    protocol::outcome_reply reply;
    reply.origin = protocol::reply_origin::local;
    reply.code = code;
    reply.text = std::string(enhanced) + " " + why;
    unsigned cls = 0, subject = 0, detail = 0;
    if (std::sscanf(enhanced, "%u.%u.%u", &cls, &subject, &detail) == 3) {
        reply.enhanced.status_class = static_cast<std::uint8_t>(cls);
        reply.enhanced.subject = static_cast<std::uint16_t>(subject);
        reply.enhanced.detail = static_cast<std::uint16_t>(detail);
    }
    return reply;
}

void destination::resolved(core::mx_result result) noexcept { pool->mx_resolved(*this, std::move(result)); }

destination_pool::destination_pool(const core::config& config, const retry_schedule& schedule, scheduler& queues,
                                   tls_client_policy& tls, core::mx_resolver& resolver, link_factory& links,
                                   pool_owner& owner, const core::time_source& clock, const shaping_table& shaping,
                                   const operator_holds* holds)
    : _config(config),
      _schedule(schedule),
      _queues(queues),
      _tls(tls),
      _resolver(resolver),
      _links(links),
      _owner(owner),
      _clock(clock),
      _shaping(shaping),
      _holds(holds),
      _rules(shaping.current()),
      _rules_generation(shaping.generation()),
      _wakes(static_cast<std::uint64_t>(clock.monotonic_ms())) {
    _client_config.helo_name = config.hostname;
}

destination_pool::~destination_pool() {
    for (auto& [key, d] : _destinations)
        if (d->resolving) _resolver.cancel(d.get());
    // Held jobs go back to their ready queue, whose scheduler frees what is left there.
    for (auto& [key, s] : _sites)
        s->for_each_hold([&](site::key_hold& h) {
            for (delivery_job* job : h.held) s->ready->push(job);
        });
}

const destination* destination_pool::find(const std::string& key) const noexcept {
    const auto it = _destinations.find(key);
    return it == _destinations.end() ? nullptr : it->second.get();
}

const site* destination_pool::find_site(const std::string& key) const noexcept {
    const auto it = _sites.find(key);
    return it == _sites.end() ? nullptr : it->second.get();
}

void destination_pool::site_depths(std::vector<site_depth>& out) const {
    for (const auto& [key, s] : _sites) {
        site_depth d;
        d.site = s->name;
        const auto older = [&d](const delivery_job& j) {
            if (j.arrival_us != 0 && (d.oldest_arrival_us == 0 || j.arrival_us < d.oldest_arrival_us))
                d.oldest_arrival_us = j.arrival_us;
        };
        if (s->ready != nullptr && !s->ready->empty()) {
            d.messages += s->ready->size();
            older(*s->ready->front());
        }
        // Held by a tenant's or a campaign's limit: waiting at the site too.
        std::as_const(*s).for_each_hold([&](const site::key_hold& h) {
            d.messages += h.held.size();
            if (!h.held.empty()) older(*h.held.front());
        });
        out.push_back(std::move(d));
    }
}

// ---- destinations: MX plans -------------------------------------------------------------

void destination_pool::set_route_site(delivery_job& job) {
    // A route or smarthost is a site of its own, named HOST:PORT (route.name, numeric); it has
    // the default rule (several domains may share the route, so no domain rule applies).
    job.site = normalize_host(job.route.name);
    job.site_key = job.site + tls_suffix_of(job.route.key) + source_suffix(job);
    job.site_rule_domain.clear();
    job.site_targets = {job.route.hop};
    job.site_hosts = {job.route.name};
}

void destination_pool::set_source(delivery_job& job, const egress_source& source) {
    job.egress = &source;
    job.site_key += source_suffix(job);
}

destination& destination_pool::destination_for(const route_key& r) {
    auto& slot = _destinations[r.key];
    if (!slot) {
        slot = std::make_unique<destination>();
        slot->pool = this;
        slot->name = r.name;
        slot->tls = r.tls;
        slot->tls_suffix = tls_suffix_of(r.key);
        slot->ready = &_queues.queue_for(r.key);
    }
    return *slot;
}

void destination_pool::submit(delivery_job* job) noexcept {
    if (!job->route.by_mx) {
        set_route_site(*job);
        submit_site(job);
        return;
    }
    destination& d = destination_for(job->route);
    d.last_used_ms = _clock.monotonic_ms();
    d.ready->push(job);
    dispatch(d);
}

void destination_pool::dispatch(destination& d) noexcept {
    if (_stopping || d.ready->empty()) return;
    const std::int64_t now = _clock.monotonic_ms();
    if (d.targets.empty() || now >= d.resolved_until_ms || d.rules_generation != _rules_generation) {
        if (!d.resolving) {
            d.resolving = true;
            _resolver.resolve_mx(d.name, &d);  // answers later, on this shard (mx_resolved)
        }
        if (d.targets.empty() || d.rules_generation != _rules_generation) return;
    }
    while (!d.ready->empty()) {
        delivery_job* job = d.ready->pop();
        job->site = d.site;
        job->site_key = d.site_key + source_suffix(*job);  // each (source, site) its own
        job->site_rule_domain = d.rule_domain;
        job->site_provider = d.provider;
        job->site_targets = d.targets;
        job->site_hosts = d.target_hosts;
        _owner.to_site(job);  // may come back here (submit_site) when this shard owns the site
    }
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
            // The site: the exchangers' names (MX rollup); a domain with a rule of its own keeps
            // its own site (its limits are not those of the others sharing the exchangers).
            d.site = site_name_of_mx(d.target_hosts);
            d.rules_generation = _rules_generation;
            const std::string domain = normalize_host(d.name);
            d.rule_domain = _rules->find_domain(domain) != nullptr ? domain : std::string();
            d.provider = _rules->resolve(d.rule_domain, d.target_hosts).provider;
            d.site_key = d.site + (d.rule_domain.empty() ? std::string() : "|domain=" + d.rule_domain) + d.tls_suffix;
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
    const protocol::outcome_reply reply =
        local_reply(status == recipient_status::bounced ? 550 : 451, enhanced, why);
    const next_hop_ref hop{d.name, "", "", ""};
    while (!d.ready->empty()) {
        delivery_job* job = d.ready->pop();
        protocol::message_outcome outcome;
        outcome.kind = status == recipient_status::bounced ? protocol::outcome_kind::permanent_failure
                                                          : protocol::outcome_kind::transient_failure;
        outcome.reply = reply;
        _owner.job_finished(job, std::move(outcome), hop, why);
    }
}

template <typename Pred>
void destination_pool::take_held_if(site& s, Pred pred, std::vector<delivery_job*>& out) {
    s.for_each_hold([&](site::key_hold& h) {
        std::deque<delivery_job*> kept;
        for (delivery_job* job : h.held) {
            if (pred(*job)) {
                out.push_back(job);
            } else {
                kept.push_back(job);
            }
        }
        h.held.swap(kept);
    });
}

void destination_pool::expire_waiting(site& s, std::uint64_t now_unix_us) {
    _expired.clear();
    const auto past = [now_unix_us](const delivery_job& j) { return j.expires_us != 0 && j.expires_us <= now_unix_us; };
    s.ready->take_if(past, _expired);
    take_held_if(s, past, _expired);
    if (_expired.empty()) return;
    const std::string why =
        "held at the site past --max-age (shaping: its message rate, its tenant's or campaign's, or a suspension)";
    const protocol::outcome_reply reply = local_reply(451, "4.4.7", why);
    const next_hop_ref hop{"", "", "", s.name};
    for (delivery_job* job : _expired) {
        protocol::message_outcome outcome;
        outcome.kind = protocol::outcome_kind::transient_failure;
        outcome.reply = reply;
        finish_job(job, std::move(outcome), hop, why);
    }
    _expired.clear();
}

void destination_pool::warn_waiting(site& s, std::uint64_t now_unix_us) {
    _expired.clear();  // reused: here the jobs stay in the queue
    const auto due = [&](delivery_job& j) {
        if (j.warn_us == 0 || j.warn_us > now_unix_us) return;
        j.warn_us = 0;
        _expired.push_back(&j);
    };
    s.ready->for_each(due);
    s.for_each_hold([&](site::key_hold& h) {
        for (delivery_job* j : h.held) due(*j);  // held by their tenant's or campaign's limit
    });
    if (_expired.empty()) return;
    const std::string why =
        "waiting at " + s.name + " for its shaping limits (message rate, the tenant's or campaign's, or a suspension)";
    const next_hop_ref hop{"", "", "", s.name};
    for (delivery_job* job : _expired) _owner.job_held(job, hop, why);
    _expired.clear();
}

// ---- sites: limits and connections ------------------------------------------------------

resolved_shaping destination_pool::limits_of(const site& s) const {
    if (!s.by_mx) return _rules->resolve("", std::span<const std::string>());
    return _rules->resolve(s.rule_domain, s.target_hosts);
}

site& destination_pool::site_for(const delivery_job& job) {
    auto& slot = _sites[job.site_key];
    if (!slot) {
        slot = std::make_unique<site>();
        slot->name = job.site;
        slot->key = job.site_key;
        slot->rule_domain = job.site_rule_domain;
        slot->tls = job.route.tls;
        slot->by_mx = job.route.by_mx;
        slot->egress = job.egress;
        slot->targets = job.site_targets;
        slot->target_hosts = job.site_hosts;
        slot->ready = &_queues.queue_for("site:" + job.site_key);
        slot->limits = limits_of(*slot);
        slot->controller.emplace(slot->limits, now_us());
        slot->last_used_ms = _clock.monotonic_ms();
    } else if (!job.site_targets.empty() && !same_address_set(job.site_targets, slot->targets)) {
        // A newer plan for the same exchangers (their addresses changed). Another order of the
        // same addresses (another domain's shuffle) keeps the plan and its place: starting
        // again at the first would try an address that just failed again and again.
        slot->targets = job.site_targets;
        slot->target_hosts = job.site_hosts;
        slot->next_target = 0;
    }
    return *slot;
}

void destination_pool::submit_site(delivery_job* job) noexcept {
    site& s = site_for(*job);
    // The site's owner drops the plan's copy (the site has its own).
    job->site_targets.clear();
    job->site_hosts.clear();
    s.last_used_ms = _clock.monotonic_ms();
    s.ready->push(job);
    dispatch(s);
}

std::uint32_t destination_pool::established(const site& s) noexcept {
    std::uint32_t n = 0;
    for (const outbound_link* c : s.connections) n += c->connected() && !c->closing() ? 1 : 0;
    return n;
}

bool destination_pool::automate(site& s, std::uint16_t code, std::string_view text) noexcept {
    if (_rules->automation.empty()) return false;
    automation_subject(code, text, _subject);
    const automation_rule* rule = _rules->match_automation(s.limits.provider, _subject);
    if (rule == nullptr) return false;
    log_change(s, s.controller->automate(*rule, _subject, now_us()));
    // The receiver said it of the site (or provider), not of this one split of it.
    apply_automation(s.name, *rule, _subject, &s);
    _owner.automation_fired(s, *rule, _subject);
    return true;
}

void destination_pool::apply_automation(std::string_view site_name, const automation_rule& rule,
                                        std::string_view subject, const site* except) noexcept {
    const std::uint64_t now_us = this->now_us();
    for (auto& [key, other] : _sites) {
        if (other.get() == except) continue;
        const bool reached = other->name == site_name || (!rule.provider.empty() && other->limits.provider == rule.provider);
        if (!reached) continue;
        log_change(*other, other->controller->automate(rule, subject, now_us));
        dispatch(*other);  // a suspension's or throttle's end wakes it
    }
}

bool destination_pool::held_by_operator(site& s, std::int64_t now_ms) noexcept {
    if (_holds == nullptr || _holds->empty()) return false;
    const std::int64_t until = _holds->site_until_ms(s.name, s.limits.provider, now_ms);
    if (until == 0) return false;
    wake_at(s, until + coarse_slack_ms);
    return true;
}

bool destination_pool::job_held_by_operator(const delivery_job& job) const noexcept {
    if (_holds == nullptr || _holds->empty()) return false;
    const auto now_us = static_cast<std::uint64_t>(_clock.unix_us());
    for (const std::string& rcpt : job.rcpt_to) {
        const std::size_t at = rcpt.rfind('@');
        const std::string domain = core::ascii_lowered(at == std::string::npos ? std::string_view() : std::string_view(rcpt).substr(at + 1));
        if (_holds->recipient_until_us(domain, job.tenant, now_us) != 0) return true;
    }
    return false;
}

void destination_pool::take_waiting_if(const std::function<bool(const delivery_job&)>& pred,
                                       std::vector<delivery_job*>& out) {
    for (auto& [key, s] : _sites) {
        s->ready->take_if(pred, out);
        take_held_if(*s, pred, out);
    }
}

void destination_pool::return_jobs(std::vector<delivery_job*>& jobs, const std::string& why) noexcept {
    for (delivery_job* job : jobs) {
        protocol::message_outcome none;
        none.kind = protocol::outcome_kind::not_attempted;
        _owner.job_finished(job, std::move(none), next_hop_ref{"", "", "", job->site}, why);
    }
    jobs.clear();
}

std::size_t destination_pool::wake_sites(const std::function<bool(const site&)>& pred) noexcept {
    std::size_t n = 0;
    for (auto& [key, s] : _sites) {
        if (!pred(*s)) continue;
        ++n;
        dispatch(*s);
    }
    return n;
}

std::uint32_t destination_pool::alive(const site& s) noexcept {
    std::uint32_t n = 0;
    for (const outbound_link* c : s.connections) n += c->closing() ? 0 : 1;
    return n;
}

void destination_pool::log_change(const site& s, const std::optional<shaping_change>& change) noexcept {
    if (change) _owner.shaping_changed(s, *change);
}

std::int64_t destination_pool::wait_until_ms(std::uint64_t wait_us) const noexcept {
    return _clock.monotonic_ms() + static_cast<std::int64_t>((wait_us + 999) / 1000) + coarse_slack_ms;
}

void destination_pool::wake_at(site& s, std::int64_t at_ms) noexcept {
    if (s.wake_ms != 0 && s.wake_ms <= at_ms) return;  // armed earlier already: it re-arms then
    _wakes.cancel(s.wake);
    s.wake = _wakes.add(static_cast<std::uint64_t>(std::max<std::int64_t>(at_ms, 0)), &s);
    s.wake_ms = at_ms;
}

void destination_pool::dispatch(site& s) noexcept {
    if (_stopping) return;
    const std::int64_t now = _clock.monotonic_ms();
    const std::uint64_t now_us = static_cast<std::uint64_t>(now) * 1000;
    throttle_controller& ctl = *s.controller;
    log_change(s, ctl.advance(now_us));
    if (const std::uint64_t next = ctl.next_event_us(); next != UINT64_MAX && next > now_us)
        wake_at(s, wait_until_ms(next - now_us));
    if (has_holds(s)) release_held(s, now_us);
    if (s.ready->empty()) return;
    if (held_by_operator(s, now)) return;
    if (ctl.suspended(now_us)) {
        wake_at(s, wait_until_ms(ctl.message_wait_us(now_us)));
        return;
    }
    while (!s.ready->empty()) {
        if (job_held_by_operator(*s.ready->front())) {
            _returned.push_back(s.ready->pop());
            continue;
        }
        // A job whose tenant or campaign has no token steps aside (issue 17): no connection is
        // opened for it.
        if (const std::optional<keyed_limit> which = holding_limit(s, *s.ready->front(), now_us)) {
            hold(s, s.ready->pop(), *which, now_us);
            continue;
        }
        outbound_link* idle = nullptr;
        std::size_t opening = 0;
        std::uint32_t open = 0;
        for (outbound_link* c : s.connections) {
            if (c->closing()) continue;
            ++open;
            if (!c->connected()) {
                ++opening;
                continue;
            }
            if (idle == nullptr && c->ready_for_job()) idle = c;
        }
        if (idle != nullptr && _leases != nullptr && _leases->over_share(s.key, open, s.limits.connection_limit)) {
            idle->finish();  // beyond the node's leases or fallback share (issue 19): QUIT; its end dispatches
            return;
        }
        if (idle != nullptr) {
            const next_step next = next_job(s, *idle);
            if (next.job == nullptr) return;  // the rate holds it back: the site wakes for its token
            idle->assign(next.job);
            continue;
        }
        // A connection being opened will take the next job; open more only for more jobs (that
        // their tenants' and campaigns' tokens let go).
        if (opening >= s.ready->size()) return;
        if (has_holds(s) && keys_let_go(s, opening + 1, now_us) <= opening) return;
        if (now < s.backoff_until_ms) {
            wake_at(s, s.backoff_until_ms);
            return;
        }
        // Only the message rate holds the jobs back (each connection being opened will take a
        // token when it is up): a new connection would wait as well.
        if (ctl.message_tokens(now_us) <= opening) {
            if (opening == 0) {
                (void)ctl.take_message(now_us);  // fails: marks the interval rate-limited (growth)
                wake_at(s, wait_until_ms(ctl.message_wait_us(now_us)));
            }
            return;
        }
        if (!ctl.may_open_connection(open, now_us)) {
            // At the allowed count, a connection's end or a job's end dispatches again; else the
            // connection rate: the site wakes when it allows one.
            if (open < ctl.connections()) wake_at(s, wait_until_ms(ctl.connection_wait_us(now_us)));
            return;
        }
        // Shared across the nodes (issue 19): the lease's answer dispatches again (lease_answer).
        if (_leases != nullptr) {
            const lease_verdict v = _leases->may_open(s.key, open, s.limits.connection_limit, now);
            if (v == lease_verdict::retry_later) wake_at(s, now + lease_retry_ms);
            if (v != lease_verdict::open) return;
        }
        if (s.targets.empty()) return;
        if (open_connection(s).closing()) return;  // could not even create the socket
    }
}

outbound_link& destination_pool::open_connection(site& s) noexcept {
    std::size_t i = s.next_target % s.targets.size();
    if (s.egress != nullptr) {
        // A source binds one address: the next target of its family (IPv4 or IPv6). With none,
        // the bind fails and the connection reports a failure on our side.
        for (std::size_t k = 0; k < s.targets.size(); ++k) {
            const std::size_t j = (s.next_target + k) % s.targets.size();
            if (s.targets[j].family() == s.egress->address.family()) {
                i = j;
                s.next_target = j;
                break;
            }
        }
    }
    connection_target target{s.targets[i], s.target_hosts[i], s.name, s.by_mx, s.name, s.egress};
    const tls_client_policy::connection_tls tls = _tls.for_connection(s.tls, core::to_string(target.address));
    protocol::client_config config = _client_config;
    config.starttls = tls.starttls;
    if (s.egress != nullptr) config.helo_name = s.egress->ehlo;  // --hostname unless the source names another
    std::unique_ptr<outbound_link> made = _links.make(target, config, tls.verify, *this);
    outbound_link* c = made.get();
    c->pool_site = &s;
    c->pool_opened_ms = _clock.monotonic_ms();
    _connections.push_back(std::move(made));
    s.connections.push_back(c);
    c->start();
    return *c;  // freed at a turn's end at the earliest
}

next_step destination_pool::next_job(site& s, outbound_link& c) noexcept {
    const std::int64_t now = _clock.monotonic_ms();
    const std::uint64_t now_us = static_cast<std::uint64_t>(now) * 1000;
    // Jobs whose tenant or campaign has no token step aside, and jobs an operator holds (POST
    // /api/v1/suspend) go back to their shard; the next ones go on.
    for (;;) {
        step_aside_held(s, now_us);
        if (s.ready->empty() || !job_held_by_operator(*s.ready->front())) break;
        _returned.push_back(s.ready->pop());
    }
    if (s.ready->empty()) return {};
    if (held_by_operator(s, now)) return {};
    if (!s.controller->take_message(now_us)) {
        wake_at(s, wait_until_ms(s.controller->message_wait_us(now_us)));
        return {};
    }
    delivery_job* job = s.ready->pop();
    take_tokens(s, *job, now_us);
    job->attempt_ms = now;
    begin_transaction(s, *job);
    (void)c;
    return next_step{job, false};
}

void destination_pool::begin_transaction(const site& s, delivery_job& job) noexcept {
    const std::span<const std::string> all(job.rcpt_to);
    const std::size_t left = all.size() - std::min(job.batch_first, all.size());
    const std::size_t n = s.limits.max_recipients_per_transaction
                              ? std::min<std::size_t>(left, *s.limits.max_recipients_per_transaction)
                              : left;
    job.outbound.rcpt_to = all.subspan(all.size() - left, n);
}

void destination_pool::finish_job(delivery_job* job, protocol::message_outcome&& outcome, const next_hop_ref& hop,
                                  const std::string& why) noexcept {
    const protocol::outcome_kind rest = outcome.kind;
    _owner.job_finished(job, whole_outcome(*job, std::move(outcome), rest), hop, why);
}

// 1 s, 2 s, 4 s ... after consecutive failures, capped at 60 s and at the first retry
// interval (a site is never held back longer than its mail would wait anyway).
std::int64_t destination_pool::backoff_ms(std::uint32_t failures) const noexcept {
    const std::int64_t first = _schedule.intervals().front().count();
    const std::int64_t cap = std::max<std::int64_t>(100, std::min<std::int64_t>(60000, first));
    return std::min<std::int64_t>(cap, 1000LL << std::min<std::uint32_t>(failures == 0 ? 0 : failures - 1, 6));
}

// ---- what connections report ------------------------------------------------------------

next_step destination_pool::connection_ready(outbound_link& c) noexcept {
    site& s = *c.pool_site;
    if (_stopping || c.messages_sent() >= s.limits.max_deliveries_per_connection) return next_step{nullptr, true};
    if (s.ready->empty()) return {};
    // A session ending with QUIT before it could carry mail (never a refused greeting: that
    // closes before the greeting, queue/outbound.cc) still answers the first job, with the
    // refusal as its outcome, whatever the rate: no message goes out on it.
    if (!c.ready_for_job()) {
        delivery_job* job = s.ready->pop();
        job->attempt_ms = _clock.monotonic_ms();
        begin_transaction(s, *job);
        return next_step{job, false};
    }
    return next_job(s, c);
}

next_step destination_pool::job_done(outbound_link& c, delivery_job* job, const protocol::message_outcome& outcome,
                                     const next_hop_ref& hop) noexcept {
    site& s = *c.pool_site;
    const std::uint64_t now_us = this->now_us();
    s.last_used_ms = _clock.monotonic_ms();
    const std::uint64_t started_us = static_cast<std::uint64_t>(std::max<std::int64_t>(job->attempt_ms, 0)) * 1000;
    bool any_accepted = outcome.kind == protocol::outcome_kind::accepted;
    // The peer's first negative reply (4xx or 5xx): the controller tells throttles from the rest.
    const auto failed = [](protocol::outcome_kind k) {
        return k == protocol::outcome_kind::transient_failure || k == protocol::outcome_kind::permanent_failure;
    };
    const protocol::outcome_reply* failure = nullptr;
    if (failed(outcome.kind) && outcome.reply.origin == protocol::reply_origin::peer) failure = &outcome.reply;
    for (const protocol::recipient_outcome& r : outcome.recipients) {
        any_accepted = any_accepted || r.kind == protocol::outcome_kind::accepted;
        if (failure == nullptr && failed(r.kind) && r.reply.origin == protocol::reply_origin::peer) failure = &r.reply;
    }
    if (any_accepted) {
        // The next hop works: the next failure starts the back-off from 1 s again. A back-off,
        // suspension or wait already running is not cut short (its timer runs out).
        s.connect_failures = 0;
        s.throttled_refusals = 0;
        s.local_failures = 0;
        log_change(s, s.controller->delivered(started_us, now_us));
    } else if (failure != nullptr) {
        const std::uint32_t open = established(s) - (c.connected() && !c.closing() ? 1 : 0);
        log_change(s, s.controller->failed(attempt_stage::command, failure->code, failure->text, started_us, now_us, open));
    }
    // Automation hears every negative reply of the peer's, accepted recipients or not (a
    // provider's [TSS04] may come to the second RCPT after a 550 to the first), until a rule fires.
    if (failure != nullptr && !automate(s, failure->code, failure->text))
        for (const protocol::recipient_outcome& r : outcome.recipients)
            if (failed(r.kind) && r.reply.origin == protocol::reply_origin::peer && &r.reply != failure &&
                automate(s, r.reply.code, r.reply.text))
                break;
    next_hop_ref with_site = hop;
    with_site.site = s.name;
    const std::size_t after = job->batch_first + job->outbound.rcpt_to.size();
    if (outcome.kind != protocol::outcome_kind::not_attempted && after < job->rcpt_to.size()) {
        // max_recipients_per_transaction: this transaction's outcomes are kept, and the job goes
        // back in front of the ready queue for its next one (on this connection if it goes on).
        for (std::size_t k = 0; k < job->outbound.rcpt_to.size(); ++k) {
            protocol::recipient_outcome r;
            if (k < outcome.recipients.size()) {
                r = outcome.recipients[k];
            } else {
                r.kind = outcome.kind;
                r.reply = outcome.reply;
            }
            job->batched.push_back(std::move(r));
        }
        job->batch_first = after;
        requeue_transaction(s, job, with_site);
    } else if (outcome.kind == protocol::outcome_kind::not_attempted && !job->batched.empty()) {
        requeue_transaction(s, job, with_site);  // lost before its next transaction began
    } else {
        finish_job(job, protocol::message_outcome(outcome), with_site, "");
    }
    if (c.messages_sent() >= s.limits.max_deliveries_per_connection || _stopping) return next_step{nullptr, true};
    // Shared limits (issue 19): a connection beyond the node's leases (or its fallback share) ends.
    if (_leases != nullptr && _leases->over_share(s.key, alive(s), s.limits.connection_limit))
        return next_step{nullptr, true};
    if (!c.closing() && c.ready_for_job()) return next_job(s, c);
    return {};
}

bool destination_pool::key_allows(site& s, keyed_limit which, const std::string& key, std::uint64_t now_us) noexcept {
    if (key.empty()) return true;
    site::key_holds& holds = s.holds_of(which);
    const std::optional<shaping_rate> rate = _rules->keyed_rate(which, key);
    auto it = holds.find(key);
    if (!rate) {
        if (it != holds.end() && it->second.held.empty()) holds.erase(it);
        return true;
    }
    if (it == holds.end()) {
        it = holds.emplace(key, site::key_hold{token_bucket(*rate, now_us), {}}).first;
    } else if (!(it->second.bucket.rate() == *rate)) {
        it->second.bucket.set_rate(*rate, now_us);  // a reload changed it
    }
    return it->second.bucket.tokens(now_us) > 0;
}

std::optional<keyed_limit> destination_pool::holding_limit(site& s, const delivery_job& job,
                                                           std::uint64_t now_us) noexcept {
    for (const keyed_limit which : keyed_limits)
        if (!key_allows(s, which, job.key_of(which), now_us)) return which;
    return std::nullopt;
}

void destination_pool::step_aside_held(site& s, std::uint64_t now_us) noexcept {
    while (!s.ready->empty()) {
        const std::optional<keyed_limit> which = holding_limit(s, *s.ready->front(), now_us);
        if (!which) return;
        hold(s, s.ready->pop(), *which, now_us);
    }
}

void destination_pool::take_tokens(site& s, const delivery_job& job, std::uint64_t now_us) noexcept {
    for (const keyed_limit which : keyed_limits) {
        site::key_holds& holds = s.holds_of(which);
        if (holds.empty()) continue;
        if (const auto t = holds.find(job.key_of(which)); t != holds.end()) (void)t->second.bucket.try_take(now_us);
    }
}

std::size_t destination_pool::keys_let_go(site& s, std::size_t want, std::uint64_t now_us) noexcept {
    // (limit, key) -> tokens left, for the keys met so far; a job goes if each of its keys has one.
    struct claim {
        keyed_limit which;
        const std::string* key;
        std::uint64_t left;
    };
    std::vector<claim> claimed;
    std::size_t found = 0;
    const std::size_t look = std::min(s.ready->size(), tenant_scan_limit);
    for (std::size_t i = 0; i < look && found < want; ++i) {
        const delivery_job& job = s.ready->at(i);
        constexpr std::size_t none = SIZE_MAX;
        std::size_t take[std::size(keyed_limits)];  // indices into claimed (insertions move it)
        bool goes = true;
        for (std::size_t k = 0; k < std::size(keyed_limits); ++k) {
            take[k] = none;
            const keyed_limit which = keyed_limits[k];
            site::key_holds& holds = s.holds_of(which);
            const auto t = holds.find(job.key_of(which));
            if (!goes || t == holds.end()) continue;  // no limit (or not met yet: it has a full bucket)
            auto c = std::find_if(claimed.begin(), claimed.end(),
                                  [&](const claim& e) { return e.which == which && *e.key == t->first; });
            if (c == claimed.end()) c = claimed.insert(claimed.end(), claim{which, &t->first, t->second.bucket.tokens(now_us)});
            goes = c->left > 0;
            take[k] = static_cast<std::size_t>(c - claimed.begin());
        }
        if (!goes) continue;
        for (const std::size_t c : take)
            if (c != none) --claimed[c].left;
        ++found;
    }
    return found;
}

void destination_pool::hold(site& s, delivery_job* job, keyed_limit which, std::uint64_t now_us) noexcept {
    site::key_hold& h = s.holds_of(which).at(job->key_of(which));  // key_allows() made it
    h.held.push_back(job);
    wake_at(s, wait_until_ms(h.bucket.wait_us(now_us)));
}

void destination_pool::release_held(site& s, std::uint64_t now_us) noexcept {
    for (const keyed_limit which : keyed_limits) {
        site::key_holds& holds = s.holds_of(which);
        for (auto it = holds.begin(); it != holds.end();) {
            site::key_hold& h = it->second;
            const std::optional<shaping_rate> rate = _rules->keyed_rate(which, it->first);
            std::uint64_t n = h.held.size();
            if (rate) {
                if (!(h.bucket.rate() == *rate)) h.bucket.set_rate(*rate, now_us);
                n = std::min<std::uint64_t>(n, h.bucket.tokens(now_us));
            }
            // The oldest first, in their order, in front of the ready queue.
            for (std::uint64_t k = n; k > 0; --k) s.ready->push_front(h.held[k - 1]);
            h.held.erase(h.held.begin(), h.held.begin() + static_cast<std::ptrdiff_t>(n));
            if (!h.held.empty()) wake_at(s, wait_until_ms(h.bucket.wait_us(now_us)));
            if (!rate) {
                it = holds.erase(it);  // no limit any more (a reload)
            } else {
                ++it;
            }
        }
    }
}

void destination_pool::requeue_transaction(site& s, delivery_job* job, const next_hop_ref& hop) noexcept {
    if (_stopping) {
        // The transactions sent are journaled now; the rest wait for the next start.
        protocol::message_outcome none;
        none.tag = job->outbound.tag;
        none.kind = protocol::outcome_kind::not_attempted;
        finish_job(job, std::move(none), hop, "");
        return;
    }
    s.ready->push_front(job);
}

void destination_pool::retire(site& s, outbound_link& c) {
    s.last_used_ms = _clock.monotonic_ms();
    std::erase(s.connections, &c);
    _graveyard.push_back(&c);
    if (_leases != nullptr) _leases->connection_ended(s.key, alive(s));
}

void destination_pool::share_connections(connection_leases* leases) noexcept {
    _leases = leases;
    if (leases != nullptr) leases->set_listener(this);
}

void destination_pool::lease_answer(const std::string& site_key, lease_verdict verdict) noexcept {
    const auto it = _sites.find(site_key);
    if (it == _sites.end() || _stopping) return;
    site& s = *it->second;
    if (verdict == lease_verdict::open) {
        dispatch(s);
    } else {
        wake_at(s, _clock.monotonic_ms() + lease_retry_ms);
    }
}

void destination_pool::defer_ready_jobs(site& s, const next_hop_ref& hop, const std::string& why) {
    next_hop_ref with_site = hop;
    with_site.site = s.name;
    // The held jobs too: the site cannot take them either.
    s.for_each_hold([&](site::key_hold& h) {
        for (delivery_job* job : h.held) s.ready->push(job);
        h.held.clear();
    });
    while (!s.ready->empty()) {
        protocol::message_outcome outcome;
        outcome.kind = protocol::outcome_kind::transient_failure;
        finish_job(s.ready->pop(), std::move(outcome), with_site, why);
    }
}

void destination_pool::connection_closed(outbound_link& c, const close_report& report) noexcept {
    site& s = *c.pool_site;
    retire(s, c);
    if (_stopping) return;  // jobs still queued stay as they are: the spool has them for the next start
    if (report.reason == protocol::close_reason::tls_failed && report.tls_protocol_failure &&
        report.tls_use == protocol::tls_use::when_offered) {
        // Opportunistic TLS whose handshake failed on TLS itself (logged by the connection):
        // this address gets plaintext for a while, starting with a new connection now. No job
        // was on this one (jobs are assigned only after EHLO), so nothing is deferred and
        // nothing counted. A connection merely lost during the handshake (a reset, a timeout:
        // something an attacker on the path can cause) is handled like any lost connection
        // below: no plaintext.
        _tls.mark_broken(report.hop.address);
        dispatch(s);
        return;
    }
    const std::uint32_t open = established(s);
    if (!report.before_greeting) {
        // 421 (RFC 5321 §3.8): the next hop is shedding load (the controller heard the reply
        // with its job). Back off before reconnecting instead of opening a fresh connection
        // for every queued job.
        if (report.reason == protocol::close_reason::peer_shutdown) back_off(s);
        dispatch(s);
        return;
    }
    if (report.local_failure) {
        // Our side failed (no local port or address, no descriptor): nothing about the
        // receiver, so no signal. Jobs wait for a connection that works, unless none does.
        core::diag("site " + s.name + (s.egress != nullptr ? " (egress source " + s.egress->name + ")" : std::string()) +
                   ": connection to " + report.hop.address + " failed on our side: " + report.why);
        back_off(s);
        if (open == 0 && ++s.local_failures >= local_failures_before_deferring) {
            s.local_failures = 0;
            defer_ready_jobs(s, report.hop, report.why);
        }
        return;
    }
    if (report.code != 0) automate(s, report.code, report.text);
    const throttle_kind kind = classify_throttle(report.stage, report.code, report.text);
    const bool refused_by_reply = report.stage == attempt_stage::greeting && report.code != 0;
    if (kind != throttle_kind::none && (open > 0 || refused_by_reply)) {
        // The receiver is there and limits us: a signal about the site's connections. No job
        // was on the connection; the waiting ones keep waiting.
        const std::uint64_t now_us = this->now_us();
        // A connection opened before the last cut says nothing about the cut count.
        const std::uint64_t started_us = static_cast<std::uint64_t>(std::max<std::int64_t>(c.pool_opened_ms, 0)) * 1000;
        log_change(s, s.controller->failed(report.stage, report.code, report.text, started_us, now_us, open));
        // Others still being opened may yet be taken: only with none left at all does the
        // site back off (and, refused again and again, defer its waiting mail).
        if (alive(s) == 0) {
            back_off(s);
            if (++s.throttled_refusals >= throttled_refusals_before_deferring) {
                s.throttled_refusals = 0;
                defer_ready_jobs(s, report.hop, report.why);
                return;
            }
        }
        dispatch(s);
        return;
    }
    if (!s.targets.empty()) {
        s.next_target = (s.next_target + 1) % s.targets.size();
        // The next exchanger (RFC 5321 §5.1) gets its chance before anything is deferred.
        if (s.next_target != 0) {
            dispatch(s);
            return;
        }
    }
    // Back off the site: 1 s, 2 s, 4 s ... 60 s. Jobs submitted meanwhile wait and are
    // dispatched when the site's timer ends the back-off. Jobs queued for a site we cannot
    // reach are deferred now, not held in memory.
    back_off(s);
    if (open == 0) defer_ready_jobs(s, report.hop, report.why);
}

// ---- timers, shutdown, the turn's end ------------------------------------------------------

void destination_pool::back_off(site& s) noexcept {
    ++s.connect_failures;
    s.backoff_until_ms = _clock.monotonic_ms() + backoff_ms(s.connect_failures);
    wake_at(s, s.backoff_until_ms);
}

void destination_pool::run_timers(std::int64_t now_ms) noexcept {
    site* s = nullptr;
    while (_wakes.pop(static_cast<std::uint64_t>(std::max<std::int64_t>(now_ms, 0)), s)) {
        s->wake = {};
        s->wake_ms = 0;
        // Over, by the clock the caller read, even if the pool's coarser clock has not quite
        // reached backoff_until_ms yet: dispatch() must not find it still running.
        if (s->backoff_until_ms <= now_ms) s->backoff_until_ms = 0;
        dispatch(*s);
    }
}

std::int64_t destination_pool::next_backoff_end_ms() const noexcept {
    const std::uint64_t next = _wakes.next_expiry();
    return next == core::timer_wheel<site*>::never ? no_backoff : static_cast<std::int64_t>(next);
}

void destination_pool::take_new_rules() noexcept {
    if (_shaping.generation() == _rules_generation) return;
    _rules_generation = _shaping.generation();
    _rules = _shaping.current();
    const std::uint64_t now_us = this->now_us();
    for (auto& [key, s] : _sites) {
        resolved_shaping limits = limits_of(*s);
        if (limits == s->limits) continue;
        s->limits = limits;
        log_change(*s, s->controller->reconfigure(s->limits, now_us));
    }
}

void destination_pool::tick(std::int64_t now_ms) noexcept {
    take_new_rules();
    if (now_ms >= _next_expiry_sweep_ms && !_stopping) {
        _next_expiry_sweep_ms = now_ms + expiry_sweep_ms;
        const auto unix_now = static_cast<std::uint64_t>(_clock.unix_us());
        for (auto& [name, s] : _sites)
            if (!s->ready->empty() || has_holds(*s)) {
                expire_waiting(*s, unix_now);
                warn_waiting(*s, unix_now);
            }
    }
    for (auto& [name, d] : _destinations)
        if (!d->ready->empty()) dispatch(*d);
    // Waiting and held jobs; growth and forgetting (advance()), a suspension's end. A site with
    // none of these has nothing for dispatch() to do: its timers wake it on their own.
    for (auto& [name, s] : _sites)
        if (needs_dispatch(*s)) dispatch(*s);
    evict_idle(_clock.monotonic_ms());  // the clock last_used_ms and the controllers read
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
        } else if (quiet > c->pool_site->limits.idle_timeout.count()) {
            c->finish();
        }
    }
}

bool destination_pool::needs_dispatch(const site& s) noexcept {
    if (!s.ready->empty() || !s.connections.empty() || !s.controller->settled()) return true;
    bool held = false;
    s.for_each_hold([&](const site::key_hold& h) { held = held || !h.held.empty(); });
    return held;
}

bool destination_pool::evictable(site& s, std::int64_t now_ms) noexcept {
    if (now_ms - s.last_used_ms < idle_evict_ms) return false;
    if (!s.ready->empty() || !s.connections.empty() || !s.wake.empty() || now_ms < s.backoff_until_ms) return false;
    if (_leases != nullptr && _leases->busy(s.key)) return false;
    const std::uint64_t now_us = static_cast<std::uint64_t>(std::max<std::int64_t>(now_ms, 0)) * 1000;
    bool busy = false;
    s.for_each_hold([&](site::key_hold& h) { busy = busy || !h.held.empty() || !h.bucket.full(now_us); });
    if (busy) return false;
    if (!s.controller->at_rest(now_us)) return false;
    // A closed connection not yet freed still points at its site (on_turn_end()).
    return std::none_of(_graveyard.begin(), _graveyard.end(), [&s](const outbound_link* c) { return c->pool_site == &s; });
}

void destination_pool::evict_idle(std::int64_t now_ms) noexcept {
    if (_stopping) return;
    for (auto it = _destinations.begin(); it != _destinations.end();) {
        const destination& d = *it->second;
        const std::int64_t used = std::max(d.last_used_ms, d.resolved_until_ms);
        if (d.resolving || !d.ready->empty() || now_ms - used < idle_evict_ms) {
            ++it;
            continue;
        }
        _queues.drop(it->first);  // destination_for()'s key
        it = _destinations.erase(it);
    }
    for (auto it = _sites.begin(); it != _sites.end();) {
        if (!evictable(*it->second, now_ms)) {
            ++it;
            continue;
        }
        _queues.drop("site:" + it->second->key);  // site_for()'s key
        it = _sites.erase(it);
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
    if (!_returned.empty()) {
        std::vector<delivery_job*> jobs;
        jobs.swap(_returned);
        return_jobs(jobs, "suspended by the operator (POST /api/v1/suspend)");
    }
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
