// queue/relay.h: the whole relay node in one object: probes the kernel, opens the log,
// starts one shard thread per --shards, and stops them (used by tools/ringrelay and by
// in-process tests). Not a shard: its methods run on the thread that owns the relay.
#pragma once
#include <atomic>
#include <expected>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "core/work_pool.h"
#include "protocol/bounce_class.h"
#include "protocol/server_session.h"
#include "queue/shaping_rules.h"
#include "queue/shard_links.h"
#include "queue/shard.h"
#include "queue/spool_lock.h"
#include "queue/suppression_table.h"
#include "queue/unsubscribe.h"

namespace ringrelay::queue {

// The mailbox "<postmaster>" and "<postmaster@HOSTNAME>" are delivered to: --postmaster, else
// postmaster@ the --hostname. An error (not a "local@domain" address by RFC 5321's grammar)
// names the flag and says what to give instead.
[[nodiscard]] std::expected<std::string, std::string> postmaster_address(const core::config& config);

class relay {
public:
    // bounce_rules: the table every shard classifies failures with (load_bounce_rules() of
    // config.bounce_classes; tools/ringrelay.cc loads it before anything starts, so that a file
    // that does not load stops the start). The relay keeps it, immutable, for its lifetime; the
    // shards share it read-only, without locks.
    relay(core::config config, protocol::bounce_rules bounce_rules, storage_factory make_storage = {});
    relay(const relay&) = delete;
    relay& operator=(const relay&) = delete;
    ~relay();  // stops and joins if still running

    // Starts every shard and waits until each is listening (or one failed).
    [[nodiscard]] std::expected<void, std::string> start();
    // The endpoints really bound (port 0 resolved).
    [[nodiscard]] const std::vector<core::endpoint>& endpoints() const noexcept { return _bound; }
    // The --http endpoints really bound (port 0 resolved).
    [[nodiscard]] const std::vector<core::endpoint>& http_endpoints() const noexcept { return _http_bound; }
    // The --http-tls endpoints really bound.
    [[nodiscard]] const std::vector<core::endpoint>& https_endpoints() const noexcept { return _https_bound; }
    [[nodiscard]] const core::kernel_features& features() const noexcept { return _features; }
    [[nodiscard]] std::size_t recovered_messages() const noexcept { return _recovered; }
    // After start(): the kTLS probe, and one line on inbound TLS (where the certificate came
    // from, its CN and fingerprint, or why TLS is off).
    [[nodiscard]] const core::ktls_probe& ktls() const noexcept { return _ktls; }
    [[nodiscard]] const std::string& tls_summary() const noexcept { return _tls_summary; }
    // One line on SMTP AUTH: off, or the users file, how many users, and where it is offered.
    [[nodiscard]] const std::string& auth_summary() const noexcept { return _auth_summary; }
    // One line on DKIM signing: off, or the keys (d= s= a=, file), c=, sign-all, x=.
    [[nodiscard]] const std::string& dkim_summary() const noexcept { return _dkim_summary; }
    // One line on traffic shaping: the rules loaded (queue/shaping_rules.h describe()).
    [[nodiscard]] const std::string& shaping_summary() const noexcept { return _shaping_summary; }
    // One line on egress sources, pools and selectors (queue/egress.h describe()).
    [[nodiscard]] const std::string& egress_summary() const noexcept { return _egress_summary; }
    // One line on the suppression list: off, or how many entries, where, and the TTL.
    [[nodiscard]] const std::string& suppression_summary() const noexcept { return _suppression_summary; }
    // One line on the one-click unsubscribe links (queue/unsubscribe.h).
    [[nodiscard]] const std::string& unsubscribe_summary() const noexcept { return _unsubscribe_summary; }
    // One line on the shards' registered buffers for streamed body reads: how many, or what the
    // kernel refused and that the reads use plain memory instead (queue/outbound.h).
    [[nodiscard]] const std::string& fixed_buffers_summary() const noexcept { return _fixed_buffers_summary; }
    // The relay's suppression list; null with --no-suppression (or before start()).
    [[nodiscard]] suppression_table* suppressions() noexcept { return _suppressions.get(); }
    // SIGHUP: re-reads --auth-users, the --dkim-key files and the TLS certificate and key
    // (--tls-cert/--tls-key, or the self-signed pair in SPOOL/tls). The text says what happened, one line per part; a
    // part that fails to load leaves what is in use.
    [[nodiscard]] std::string reload();
    // SIGHUP with the config read again (tools/ringrelay.cc: load_config over the same argv, so
    // the --config file under the flags; a config that does not load never gets here: the
    // running one stays whole). The changed flags that are live (core::flag_descriptor::live)
    // are applied: to the relay's config, then to every shard's copy at its next tick; a change
    // to any other flag is named in one line and not applied. Some live flags need what was
    // set up at start: --dkim-* needs DKIM on at start, --auth-users AUTH on at start and a
    // file still given, --tls-cert/--tls-key both given. Then reload() re-reads the files the
    // config names. The text says what happened, one line per part.
    [[nodiscard]] std::string reload_config(core::config next);
    // SIGUSR1 (logrotate): opens --log again by its name and puts the new file behind the
    // descriptor every shard writes to (dup3, atomic: each write goes whole to the old file or
    // the new one; only the rest of a write that came up short, e.g. on a full disk, can follow
    // into the new file). If the open fails, the old file stays in use. The text is the one line
    // to log.
    [[nodiscard]] std::string reopen_log();

