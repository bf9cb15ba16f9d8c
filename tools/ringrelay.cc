// tools/ringrelay.cc: the ringrelay daemon. Parses flags and the config file, starts one
// shard thread per core, and waits for SIGTERM/SIGINT: the first stops gracefully (sessions
// finish their transaction, bounded by --shutdown-timeout; the spool and log flush; exit 0),
// a second exits at once (exit 1). Acknowledged mail is on disk either way. SIGHUP reads the
// config again (the same flags over the --config file: a config that does not load is refused
// whole and the running one stays), applies the flags that can change live and names those
// that need a restart (queue::relay::reload_config), then re-reads the TLS certificate and key,
// --auth-users, the DKIM keys and the shaping rules (a part that does not load stays as it was); SIGUSR1 reopens --log (logrotate). --drain, or SIGUSR2 while
// running, closes the SMTP listeners and exits 0 once nothing is left to deliver (--drain also
// makes the recovered mail due at once). A shard that stops by itself stops the relay: exit 1.
// Under systemd (Type=notify) it says READY=1 once listening, RELOADING=1/READY=1 around a
// reload and STOPPING=1 when it stops (core/sd_notify.h).
//
// Built a second time as ringrelay-powerloss (tests only, never installed) with
// RINGRELAY_POWER_LOSS_TEST: the spool then writes through queue::power_loss_storage, so a
// SIGKILL loses what a power cut would; RINGRELAY_TEST_NONDURABLE=1 in its environment also
// skips every fdatasync (a deliberately non-durable relay, for the crash test to catch).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/config.h"
#include "core/log.h"
#include "core/net.h"
#include "core/sd_notify.h"
#include "protocol/address.h"
#include "protocol/server_session.h"
#include "queue/bounce_rules.h"
#include "queue/relay.h"
#include "queue/spool_lock.h"
#include "queue/suppression.h"
#include "queue/suppression_file.h"

using namespace ringrelay;

