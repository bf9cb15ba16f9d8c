// tools/ringrelay.cc: the ringrelay daemon. Parses flags and the config file, starts one
// shard thread per core, and waits for SIGTERM/SIGINT: the first stops gracefully (sessions
// finish their transaction, bounded by --shutdown-timeout; the spool and log flush; exit 0),
// a second exits at once (exit 1). Acknowledged mail is on disk either way. SIGHUP re-reads
// the TLS certificate and key and --auth-users (a part that does not load stays as it was).
//
// Built a second time as ringrelay-powerloss (tests only, never installed) with
// RINGRELAY_POWER_LOSS_TEST: the spool then writes through queue::power_loss_storage, so a
// SIGKILL loses what a power cut would; RINGRELAY_TEST_NONDURABLE=1 in its environment also
// skips every fdatasync (a deliberately non-durable relay, for the crash test to catch).
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include "core/config.h"
#include "core/log.h"
#include "core/net.h"
#include "protocol/server_session.h"
#include "queue/bounce_rules.h"
#include "queue/relay.h"

using namespace ringrelay;

namespace {

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

int main(int argc, char** argv) {
    auto loaded = core::load_config(argc, argv);
    if (!loaded) {
        std::FILE* to = loaded.error().code == 0 ? stdout : stderr;
        std::fprintf(to, "%s\n", loaded.error().message.c_str());
        return loaded.error().code;
    }
    core::config config = std::move(*loaded);
    // The bounce classification rules (the embedded etc/bounce-classes.json and --bounce-classes
    // over it) are checked here, like the other flags: a file that does not load stops the start
    // with the file, the rule and the reason. Each shard's delivery loads its own copy.
    const auto bounce_rules = queue::load_bounce_rules(config.bounce_classes);
    if (!bounce_rules) {
        std::fprintf(stderr, "ringrelay: %s\n", bounce_rules.error().c_str());
        return 2;
    }
    const std::string bounce_summary = queue::describe(*bounce_rules, config.bounce_classes);
    if (config.list_spool) return list_spool(config);
    raise_fd_limit(config);

    // Signals are taken by this thread alone (sigtimedwait); shard threads inherit the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
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
    queue::relay node(std::move(config), [mode](core::reactor& r) -> std::unique_ptr<queue::storage> {
        return std::make_unique<queue::power_loss_storage>(r, mode);
    });
#else
    queue::relay node(std::move(config));
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
    std::string where;
    for (const core::endpoint& e : node.endpoints()) where += (where.empty() ? "" : ", ") + core::to_string(e);
    core::diag("listening on " + where + " with " + std::to_string(shards) + " shard(s); spool " + spool + " holds " +
               std::to_string(node.recovered_messages()) + " message(s)");

    bool stopping = false;
    for (;;) {
        timespec wait{0, 200 * 1000 * 1000};
        siginfo_t info{};
        const int sig = sigtimedwait(&signals, &info, &wait);
        if (sig == SIGHUP) {
            const std::string report = node.reload();
            for (std::size_t start = 0; start < report.size();) {
                std::size_t end = report.find('\n', start);
                if (end == std::string::npos) end = report.size();
                core::diag(report.substr(start, end - start));
                start = end + 1;
            }
        }
        if (sig == SIGTERM || sig == SIGINT) {
            if (stopping) {
                core::diag("second signal: exiting at once (acknowledged mail is already on disk)");
                std::_Exit(1);
            }
            stopping = true;
            core::diag("stopping: no new connections; sessions finish their transaction");
            node.request_stop();
        }
        if (stopping && node.finished()) break;
        if (!stopping && node.finished()) {
            core::diag("a shard stopped unexpectedly; shutting down");
            node.request_stop();
            stopping = true;
        }
    }
    node.join();
    core::diag("stopped: " + std::to_string(node.messages_queued()) + " message(s) queued in this run");
    return 0;
}