    // The warm-up journal (queue/warmup.h): sums the shards' published counts for today and
    // rewrites SPOOL/warmup.json when they changed (write, fdatasync, rename), at most every
    // warmup_save_interval_ms unless `now` (shutdown, after join()). Main thread. The text is a
    // line to log (a failure, once until it heals, and the heal), else empty.
    [[nodiscard]] std::string save_warmup(bool now = false);
    static constexpr std::int64_t warmup_save_interval_ms = 5000;
    // One line on the warm-up journal at start: the counts restored, or why none were; empty
    // when there is neither a journal nor a warm-up.
    [[nodiscard]] const std::string& warmup_summary() const noexcept { return _warmup_summary; }

    // --drain, or a drain asked for while running (SIGUSR2; any thread): every shard closes its
    // SMTP listeners at its next tick and keeps delivering; sessions already open finish.
    void request_drain() noexcept { _drain.store(true, std::memory_order_release); }
    [[nodiscard]] bool draining() const noexcept { return _drain.load(std::memory_order_acquire); }
    // Every shard, at its last tick, had stopped listening, had no SMTP connection and nothing
    // left to deliver or to hand to another shard (a tick old: the caller waits for it to hold
    // across a few ticks before stopping).
    [[nodiscard]] bool drained() const noexcept;

    // Asks every shard to stop: listeners close, sessions finish their transaction (bounded
    // by --shutdown-timeout), the spool and log flush.
    void request_stop() noexcept;
    [[nodiscard]] bool finished() const noexcept;
    void join();

    [[nodiscard]] std::uint64_t messages_queued() const noexcept;
    [[nodiscard]] std::uint64_t messages_failed() const noexcept;
    [[nodiscard]] std::uint64_t recipients_delivered() const noexcept;
    // Streamed body pieces (queue/outbound.h) read so far, over every shard: into registered
    // buffers (READ_FIXED) and into plain memory (no buffer free, or none registered).
    struct body_reads {
        std::uint64_t fixed = 0;
        std::uint64_t plain = 0;
    };
    [[nodiscard]] body_reads streamed_body_reads() const noexcept;

private:
    // The shaping rules of the config: the flags' default rule, the shipped file (unless
    // --no-default-shaping), each --shaping FILE.
    [[nodiscard]] std::expected<shaping_load, std::string> load_shaping() const;
    // Loads --tls-cert/--tls-key, or makes/reuses the self-signed pair in SPOOL/tls.
    [[nodiscard]] std::expected<void, std::string> setup_tls();
    // Loads SPOOL/suppression, drops what expired, compacts it into a new generation and
    // fills the table the shards share.
    [[nodiscard]] std::expected<void, std::string> setup_suppression();
    // Reads SPOOL/warmup.json and gives each shard its part of today's counts.
    void setup_warmup();