namespace {

// How long every shard must have reported itself drained before a draining relay stops: a few
// of their once-a-second ticks, so a message between two shards is seen by one of them.
constexpr std::int64_t drain_settle_ms = 2500;

// systemd's notification, if the relay runs under it; a failure is said once and never fatal.
void notify(const std::string& state) {
    static bool reported = false;
    if (std::string e = core::sd_notify(state); !e.empty() && !reported) {
        reported = true;
        core::diag("systemd notification not sent: " + e);
    }
}

int list_spool(const core::config& c) {
    auto listing = queue::list_spool(c.spool);
    if (!listing) {
        std::fprintf(stderr, "ringrelay: %s\n", listing.error().c_str());
        return 1;
    }
    for (const std::string& p : listing->problems) std::fprintf(stderr, "ringrelay: spool: %s\n", p.c_str());
    std::printf("%zu message(s) in %s\n", listing->messages.size(), c.spool.c_str());
    for (const auto& m : listing->messages) {
        std::printf("%s %zu bytes, %zu recipient(s), from <%s>\n", protocol::format_queue_id(m.queue_id).c_str(),
                    m.size, m.recipients, m.mail_from.c_str());
    }
    return 0;
}

// --list-suppressed [TENANT], --suppress TENANT:ADDRESS, --unsuppress TENANT:ADDRESS: on the
// spool of a stopped relay (SPOOL/lock: a running relay holds it, and then they refuse).
// --suppress and --unsuppress write a new generation of the list (queue/suppression_file.h).
int suppression_command(const core::config& c) {
    const int commands = !c.list_suppressed.empty() + !c.suppress.empty() + !c.unsuppress.empty();
    if (commands > 1) {
        std::fprintf(stderr, "ringrelay: give one of --list-suppressed, --suppress and --unsuppress at a time\n");
        return 2;
    }
    auto ttl = queue::parse_suppression_ttl(c.suppression_ttl);
    if (!ttl) {
        std::fprintf(stderr, "ringrelay: --suppression-ttl: %s\n", ttl.error().c_str());
        return 2;
    }
    const bool listing = !c.list_suppressed.empty();
    const std::string& pair = listing ? c.list_suppressed : !c.suppress.empty() ? c.suppress : c.unsuppress;
    const char* flag = listing ? "--list-suppressed" : !c.suppress.empty() ? "--suppress" : "--unsuppress";
    std::string tenant = listing ? (pair == "*" ? std::string() : pair) : pair.substr(0, pair.find(':'));
    std::string address;
    if (!listing) {
        const auto colon = pair.find(':');
        // The address as RCPT takes it (RFC 5321 forward-path), compared without ASCII case.
        const std::string bracketed = colon == std::string::npos ? std::string() : "<" + pair.substr(colon + 1) + ">";
        const auto path = protocol::parse_path(bracketed, protocol::path_kind::forward_path);
        if (tenant.empty() || !path || path->postmaster_only || path->mailbox.empty()) {
            std::fprintf(stderr, "ringrelay: %s: expected TENANT:ADDRESS (an AUTH user or a sender domain, then a mail "
                         "address), got '%s'\n", flag, pair.c_str());
            return 2;
        }
        address.assign(path->mailbox);
    }
    queue::suppression_normalise(tenant);
    queue::suppression_normalise(address);
    const std::string dir = queue::suppression_directory(c.spool);
    if (listing && ::access(c.spool.c_str(), F_OK) != 0) {
        std::printf("0 suppressed address(es) in %s\n", c.spool.c_str());  // no spool, no list
        return 0;
    }
    auto lock = queue::spool_lock::acquire(c.spool);
    if (!lock) {
        std::fprintf(stderr, "ringrelay: %s%s\n", lock.error().text.c_str(), lock.error().busy ? "; stop it first" : "");
        return 1;
    }
    auto state = queue::load_suppressions(dir);
    if (!state) {
        std::fprintf(stderr, "ringrelay: %s\n", state.error().c_str());
        return 1;
    }
    for (const std::string& p : state->problems) std::fprintf(stderr, "ringrelay: suppression list: %s\n", p.c_str());
    const auto now_us = static_cast<std::uint64_t>(core::unix_us());
    queue::drop_expired(state->entries, now_us, *ttl);
    if (listing) {
        std::size_t n = 0;
        for (const auto& e : state->entries) n += tenant.empty() || e.tenant == tenant ? 1 : 0;
        std::printf("%zu suppressed address(es) in %s%s%s\n", n, c.spool.c_str(), tenant.empty() ? "" : " for ",
                    tenant.c_str());
        // TENANT ADDRESS SINCE SOURCE [QUEUE_ID]: one line per entry, sorted by tenant and address.
        for (const auto& e : state->entries) {
            if (!tenant.empty() && e.tenant != tenant) continue;
            const bool bounce = e.source == queue::suppression_source::hard_bounce;
            std::printf("%s %s %s %s%s%s\n", e.tenant.c_str(), e.address.c_str(),
                        core::iso8601_us(static_cast<std::int64_t>(e.time_us)).c_str(),
                        std::string(queue::suppression_source_name(e.source)).c_str(), bounce && e.queue_id != 0 ? " " : "",
                        bounce && e.queue_id != 0 ? protocol::format_queue_id(e.queue_id).c_str() : "");
        }
        return 0;
    }
    auto it = std::find_if(state->entries.begin(), state->entries.end(), [&](const queue::suppression_entry& e) {
        return e.tenant == tenant && e.address == address;
    });
    if (!c.suppress.empty()) {
        queue::suppression_entry e{tenant, address, now_us, 0, queue::suppression_source::operator_added, {}, {}};
        if (it != state->entries.end()) {
            *it = std::move(e);
        } else {
            state->entries.push_back(std::move(e));
        }
    } else if (it == state->entries.end()) {
        std::fprintf(stderr, "ringrelay: --unsuppress: %s is not on %s's suppression list\n", address.c_str(),
                     tenant.c_str());
        return 1;
    } else {
        state->entries.erase(it);
    }
    if (auto ok = queue::write_suppressions(dir, state->generation + 1, state->entries); !ok) {
        std::fprintf(stderr, "ringrelay: %s\n", ok.error().c_str());
        return 1;
    }
    std::printf("%s %s %s's suppression list\n", address.c_str(), c.suppress.empty() ? "taken off" : "put on",
                tenant.c_str());
    return 0;
}

// Connections are file descriptors: raise the soft limit to the hard one, and say so when
// --max-connections cannot be reached under it (accept would fail with EMFILE first).
void raise_fd_limit(const core::config& c) {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &lim);
        (void)getrlimit(RLIMIT_NOFILE, &lim);
    }
    // Room for the spool, log, listeners, rings and outbound connections.
    const rlim_t reserve = 256 + static_cast<rlim_t>(c.max_connections_per_destination) * 64;
    if (c.max_connections != 0 && lim.rlim_cur != RLIM_INFINITY && c.max_connections + reserve > lim.rlim_cur)
        core::diag("warning: --max-connections " + std::to_string(c.max_connections) +
                   " is above what the open-file limit allows (" + std::to_string(lim.rlim_cur) +
                   "); raise it (ulimit -n / LimitNOFILE=) or lower --max-connections");
}

}  // namespace

