// queue/shard.h: one shard of the relay: its thread's reactor, listeners (SO_REUSEPORT,
// multishot accept; plain SMTP with STARTTLS, or implicit TLS), its own TLS context, receive
// buffer ring, SMTP connections, spool and log writer
// (docs/ARCHITECTURE.md "The path of one message"). Everything here runs on the shard's own thread;
// the only ways in from outside are request_stop() (an io_uring MSG_RING wake-up) and the
// atomics marked below.
//
// Lifecycle: construct (any thread) -> run() on the shard thread: init, loop, drain, return.
// run() reports its init result through `ready` before looping.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/address_counter.h"
#include "core/buffer_ring.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/deadline_list.h"
#include "core/log.h"
#include "core/net.h"
#include "core/reactor.h"
#include "core/redis_client.h"
#include "core/snapshot_slot.h"
#include "core/stream.h"
#include "core/tls.h"
#include "core/work_pool.h"
#include "protocol/bounce_class.h"
#include "protocol/dkim_sign.h"
#include "protocol/server_session.h"
#include "queue/auth.h"
#include "queue/connection.h"
#include "queue/connection_leases.h"
#include "queue/delivery.h"
#include "queue/retry_schedule.h"
#include "queue/server_front.h"
#include "queue/shard_counters.h"
#include "queue/shard_snapshot.h"
#include "queue/egress.h"
#include "queue/warmup.h"
#include "queue/http_api.h"
#include "queue/http_auth.h"
#include "queue/injector.h"
#include "queue/metrics.h"
#include "queue/shaping_table.h"
#include "queue/spool.h"
#include "queue/storage.h"
#include "queue/suppression.h"
#include "queue/suppression_api.h"
#include "queue/suppression_table.h"
#include "queue/unsubscribe.h"

