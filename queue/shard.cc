// queue/shard.cc: see shard.h.
#include "queue/shard.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/invariant.h"
#include "queue/connection.h"
#include "queue/outbound.h"
#include "queue/suppression_file.h"

namespace ringrelay::queue {

namespace {
// While password checks wait for room, how often the shard offers it again: room can appear
// on another shard (a check of the same address ending there), which sends no wake-up.
constexpr std::int64_t auth_retry_ms = 20;
// Shaped like Postfix's (smtpd_client_connection_count_limit) and the big providers' texts.
constexpr std::string_view too_many_connections =
    "421 4.7.0 Error: too many connections; try again later\r\n";
constexpr std::string_view too_many_from_address =
    "421 4.7.0 Error: too many connections from your address; try again later\r\n";
}  // namespace

shard::shard(unsigned index, const core::config& config, const protocol::server_config& server,
             const core::kernel_features& features, const retry_schedule& schedule, int log_fd,
             std::vector<listener_spec> listen, std::shared_future<void> go, inbound_limits& limits,
             const shard_links& links, const protocol::bounce_rules& bounce_rules, storage_factory make_storage,
             const inbound_tls* tls, inbound_auth* auth,
             dkim_signer* dkim, suppression_table* suppressions, std::uint64_t suppression_generation,
             std::vector<http_listen_spec> http_listen, const metrics_sources* metrics, std::atomic<bool>* drain,
             core::work_pool* admin_pool, const unsubscribe_links* unsubscribe)
    : _index(index),
      _config(config),
      _server(server),
      _settings{config.min_data_rate, 0, "--command-timeout"},
      _features(features),
      _schedule(schedule),
      _log_fd(log_fd),
      _listen(std::move(listen)),
      _make_storage(std::move(make_storage)),
      _tls(tls),
      _auth(auth),
      _dkim(dkim),
      _suppression_table(suppressions),
      _suppression_generation(suppression_generation),
      _go(std::move(go)),
      _limits(limits),
      _links(links),
      _bounce_rules(bounce_rules),
      _auth_queue(config.auth_queue_size, static_cast<std::int64_t>(config.auth_queue_timeout) * 1000),
      _deadlines(static_cast<std::int64_t>(config.command_timeout) * 1000),
      _http_deadlines(static_cast<std::int64_t>(config.http_timeout) * 1000),
      _http_listen(std::move(http_listen)),
      _metrics(metrics),
      _unsubscribe(unsubscribe),
      _admin_pool(admin_pool),
      _drain_request(drain) {
}

shard::~shard() {
    _http.reset();
    _http_api.reset();
    _http_auth.reset();
    _injector.reset();
    _front.reset();  // the connections, before the delivery and spool they use
    _delivery.reset();
    _leases.reset();
    _redis.reset();
    _dns.reset();
}

std::string shard::init() {
    if (auto ec = _reactor.init(server_ring_entries, _features); ec)
        return "io_uring setup failed: " + ec.message();
    _ring_fd.store(_reactor.ring_fd(), std::memory_order_release);
    if (auto ec = _buffers.init(_reactor, server_receive_group, server_receive_buffers, server_receive_buffer_size); ec)
        return "receive buffer ring: " + ec.message();
    // Registered buffers for streamed body reads (queue/outbound.h). A refusal is no error:
    // the reads use plain memory; the relay says so once at start-up.
    if (auto ec = _reactor.fixed_buffers().init(_reactor.ring(), body_read_buffers, body_piece_size); ec)
        _fixed_buffers_refusal = ec.message();
    _storage = _make_storage ? _make_storage(_reactor) : std::make_unique<disk_storage>(_reactor);
    _spool = std::make_unique<spool>(_reactor, *_storage, _config.spool + "/shard-" + std::to_string(_index),
                                     _config.spool_segment_bytes);
    _spool->measure_commits(&_counters.commit_latency);
    if (_suppression_table != nullptr) {
        _suppressions = std::make_unique<suppression_list>(*_suppression_table, *_storage,
                                                           suppression_directory(_config.spool),
                                                           _suppression_generation, _index);
        if (auto ok = _suppressions->open(); !ok) return "suppression journal: " + ok.error();
    }
    _log = std::make_unique<core::log_writer>(_reactor, _log_fd);
    core::dns_config dns;
    if (!_config.dns_server.empty())
        if (auto e = core::parse_endpoint(_config.dns_server)) dns.servers.push_back(*e);
    dns.smtp_port = _config.smtp_port;
    _dns = std::make_unique<core::dns_resolver>(_reactor, dns);
    if (auto ec = _dns->init(); ec) return "DNS resolver: " + ec.message();
    _delivery = std::make_unique<delivery>(_reactor, *_spool, *_log, _config, _schedule, *this, _index, stream_services(),
                                           *_dns, _limits.outbound_tls_generation, _links, _bounce_rules, _limits.shaping,
                                           *_limits.egress, _suppressions.get());
    if (_config.redis_address) {
        // The relay resolved a host name at start-up (resolve_redis_host): no lookup here.
        _redis = std::make_unique<core::redis_client>(
            _reactor, *_config.redis_address,
            core::redis_client_config{.label = "redis (shard " + std::to_string(_index) + ")"});
        _leases = std::make_unique<connection_leases>(*_redis, _config.cluster_size,
                                                      _config.hostname + ":" + std::to_string(getpid()) + ":" +
                                                          std::to_string(_index));
        _delivery->share_connections(_leases.get());
        // Connected once the shard runs (run()): the connect deadline would otherwise run out
        // while the shards recover their spools.
    }
    if (_index < _limits.warmup_seeds.size())
        for (const warmup_count& c : _limits.warmup_seeds[_index]) _delivery->warmup().seed(c);
    // Published before the shards run, so that a save of the journal never lacks them (no
    // reader yet: this cannot be skipped).
    (void)publish_warmup();
    // Turn hooks run in this order: the spool starts its group commit first, so the replies
    // flushed by the shard are those of the turn; the suppression journal after the shard's
    // (whose delivery may add entries at its turn end), then the log.
    _reactor.add_turn_hook(_spool.get());
    _reactor.add_turn_hook(this);
    if (_suppressions) _reactor.add_turn_hook(_suppressions.get());
    _reactor.add_turn_hook(_log.get());
    if (_tls != nullptr)
        if (std::string e = build_tls_context(); !e.empty()) return "TLS: " + e;
    if (_auth != nullptr || _dkim != nullptr || _admin_pool != nullptr)
        if (auto ec = _work_return.start(_reactor); ec) return "work pool wake-up (eventfd): " + ec.message();
    _front = std::make_unique<server_front>(
        _reactor, *this,
        core::connection_limits(&_limits.total, _config.max_connections, _limits.per_ip, _config.max_connections_per_ip,
                                too_many_connections, too_many_from_address),
        "shard " + std::to_string(_index),
        front_proxies{_config.proxy_cidrs, static_cast<std::int64_t>(_config.proxy_protocol_timeout) * 1000});
    for (const listener_spec& l : _listen) {
        if (l.kind == listener_kind::implicit_tls && _tls == nullptr)
            return "cannot listen with TLS on " + core::to_string(l.endpoint) + ": no certificate";
        if (std::string e = _front->listen(l.endpoint, l.kind); !e.empty()) return e;
    }
    if (!_http_listen.empty() && _metrics != nullptr) {
        _injector = std::make_unique<injector>(*this);
        if (_auth != nullptr) _http_auth = std::make_unique<http_basic_auth>(*this);
        _suppression_api = std::make_unique<suppression_api>(
            _suppressions.get(), _admin_pool, &_work_return, suppression_directory(_config.spool),
            _suppression_table != nullptr ? _suppression_table->ttl() : 0, _unsubscribe);
        _http_api = std::make_unique<http_api>(_config, *_metrics, _delivery.get(), _drain_request, _injector.get(),
                                               _http_auth.get(), &_counters, _suppression_api.get());
        _http = std::make_unique<core::http_server>(
            core::stream_services{_reactor, _buffers, _streams, &_http_deadlines}, *_http_api,
            "shard " + std::to_string(_index), _tls != nullptr ? this : nullptr);
        for (const http_listen_spec& l : _http_listen)
            if (std::string err = _http->listen(l.endpoint, l.transport); !err.empty()) return err;
    }
    return {};
}

void shard::run(std::promise<shard_init_result>& ready) {
    shard_init_result result;
    result.error = init();
    if (result.error.empty()) {
        auto report = _spool->open(_delivery.get());
        if (!report) {
            result.error = "spool: " + report.error();
        } else {
            // What is still to deliver (or held): the figure the operator cares about.
            result.unfinished_messages = _delivery->finish_recovery();
            result.recovery_problems = report->problems;
            // An unusable index cost a scan, not mail; said once at start-up all the same.
            for (std::string& p : report->index_problems) result.recovery_problems.push_back(std::move(p));
            const auto now_based = (static_cast<std::uint64_t>(core::unix_us()) << 8) | _index;
            const std::uint64_t after_recovered = report->max_queue_id == 0 ? 0 : report->max_queue_id + 256;
            _next_id = std::max(now_based, after_recovered);
        }
    }
    if (result.error.empty()) {
        result.bound = _front->bound();
        if (_http) result.http_bound = _http->bound();
        result.fixed_buffers = _reactor.fixed_buffers().capacity();
        result.fixed_buffers_refusal = _fixed_buffers_refusal;
    }
    const bool ok = result.error.empty();
    ready.set_value(std::move(result));
    if (!ok) {
        if (_suppressions) _suppressions->leave();
        _finished.store(true, std::memory_order_release);
        return;
    }
    // Every shard's reactor exists now; wait until the relay has connected the cross-shard
    // mailboxes before any mail moves.
    _go.wait();
    _spool->check_space(_config.max_message_size + _config.max_message_size / 2);
    _front->start();
    if (_http) _http->start();
    if (_redis) _redis->start(core::monotonic_ms());
    _next_tick_ms = core::monotonic_ms() + 1000;
    while (true) {
        const int dns_wait = _dns->next_timeout_ms();
        int wait = dns_wait >= 0 && dns_wait < 1000 ? dns_wait : 1000;
        if (!_auth_queue.empty()) wait = std::min(wait, static_cast<int>(auth_retry_ms));
        if (_redis) wait = std::min(wait, 100);  // its reconnects and request timeouts
        if (!_reactor.run_once(wait)) {
            core::diag("shard " + std::to_string(_index) + ": io_uring wait failed; stopping");
            break;
        }
        tick();
        if (_stopping && may_exit()) break;
    }
    // Let the last log records reach the file.
    while (!_log->idle() && _reactor.run_once(100)) {}
    // A loop that ended on an io_uring failure may leave password checks in the pool; their
    // connections must outlive them.
    _work_return.wait_idle();
    if (_suppressions) _suppressions->leave();  // reads the suppression table no more
    // The last counts for the relay's final save of the warm-up journal (after join): a save in
    // progress may hold the buffer for a moment.
    for (int tries = 0; tries < 200 && !publish_warmup(); ++tries) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    _finished.store(true, std::memory_order_release);
}

server_connection* shard::make_connection(int fd, const inbound_peer& from, listener_kind kind) noexcept {
    // The client behind a load balancer is the one the relay networks judge (issue 19).
    protocol::relay_trust trust = protocol::relay_trust::untrusted;
    for (const core::cidr& net : _config.relay_cidrs) {
        if (net.contains(from.client)) {
            trust = protocol::relay_trust::trusted;
            break;
        }
    }
    _counters.accepted_connections.fetch_add(1, std::memory_order_relaxed);
    _counters.open_connections.fetch_add(1, std::memory_order_relaxed);
    return new connection(
        *this, fd,
        protocol::client_info{core::address_text(from.client), trust,
                              from.proxy != nullptr ? core::address_text(from.proxy) : std::string()},
        kind);
}

void shard::on_proxy_failed(const sockaddr* balancer, proxy_outcome, std::string_view why) noexcept {
    _counters.proxy_header_failures.fetch_add(1, std::memory_order_relaxed);
    if (may_report(report::proxy_failure))
        core::diag("shard " + std::to_string(_index) + ": connection from load balancer " +
                   core::address_text(balancer) + " closed: " + std::string(why) + " (one report per second)");
}

void shard::on_connection_gone() noexcept { _counters.open_connections.fetch_sub(1, std::memory_order_relaxed); }

void shard::on_refused(const sockaddr* peer, core::refusal, std::string_view text) noexcept {
    _counters.refused_connections.fetch_add(1, std::memory_order_relaxed);
    if (may_report(report::refused_connection)) {
        core::diag("shard " + std::to_string(_index) + ": refusing connections from " + core::address_text(peer) +
                   ": " + std::string(text.substr(10, text.size() - 12)));
    }
}

void shard::request_stop(core::reactor& from) noexcept {
    if (_stop_sent.exchange(true)) return;
    const int fd = ring_fd();
    if (fd < 0) return;
    from.wake(fd, &_stop, 0);
}

void shard::on_stop_request(int, std::uint32_t) noexcept { begin_stop(); }

void shard::begin_stop() noexcept {
    if (_stopping) return;
    _stopping = true;
    _stop_deadline_ms = core::monotonic_ms() + static_cast<std::int64_t>(_config.shutdown_timeout) * 1000;
    _front->stop();
    if (_http) _http->stop();
    // Password checks still waiting for room are answered 454 4.7.0 now (the session then
    // says 421 and closes); no new one waits while the shard stops.
    _auth_queue.drain();
    // on_stop may retire connections (which edits _connections at the turn's end only).
    _front->stop_connections(false);
    _delivery->stop(false);
    _dns->shutdown();
    // Redis stays up while connections finish (their leases go back as each ends): closed by
    // may_exit() once everything else is done.
}

// One context per shard (no OpenSSL lock shared between shard threads), all from the same
// certificate and ticket keys.
std::string shard::build_tls_context() {
    const std::uint64_t generation = _tls->generation.load(std::memory_order_acquire);
    const std::shared_ptr<const core::tls_credentials> credentials = _tls->credentials.load();
    auto ctx = core::tls_context::server(*credentials, &_tls->ticket_keys);
    if (!ctx) return ctx.error().text;
    if (auto ok = ctx->set_ciphers(_config.tls_ciphers, _config.tls_ciphersuites); !ok) return ok.error().text;
    _tls_context.emplace(std::move(*ctx));
    _tls_generation = generation;
    return {};
}

void shard::tick() noexcept {
    const std::int64_t now = core::monotonic_ms();
    if (!_dns->idle()) _dns->tick(now);  // c-ares timeouts need better than the 1 s tick
    if (_redis) {
        _redis->tick(now);
        _leases->tick(now);
    }
    if (!_auth_queue.empty() && now >= _next_auth_pump_ms) {
        _next_auth_pump_ms = now + auth_retry_ms;
        _auth_queue.pump(now);
    }
    if (now < _next_tick_ms) return;
    _next_tick_ms = now + 1000;
    _reported = 0;
    if (const std::uint64_t g = _limits.live_generation.load(std::memory_order_acquire); g != _live_generation) {
        _live_generation = g;
        if (const auto next = _limits.live.load(std::memory_order_acquire)) apply_live(*next);
    }
    if (_tls != nullptr && _tls->generation.load(std::memory_order_acquire) != _tls_generation) {
        // A reloaded certificate (SIGHUP). The relay checked it builds; should this shard's
        // build fail anyway, it keeps serving the old one.
        if (std::string e = build_tls_context(); !e.empty()) {
            _tls_generation = _tls->generation.load(std::memory_order_acquire);
            core::diag("shard " + std::to_string(_index) + ": reloaded TLS certificate not used: " + e);
        }
    }
    _deadlines.expire(now);
    _http_deadlines.expire(now);
    // Postfix's rule: room for one and a half of the largest message.
    _spool->check_space(_config.max_message_size + _config.max_message_size / 2);
    _delivery->tick(now);
    if (_suppressions) _suppressions->tick();
    _counters.delivered.store(_delivery->counters().delivered, std::memory_order_relaxed);
    const core::fixed_buffer_counters& reads = _reactor.fixed_buffers().counters();
    _counters.fixed_buffer_reads.store(reads.fixed_reads, std::memory_order_relaxed);
    _counters.plain_buffer_reads.store(reads.plain_reads, std::memory_order_relaxed);
    _counters.queued_for_delivery.store(_delivery->queued_messages(), std::memory_order_relaxed);
    publish_counters();
    if (_drain_request != nullptr && !_stopping) tick_drain();
    if (_stopping && now >= _stop_deadline_ms) {
        if (!_grace_over) {
            _grace_over = true;
            core::diag("shard " + std::to_string(_index) + ": shutdown grace period over; closing " +
                       std::to_string(_front->connections()) + " connection(s)");
            _delivery->stop(true);
        }
        // Every tick after the grace period: a connection that was awaiting a commit at the
        // last tick is closed now.
        _front->stop_connections(true);
        // An HTTP client that does not read its last answers would hold the shard too.
        if (_http) _http->abort_connections();
    }
    _front->tick();
    if (_http) _http->tick();
}

// SIGHUP: the relay applied these flags to its config; this shard's copy takes every live flag
// that differs (the relay's config differs from ours only in those). What reads them reads
// them at use: the session the server settings, the router the routes and TLS policies, the
// accept path the relay networks, the HTTP API its networks, the outbound TLS policy its CA
// file (queue/tls_client_policy.h notices the path). A session in progress sees the new
// limits from its next command.
void shard::apply_live(const inbound_limits::live_settings& next) noexcept {
    std::vector<const core::flag_descriptor*> rows = core::changed_flags(_config, next.config);
    std::erase_if(rows, [](const core::flag_descriptor* f) { return !f->live; });
    core::copy_flags(_config, next.config, rows);
    _server = next.server;
    _settings.min_data_rate = _config.min_data_rate;
}

// Draining (--drain, or asked for while running): the SMTP listeners close once; the shard
// keeps delivering, and says at each tick whether anything is left.
void shard::tick_drain() noexcept {
    if (!_draining) {
        if (!_drain_request->load(std::memory_order_acquire)) return;
        _draining = true;
        _front->stop();
        if (!_listen.empty())
            core::diag("shard " + std::to_string(_index) + ": draining: SMTP listeners closed; " +
                       std::to_string(_front->connections()) + " session(s) finish, " +
                       std::to_string(_delivery->queued_messages()) + " message(s) to deliver");
    }
    _drained.store(_front->drained() && (!_injector || _injector->idle()) && _delivery->queued_messages() == 0 && _delivery->outgoing_idle() &&
                       _delivery->reports_idle() && _spool->idle(),
                   std::memory_order_release);
}

// The counts /metrics reads that live in shard-local structures: copied once a tick.
void shard::publish_counters() noexcept {
    const delivery_counters d = _delivery->counters();
    _counters.deferred.store(d.deferred, std::memory_order_relaxed);
    _counters.bounced.store(d.bounced, std::memory_order_relaxed);
    _counters.expired.store(d.expired, std::memory_order_relaxed);
    _counters.dsns.store(d.dsns, std::memory_order_relaxed);
    _counters.outbound_connections.store(_delivery->connections_opened(), std::memory_order_relaxed);
    _counters.spool_free_bytes.store(_spool->available_bytes(), std::memory_order_relaxed);
    if (_suppressions) _counters.suppressions_added.store(_suppressions->stats().added, std::memory_order_relaxed);
    const body_cache_counters cache = _delivery->cache_counters();
    _counters.body_cache_hits.store(cache.hits, std::memory_order_relaxed);
    _counters.body_cache_reads.store(cache.reads, std::memory_order_relaxed);
    const core::dns_stats& dns = _dns->stats();
    _counters.dns_lookups.store(dns.lookups, std::memory_order_relaxed);
    _counters.dns_queries.store(dns.queries, std::memory_order_relaxed);
    _counters.dns_cache_hits.store(dns.cache_hits, std::memory_order_relaxed);
    _counters.dns_failures.store(dns.query_failures, std::memory_order_relaxed);
    (void)publish_warmup();
    if (_http) {  // only a scrape reads them; the segment list and the sites are walked once a second
        std::uint64_t bytes = 0;
        for (const spool::segment_info& s : _spool->segments()) bytes += s.size;
        _counters.spool_bytes.store(bytes, std::memory_order_relaxed);
        // Skipped while a scrape still reads the buffer to be filled: it goes out next tick.
        (void)_snapshot.publish([this](shard_snapshot& out) { _delivery->fill_snapshot(out); });
    }
}

bool shard::publish_warmup() noexcept {
    if (_index >= _limits.warmup_counts.size() || _delivery->warmup().version() == _warmup_version) return true;
    // Skipped while the relay still reads the buffer to be filled: it goes out next tick.
    if (!_limits.warmup_counts[_index]->publish(
            [this](std::vector<warmup_count>& out) { _delivery->warmup().counts(out); }))
        return false;
    _warmup_version = _delivery->warmup().version();
    return true;
}

bool shard::may_exit() noexcept { return settled_for_exit() && redis_closed(); }

// Stopping, everything else done: the Redis connection closes once the requests it carries
// (the leases given back as the last connections ended) are answered, or at once after the
// grace period or when Redis is not up.
bool shard::redis_closed() noexcept {
    if (!_redis) return true;
    if (!_redis_closing) {
        if (_redis->up() && _redis->in_flight() != 0 && !_grace_over) return false;
        _redis_closing = true;
        _redis->shutdown();
    }
    return _redis->idle();
}

bool shard::settled_for_exit() noexcept {
    if (!drained()) {
        if (_settled) {
            _settled = false;
            _links.settle(false);
        }
        return false;
    }
    // After the grace period a shard no longer waits for the others (an outcome still to come
    // from one means that message goes again after a restart: at least once, never lost).
    if (_grace_over) return true;
    // The count is read before this shard looks at its mailboxes: a shard counted in it had
    // pushed whatever it sent before it settled, so the drain below sees it. Two passes: one
    // that settles this shard, one that sees itself counted.
    for (int pass = 0; pass < 2; ++pass) {
        const unsigned all = _links.settled();
        _delivery->drain_incoming();
        const bool settled = drained() && _delivery->outgoing_idle();
        if (settled != _settled) {
            _settled = settled;
            _links.settle(settled);
            if (settled) continue;
            return false;
        }
        return settled && all == _links.shards();
    }
    return false;
}

bool shard::drained() const noexcept {
    return _front->drained() && (!_http || _http->drained()) && (!_injector || _injector->idle()) && _delivery->idle() &&
           _dns->idle() && _spool->idle() && _log->idle() && (!_suppressions || _suppressions->idle());
}

protocol::host_reply shard::check_auth(const protocol::client_info& client) noexcept {
    if (_auth != nullptr && _auth->failures().blocked(_auth->failures().slot_of(client.address), core::monotonic_ms()))
        return {protocol::reply_id::auth_throttled, _server.hostname};
    return {};
}

protocol::host_reply shard::check_rcpt(const protocol::client_info& client, const protocol::envelope& transaction,
                                       std::string_view recipient) noexcept {
    if (!_suppressions) return {};
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    const std::optional<std::uint32_t> since =
        _suppressions->check(transaction, recipient, static_cast<std::uint32_t>(now_us / 1000000));
    if (!since) return {};
    _counters.suppressed.fetch_add(1, std::memory_order_relaxed);
    format_suppressed_reply(_suppressed_reply, recipient, *since);
    log_suppressed(*_log, suppressed_rcpt{.shard = _index,
                                          .client = client.address,
                                          .proxy = client.proxy,
                                          .transaction = &transaction,
                                          .recipient = recipient,
                                          .tenant = tenant_of(transaction),
                                          .since_s = *since,
                                          .reply = _suppressed_reply,
                                          .now_us = now_us});
    return {protocol::reply_id::recipient_suppressed, _suppressed_reply};
}

std::uint64_t shard::next_queue_id() noexcept {
    const std::uint64_t id = _next_id;
    _next_id += 256;  // the low 8 bits are the shard index
    return id;
}

void shard::count(server_event event, std::uint64_t n) noexcept {
    switch (event) {
    case server_event::tls_handshake: _counters.tls_handshakes.fetch_add(n, std::memory_order_relaxed); return;
    case server_event::tls_failure: _counters.tls_failures.fetch_add(n, std::memory_order_relaxed); return;
    case server_event::tls_discarded_bytes:
        _counters.tls_discarded_bytes.fetch_add(n, std::memory_order_relaxed);
        return;
    case server_event::early_talker: _counters.early_talkers.fetch_add(n, std::memory_order_relaxed); return;
    case server_event::input_bytes: _counters.received_bytes.fetch_add(n, std::memory_order_relaxed); return;
    }
}

bool shard::may_report(server_report kind) noexcept {
    switch (kind) {
    case server_report::early_talker: return may_report(report::early_talker);
    case server_report::tls_failure: return may_report(report::tls_failure);
    case server_report::tls_discarded: return may_report(report::tls_discarded);
    }
    return false;
}

void shard::write_report(server_report, std::string_view text) noexcept {
    core::diag(std::string(text) + " (one report per second)");
}

void shard::on_turn_end() noexcept {
    if (_auth_pump_wanted) {
        _auth_pump_wanted = false;
        if (!_auth_queue.empty()) _auth_queue.pump(core::monotonic_ms());
    }
    // Receives re-armed after -ENOBUFS, then batched sends: every connection that produced
    // replies this turn sends them in one write.
    _streams.run();
    _delivery->on_turn_end();
    _front->end_turn();
    if (_injector) _injector->end_turn();
    if (_http) _http->end_turn();
}

}  // namespace ringrelay::queue