// jemalloc's options (read at its start-up; ignored by a sanitizer build, which keeps the
// system malloc): freed pages go back to the kernel within about a second, from jemalloc's
// own background thread, so an idle relay's RSS shows its live memory rather than the bodies
// it has freed (a queue of deferred mail keeps no bodies: docs/ARCHITECTURE.md "The spool").
extern "C" {
// NOLINTNEXTLINE: the name jemalloc looks for.
const char* malloc_conf = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0";
}

int main(int argc, char** argv) {
    auto loaded = core::load_config(argc, argv);
    if (!loaded) {
        std::FILE* to = loaded.error().code == 0 ? stdout : stderr;
        std::fprintf(to, "%s\n", loaded.error().message.c_str());
        return loaded.error().code;
    }
    core::config config = std::move(*loaded);
    // The bounce classification rules (the embedded etc/bounce-classes.json and --bounce-classes
    // over it), loaded once, here, like the other flags: a file that does not load stops the start
    // with the file, the rule and the reason. The relay keeps the table; every shard reads it.
    auto bounce_rules = queue::load_bounce_rules(config.bounce_classes);
    if (!bounce_rules) {
        std::fprintf(stderr, "ringrelay: %s\n", bounce_rules.error().c_str());
        return 2;
    }
    const std::string bounce_summary = queue::describe(*bounce_rules, config.bounce_classes);
    if (config.list_spool) return list_spool(config);
    if (!config.list_suppressed.empty() || !config.suppress.empty() || !config.unsuppress.empty())
        return suppression_command(config);
    raise_fd_limit(config);

    // Signals are taken by this thread alone (sigtimedwait); shard threads inherit the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGUSR1);
    sigaddset(&signals, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    const unsigned shards = config.shards;
    const std::string spool = config.spool;
#ifdef RINGRELAY_POWER_LOSS_TEST
    const char* nondurable_env = std::getenv("RINGRELAY_TEST_NONDURABLE");
    const bool nondurable = nondurable_env != nullptr && std::string_view(nondurable_env) == "1";
    const auto mode = nondurable ? queue::power_loss_storage::sync_mode::skipped
                                 : queue::power_loss_storage::sync_mode::durable;
    core::diag(std::string("TEST BUILD: power-loss storage (unsynced writes die with the process)") +
               (nondurable ? "; fdatasync SKIPPED: acknowledged mail is NOT durable" : ""));
    queue::relay node(std::move(config), std::move(bounce_rules->table),
                      [mode](core::reactor& r) -> std::unique_ptr<queue::storage> {
                          return std::make_unique<queue::power_loss_storage>(r, mode);
                      });
#else
    queue::relay node(std::move(config), std::move(bounce_rules->table));
#endif
    if (auto started = node.start(); !started) {
        core::diag(started.error());
        return 1;
    }
    // Inbound TLS: whether the kernel could take the record layer (kTLS), and where the
    // certificate came from. Printed before "listening on" (tests wait for that line).
    core::diag(node.ktls().detail);
    core::diag(node.tls_summary());
    core::diag(node.auth_summary());
    core::diag(node.dkim_summary());
    core::diag(bounce_summary);
    core::diag(node.suppression_summary());
    core::diag(node.unsubscribe_summary());
    core::diag(node.shaping_summary());
    core::diag(node.egress_summary());
    if (!node.warmup_summary().empty()) core::diag(node.warmup_summary());
    core::diag(node.fixed_buffers_summary());
    std::string http_where;
    for (const core::endpoint& e : node.http_endpoints())
        http_where += (http_where.empty() ? "" : ", ") + core::to_string(e);
    for (const core::endpoint& e : node.https_endpoints())
        http_where += (http_where.empty() ? "https://" : ", https://") + core::to_string(e);
    core::diag(http_where.empty() ? "HTTP: off (no --http, no --http-tls)"
                                  : "HTTP on " + http_where + " (GET / status page, GET /metrics, /api/v1/ queue control, inject and suppressions)");
    std::string where;
    for (const core::endpoint& e : node.endpoints()) where += (where.empty() ? "" : ", ") + core::to_string(e);
    if (node.draining()) where = "nothing (--drain: delivering the spool, then exiting)";
    core::diag("listening on " + where + " with " + std::to_string(shards) + " shard(s); spool " + spool + " holds " +
               std::to_string(node.recovered_messages()) + " message(s)");
    // systemd (Type=notify): ready once listening. Without $NOTIFY_SOCKET nothing is sent.
    std::string status = "listening on " + where;
    notify("READY=1\nSTATUS=" + status + "\nMAINPID=" + std::to_string(::getpid()));

    bool stopping = false;
    bool shard_lost = false;
    bool drain_seen = false;
    std::int64_t drained_since_ms = -1;  // every shard drained at its tick since then
    for (;;) {
        timespec wait{0, 200 * 1000 * 1000};
        siginfo_t info{};
        const int sig = sigtimedwait(&signals, &info, &wait);
        if (sig == SIGHUP) {
            notify("RELOADING=1\nSTATUS=reloading");
            // The same argv: the flags still override the file, which is read again.
            auto next = core::load_config(argc, argv);
            const std::string report =
                next ? node.reload_config(std::move(*next))
                     : "reload: the config does not load, so nothing changed (the running one stays): " +
                           next.error().message;
            for (std::size_t start = 0; start < report.size();) {
                std::size_t end = report.find('\n', start);
                if (end == std::string::npos) end = report.size();
                core::diag(report.substr(start, end - start));
                start = end + 1;
            }
            notify("READY=1\nSTATUS=" + status);
        }
        if (sig == SIGUSR1) core::diag(node.reopen_log());
        if (sig == SIGUSR2 && !stopping && !node.draining()) {
            core::diag("SIGUSR2: draining: no new SMTP connections; delivering what is queued, then exiting");
            node.request_drain();
        }
        if (sig == SIGTERM || sig == SIGINT) {
            if (stopping) {
                core::diag("second signal: exiting at once (acknowledged mail is already on disk)");
                std::_Exit(1);
            }
            stopping = true;
            core::diag("stopping: no new connections; sessions finish their transaction");
            notify("STOPPING=1\nSTATUS=stopping");
            node.request_stop();
        }
        if (!stopping && node.draining()) {
            if (!drain_seen) {
                drain_seen = true;
                status = "draining: delivering the queue, then exiting";
                notify("STATUS=" + status);
            }
            // Each shard says whether it is drained at its tick (once a second); a message handed
            // between shards is seen by one of them, so the verdict must hold for a few ticks.
            const std::int64_t now = core::monotonic_ms();
            if (!node.drained()) {
                drained_since_ms = -1;
            } else if (drained_since_ms < 0) {
                drained_since_ms = now;
            } else if (now - drained_since_ms >= drain_settle_ms) {
                core::diag("drained: nothing left to deliver; stopping");
                notify("STOPPING=1\nSTATUS=drained");
                stopping = true;
                node.request_stop();
            }
        }
        if (std::string line = node.save_warmup(); !line.empty()) core::diag(line);
        if (stopping && node.finished()) break;
        if (!stopping && node.finished()) {
            core::diag("a shard stopped unexpectedly; shutting down (exit 1)");
            notify("STOPPING=1\nSTATUS=a shard stopped unexpectedly");
            node.request_stop();
            stopping = true;
            shard_lost = true;
        }
    }
    node.join();
    if (std::string line = node.save_warmup(true); !line.empty()) core::diag(line);
    const queue::relay::body_reads reads = node.streamed_body_reads();
    core::diag("stopped: " + std::to_string(node.messages_queued()) + " message(s) queued in this run; " +
               "streamed body pieces read into registered buffers: " + std::to_string(reads.fixed) +
               ", into plain memory: " + std::to_string(reads.plain));
    return shard_lost ? 1 : 0;
}