namespace ringrelay::queue {

// One endpoint to listen on and what it speaks first.
struct listener_spec {
    core::endpoint endpoint;
    listener_kind kind = listener_kind::plain;
};

// One HTTP endpoint to listen on (--http: plain; --http-tls: TLS).
struct http_listen_spec {
    core::endpoint endpoint;
    core::http_transport transport = core::http_transport::plain;
};

// The relay's inbound TLS material (issue 5), loaded at start-up and replaced by a reload
// (SIGHUP): the relay stores new credentials, then bumps `generation`; each shard notices at
// its next tick and builds a new core::tls_context on its own thread. Connections already in
// TLS keep the old context (OpenSSL reference-counts it). Outlives the shards.
struct inbound_tls {
    std::atomic<std::shared_ptr<const core::tls_credentials>> credentials;
    core::tls_ticket_keys ticket_keys;  // shared and kept across reloads: tickets still resume
    std::atomic<std::uint64_t> generation{0};
    // kTLS: handshakes run on the socket and the kernel takes the record layer (start-up
    // probe passed, no --no-ktls). Fixed before the shards start.
    bool kernel = false;
};

// Inbound connection counts shared by every shard (--max-connections, --max-connections-per-ip).
// Owned by the relay; outlives the shards.
struct inbound_limits {
    core::shared_limit total;
    core::address_counter per_ip;
    // Not a limit, but the same kind of relay-owned state every shard shares: bumped by a
    // SIGHUP whose --outbound-ca-file loaded (queue/tls_client_policy.h).
    alignas(64) std::atomic<std::uint64_t> outbound_tls_generation{0};
    // The shaping rules (issue 17): set by the relay before the shards run, replaced by SIGHUP.
    shaping_table shaping;
    // The egress sources, pools and selectors (issue 17): set by the relay before the shards
    // run, never changed after; empty (none) unless it is.
    std::shared_ptr<const egress_table> egress = std::make_shared<const egress_table>();
    // SIGHUP (issue 18): the relay's config after a reload applied its live flags, and the
    // server settings made from it; each shard copies the live flags into its own config at
    // its next tick once live_generation moves (stored after `live`).
    struct live_settings {
        core::config config;
        protocol::server_config server;
    };
    std::atomic<std::shared_ptr<const live_settings>> live;
    std::atomic<std::uint64_t> live_generation{0};
    // The warm-up journal (queue/warmup.h), by shard index: what the relay restored for each
    // shard (set before the shards run), and the slot each publishes its counts in.
    std::vector<std::vector<warmup_count>> warmup_seeds;
    std::vector<std::unique_ptr<core::snapshot_slot<std::vector<warmup_count>>>> warmup_counts;
};

// Makes the shard's storage backend on the shard thread (the disk by default; tests pass a
// fault_storage).
using storage_factory = std::function<std::unique_ptr<storage>(core::reactor&)>;

struct shard_init_result {
    std::string error;                        // empty on success
    std::vector<core::endpoint> bound;        // the endpoints really bound (port 0 resolved), in listen order
    std::vector<core::endpoint> http_bound;   // the same for --http and --http-tls, in http_listen order
    std::size_t unfinished_messages = 0;  // of which still to deliver
    std::vector<std::string> recovery_problems;
    unsigned fixed_buffers = 0;          // registered for streamed body reads (queue/outbound.h)
    std::string fixed_buffers_refusal;   // why the kernel refused (some of) them; empty: it did not
};

class shard final : public core::turn_hook,
                    public core::http_tls_source,
                    public protocol::session_host,
                    public server_host,
                    public front_owner {
public:
    // config, server_config, features, bounce_rules and tls must outlive the shard. listen: the
    // endpoints to bind (port 0 picks one; main passes shard 0's result to the others).
    // bounce_rules: the relay's classification table, read by every shard (never written after
    // the relay starts). tls: null for no TLS (then no implicit-TLS listener may be given and
    // server.tls must be none). http_listen: the --http and --http-tls endpoints (port 0 as for
    // listen; TLS ones need tls);
    // metrics: every shard's counters, for /metrics (relay-owned; null: no HTTP endpoint).
    // drain: the relay's drain request (--drain, SIGUSR2 or POST /api/v1/drain), read at every
    // tick; null: never drains. admin_pool: where GET /api/v1/suppressions reads the list's
    // files (relay-owned; null: that GET answers 503). unsubscribe: the one-click links
    // (queue/unsubscribe.h; relay-owned; null: none are added and POST /u/TOKEN is 404).
    shard(unsigned index, const core::config& config, const protocol::server_config& server,
          const core::kernel_features& features, const retry_schedule& schedule, int log_fd,
          std::vector<listener_spec> listen, std::shared_future<void> go, inbound_limits& limits,
          const shard_links& links, const protocol::bounce_rules& bounce_rules, storage_factory make_storage = {},
          const inbound_tls* tls = nullptr, inbound_auth* auth = nullptr,
          dkim_signer* dkim = nullptr, suppression_table* suppressions = nullptr,
          std::uint64_t suppression_generation = 0, std::vector<http_listen_spec> http_listen = {},
          const metrics_sources* metrics = nullptr, std::atomic<bool>* drain = nullptr,
          core::work_pool* admin_pool = nullptr, const unsubscribe_links* unsubscribe = nullptr);
    shard(const shard&) = delete;
    shard& operator=(const shard&) = delete;
    ~shard();

    // The shard thread's body. Sets `ready` after init; returns when stopped and drained.
    void run(std::promise<shard_init_result>& ready);

    // Any thread, with the caller's own reactor (for MSG_RING). Safe to call more than once.
    void request_stop(core::reactor& from) noexcept;
    [[nodiscard]] int ring_fd() const noexcept { return _ring_fd.load(std::memory_order_acquire); }
    [[nodiscard]] const shard_counters& counters() const noexcept { return _counters; }
    // What /metrics reads of this shard with labels (sites, providers, bounce classes),
    // published at each tick while HTTP is on (queue/shard_snapshot.h).
    [[nodiscard]] const shard_snapshot_slot& snapshot() const noexcept { return _snapshot; }
    [[nodiscard]] bool finished() const noexcept { return _finished.load(std::memory_order_acquire); }
    // Draining, and at its last tick nothing left: no listener, no SMTP connection, no message
    // in its queue, nothing on its way to another shard.
    [[nodiscard]] bool drain_complete() const noexcept { return _drained.load(std::memory_order_acquire); }

    // session_host
    std::uint64_t next_queue_id() noexcept override;
    std::string_view rfc5322_date() noexcept override { return _dates.now(); }
    protocol::host_reply check_mail(const protocol::client_info&) noexcept override {
        return {_spool->accepting() ? protocol::reply_id::none : protocol::reply_id::no_space, {}};
    }
    // An address that failed AUTH too often is refused until its window has passed.
    protocol::host_reply check_auth(const protocol::client_info& client) noexcept override;
    // A recipient on the suppression list of the transaction's tenant: 550 5.1.1 and a
    // `Suppressed` log record (queue/suppression.h).
    protocol::host_reply check_rcpt(const protocol::client_info& client, const protocol::envelope& transaction,
                                    std::string_view recipient) noexcept override;

    // Shard-thread API used by connections.
    [[nodiscard]] core::reactor& reactor() noexcept { return _reactor; }
    [[nodiscard]] core::buffer_ring& buffers() noexcept { return _buffers; }
    [[nodiscard]] spool& message_spool() noexcept { return *_spool; }
    // The one-click unsubscribe links to add to messages; null: none (queue/unsubscribe.h).
    [[nodiscard]] const unsubscribe_links* unsubscribe() const noexcept { return _unsubscribe; }
    [[nodiscard]] delivery& outbound_delivery() noexcept { return *_delivery; }
    [[nodiscard]] core::log_writer& log() noexcept { return *_log; }
    [[nodiscard]] core::deadline_list& deadlines() noexcept { return _deadlines; }
    [[nodiscard]] const core::config& config() const noexcept { return _config; }
    [[nodiscard]] unsigned index() const noexcept { return _index; }
    [[nodiscard]] shard_counters& mutable_counters() noexcept { return _counters; }
    // SMTP AUTH (shared by every shard); null when --auth-users is not set.
    [[nodiscard]] inbound_auth* auth() noexcept { return _auth; }
    // The relay's DKIM signer; null without --dkim-key.
    [[nodiscard]] dkim_signer* dkim() noexcept { return _dkim; }
    // This shard's OpenSSL signing state, for the messages it signs itself (Ed25519 only:
    // queue/dkim_signer.h). Shard thread only.
    [[nodiscard]] protocol::dkim::signer_cache& dkim_cache() noexcept { return _dkim_cache; }
    // Where this shard's work-pool items (password checks) come back.
    [[nodiscard]] core::work_return& work_return() noexcept { return _work_return; }
    // Password checks waiting for room (queue/auth.h). Pumped every auth_retry_ms while not
    // empty, and at the end of a turn in which one of this shard's checks ended.
    [[nodiscard]] auth_wait_queue& auth_queue() noexcept { return _auth_queue; }
    // A check of this shard ended (its address or user may have room now): pump at turn end.
    void auth_room_freed() noexcept { _auth_pump_wanted = true; }
    // Abuse, TLS and AUTH load reports (stderr) are limited to one per kind per shard per second.
    enum class report : std::uint16_t {
        refused_connection = 1, early_talker = 2, tls_failure = 4, tls_discarded = 8, auth_busy = 16,
        auth_queued = 32, auth_queue_full = 64, auth_wait_over = 128, dkim_error = 256, proxy_failure = 512 };
    [[nodiscard]] bool may_report(report kind) noexcept {
        const auto bit = static_cast<std::uint16_t>(kind);
        if ((_reported & bit) != 0) return false;
        _reported |= bit;
        return true;
    }

    // server_host (the inbound engine)
    core::stream_services stream_services() noexcept override { return {_reactor, _buffers, _streams, &_deadlines}; }
    const protocol::server_config& server_config() const noexcept override { return _server; }
    const server_settings& settings() const noexcept override { return _settings; }
    core::tls_context* tls_context() noexcept override { return _tls_context ? &*_tls_context : nullptr; }
    bool kernel_tls() const noexcept override { return _tls != nullptr && _tls->kernel; }
    bool stopping() const noexcept override { return _stopping; }
    // Draining (--drain, SIGUSR2, POST /api/v1/drain): no new message is taken.
    [[nodiscard]] bool draining() const noexcept { return _draining; }
    void count(server_event event, std::uint64_t n) noexcept override;
    bool may_report(server_report kind) noexcept override;
    void write_report(server_report kind, std::string_view text) noexcept override;
    void retire(server_connection& c) noexcept override { _front->retire(c); }

    // front_owner
    server_connection* make_connection(int fd, const inbound_peer& from, listener_kind kind) noexcept override;
    // A malformed, late or cut-off PROXY header from a balancer: counted, said on stderr.
    void on_proxy_failed(const sockaddr* balancer, proxy_outcome outcome, std::string_view why) noexcept override;
    void on_refused(const sockaddr* peer, core::refusal why, std::string_view refusal_line) noexcept override;
    void on_connection_gone() noexcept override;

    void on_turn_end() noexcept override;

    // http_tls_source (--http-tls): the context SMTP uses, and its engine.
    const core::tls_context* http_tls_context() noexcept override { return tls_context(); }
    core::tls_engine http_tls_engine() const noexcept override {
        return kernel_tls() ? core::tls_engine::kernel : core::tls_engine::memory;
    }

private:
    // The stop request (a MSG_RING from request_stop).
    void on_stop_request(int res, std::uint32_t flags) noexcept;

    std::string init();
    void begin_stop() noexcept;
    void tick() noexcept;
    // Takes a reloaded config's live flags (inbound_limits::live).
    void apply_live(const inbound_limits::live_settings& next) noexcept;
    void publish_counters() noexcept;
    // The warm-up counts, into inbound_limits::warmup_counts, when they changed; false if the
    // relay held the buffer (try again).
    bool publish_warmup() noexcept;
    void tick_drain() noexcept;
    // Stopping: drained, and every shard settled (or the grace period over).
    [[nodiscard]] bool settled_for_exit() noexcept;
    // Stopping: the Redis connection (if any) closed, after its last answers.
    [[nodiscard]] bool redis_closed() noexcept;
    // Builds this shard's server context from the relay's current credentials.
    [[nodiscard]] std::string build_tls_context();
    [[nodiscard]] bool drained() const noexcept;
    // Stopping: true once this shard and every other one are settled (shard_links::settle), or
    // once this shard is drained after its grace period.
    [[nodiscard]] bool may_exit() noexcept;

    // Fixed after construction.
    const unsigned _index;
    // The shard's own copies: SIGHUP's live flags (core::flag_descriptor::live) are copied in
    // at a tick (apply_live()), on this thread, so whatever reads them here needs no lock.
    core::config _config;
    protocol::server_config _server;
    server_settings _settings;
    std::uint64_t _live_generation = 0;  // of inbound_limits::live last applied
    std::uint64_t _warmup_version = 0;   // of the ledger's counts last published
    const core::kernel_features& _features;
    const retry_schedule& _schedule;
    const int _log_fd;
    std::vector<listener_spec> _listen;
    storage_factory _make_storage;
    const inbound_tls* _tls;       // null: no TLS
    inbound_auth* _auth;           // null: no AUTH
    dkim_signer* _dkim;            // null: no DKIM signing
    suppression_table* _suppression_table;  // the relay's; null: --no-suppression
    const std::uint64_t _suppression_generation;
    std::shared_future<void> _go;  // set by the relay once every shard's mailboxes are connected
    inbound_limits& _limits;       // shared with every shard (atomics)
    const shard_links& _links;     // the deliveries' cross-shard mailboxes (relay-owned)
    const protocol::bounce_rules& _bounce_rules;  // relay-owned, shared read-only by every shard

    // Shard-local.
    core::reactor _reactor;
    core::buffer_ring _buffers;
    core::stream_batch _streams;  // the turn's receive re-arms and batched sends
    std::optional<core::tls_context> _tls_context;
    std::uint64_t _tls_generation = 0;  // of the credentials _tls_context was built from
    core::work_return _work_return;
    protocol::dkim::signer_cache _dkim_cache;  // Ed25519 signed on the shard
    auth_wait_queue _auth_queue;
    std::int64_t _next_auth_pump_ms = 0;
    bool _auth_pump_wanted = false;
    std::unique_ptr<storage> _storage;
    std::unique_ptr<spool> _spool;
    std::unique_ptr<suppression_list> _suppressions;  // null: --no-suppression
    std::string _suppressed_reply;  // the 550's argument, made per refused RCPT
    std::unique_ptr<core::log_writer> _log;
    std::unique_ptr<core::dns_resolver> _dns;
    // --redis (issue 19): this shard's Redis connection and the leases of its sites' connections;
    // null without --redis. Destroyed after the delivery that uses them (declared before it).
    std::unique_ptr<core::redis_client> _redis;
    bool _redis_closing = false;  // stopping: shutdown() asked (redis_closed())
    std::unique_ptr<connection_leases> _leases;
    std::unique_ptr<delivery> _delivery;
    // Listeners and inbound connections; declared after what connections use (spool,
    // delivery, auth queue), so destroyed before it.
    std::unique_ptr<server_front> _front;
    core::deadline_list _deadlines;
    // The HTTP endpoint (issue 18): its request deadlines (--http-timeout), routes, listeners
    // and connections; null without --http.
    core::deadline_list _http_deadlines;
    std::vector<http_listen_spec> _http_listen;
    const metrics_sources* _metrics;
    std::unique_ptr<injector> _injector;  // POST /api/v1/inject; made with the HTTP endpoint
    std::unique_ptr<http_basic_auth> _http_auth;  // Basic credentials (null without --auth-users)
    const unsubscribe_links* const _unsubscribe;  // the relay's; null: no --unsubscribe-url
    core::work_pool* const _admin_pool;  // the relay's; null: GET /api/v1/suppressions answers 503
    std::unique_ptr<suppression_api> _suppression_api;  // with _http_api; before it: it points to it
    std::unique_ptr<http_api> _http_api;
    std::unique_ptr<core::http_server> _http;
    core::date_cache _dates;
    std::uint64_t _next_id = 0;
    std::int64_t _next_tick_ms = 0;
    std::int64_t _stop_deadline_ms = 0;
    bool _stopping = false;
    std::atomic<bool>* _drain_request;  // the relay's; also set by POST /api/v1/drain
    bool _draining = false;  // saw _drain_request: listeners closed
    bool _grace_over = false;
    bool _settled = false;  // counted in _links' settled()
    std::uint16_t _reported = 0;  // report kinds logged since the last tick
    std::string _fixed_buffers_refusal;  // the kernel's answer to the registration, if a refusal
    core::operation<&shard::on_stop_request> _stop{*this};

    // Written by this shard, read by other threads.
    std::atomic<int> _ring_fd{-1};
    std::atomic<bool> _finished{false};
    std::atomic<bool> _stop_sent{false};
    std::atomic<bool> _drained{false};
    shard_counters _counters;
    shard_snapshot_slot _snapshot;
};

}  // namespace ringrelay::queue