    core::config _config;
    const protocol::bounce_rules _bounce_rules;  // before _shards: they read it
    protocol::server_config _server;
    // SPOOL/lock, held from start() until the relay is destroyed: one relay per spool, and no
    // offline command on a running relay's spool.
    std::optional<spool_lock> _lock;
    core::kernel_features _features;
    storage_factory _make_storage;
    int _log_fd = -1;
    std::atomic<bool> _drain{false};  // before _shards: they read it at every tick
    core::reactor _control;  // sends the stop wake-ups (MSG_RING)
    inbound_limits _limits;  // before _shards: shards release into it when destroyed
    std::unique_ptr<inbound_tls> _tls;  // before _shards: they build their contexts from it
    std::unique_ptr<inbound_auth> _auth;  // before _shards: their connections' checks run on its pool
    std::string _auth_summary = "AUTH: off (no --auth-users)";
    std::unique_ptr<dkim_signer> _dkim;  // before _shards: their connections sign on its pool; null: no --dkim-key
    std::string _dkim_summary = "DKIM: off (no --dkim-key)";
    std::unique_ptr<suppression_table> _suppressions;  // before _shards: they read it; null: --no-suppression
    std::uint64_t _suppression_generation = 0;
    std::string _suppression_summary = "suppression: off (--no-suppression)";
    // Before _shards: GET /api/v1/suppressions reads the list's files on it (one thread: the
    // listings wait for each other, never for the shards); null without --http or suppression.
    std::unique_ptr<core::work_pool> _admin_pool;
    // Before _shards: their connections add the links, their HTTP endpoints verify them; null
    // without --unsubscribe-url.
    std::unique_ptr<unsubscribe_links> _unsubscribe;
    std::string _unsubscribe_summary = "unsubscribe links: off (no --unsubscribe-url)";
    std::string _shaping_summary;
    std::string _warmup_summary;
    std::string _warmup_written;  // the journal's content as last written (or read)
    bool _warmup_file = false;    // SPOOL/warmup.json exists
    std::int64_t _warmup_saved_ms = 0;
    std::string _warmup_error;    // the last save's failure, until one succeeds
    std::string _egress_summary;
    std::string _fixed_buffers_summary;
    core::ktls_probe _ktls;
    std::string _tls_summary;
    std::string _tls_cert_file;  // what setup_tls() loaded, for reload()
    std::string _tls_key_file;
    // Before _shards: their deliveries send through it. mailbox [i * shards + j] goes from
    // shard i to shard j (i != j); filled by start() once every shard's reactor exists.
    std::unique_ptr<shard_links> _links;
    // Before _shards: their HTTP endpoints read every shard's counters through it (/metrics).
    std::unique_ptr<metrics_sources> _metrics;
    std::vector<std::unique_ptr<shard>> _shards;
    std::vector<std::unique_ptr<std::promise<shard_init_result>>> _ready;
    std::promise<void> _go;
    std::shared_future<void> _go_future = _go.get_future().share();
    bool _go_set = false;
    std::vector<std::thread> _threads;
    std::vector<core::endpoint> _bound;
    std::vector<core::endpoint> _http_bound;
    std::vector<core::endpoint> _https_bound;
    std::size_t _recovered = 0;
    std::unique_ptr<retry_schedule> _schedule;
    bool _control_ready = false;
};

// The messages a spool directory holds (every shard-* subdirectory), for --list-spool.
struct spool_listing {
    std::vector<recovered_message> messages;
    std::vector<std::string> problems;
};
// The undelivered messages of every SPOOL/shard-K directory with K >= from_shard (all by default).
[[nodiscard]] std::expected<spool_listing, std::string> list_spool(const std::string& spool_dir,
                                                                   unsigned from_shard = 0);

}  // namespace ringrelay::queue
