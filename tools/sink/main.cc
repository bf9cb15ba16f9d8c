// tools/sink/main.cc: ringrelay-sink, a fast SMTP receiving server with fault injection and
// enforced per-client limits, for tests and benchmarks (issue 4). Parses flags (options.h),
// starts one shard thread per core (shard.h: io_uring, SO_REUSEPORT, multishot accept and
// recv, batched sends; the same pure protocol::server_session as the relay), prints a
// statistics line a second on stderr and the summary on stdout at exit.
//
// --save DIR writes one file per accepted message through io_uring (format: save_format.h,
// also in --help): DIR/.<QUEUE-ID>.tmp, renamed to DIR/<QUEUE-ID>.eml once complete, before
// the message is counted and answered 250. So when --expect N exits, N complete files exist.
// Files are not fsynced: the sink is a test peer, not a store.
//
// --tls: STARTTLS (RFC 3207) with --tls-cert/--tls-key, or a self-signed certificate for
// --hostname kept in --tls-dir (default: a temporary directory removed at exit); the records
// go to the kernel (kTLS) where the relay's start-up probe says it takes them (--no-ktls: not).
//
// Signals are taken by this thread alone (sigtimedwait; shard threads inherit the mask):
// SIGINT/SIGTERM stop the sink gracefully (a second one exits at once with 1); SIGUSR1 is
// raised by the shard that accepts the --expect'th message.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/net.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "tools/sink/options.h"
#include "tools/sink/shard.h"
#include "tools/sink/stats.h"

using namespace ringrelay;

namespace {

int open_save_dir(const std::string& dir) {
    if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) return -errno;
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void say(const std::string& line) { std::fprintf(stderr, "ringrelay-sink: %s\n", line.c_str()); }

// A temporary directory for the self-signed pair, removed (with the pair) at exit.
struct temp_tls_dir {
    std::string path;
    ~temp_tls_dir() {
        if (path.empty()) return;
        for (const char* f : {"/cert.pem", "/key.pem"}) (void)::unlink((path + f).c_str());
        (void)::rmdir(path.c_str());
    }
};

}  // namespace

int main(int argc, char** argv) {
    auto parsed = sink::parse_options(argc, argv);
    if (!parsed) {
        std::FILE* to = parsed.error().code == 0 ? stdout : stderr;
        std::fprintf(to, "%s\n", parsed.error().message.c_str());
        return parsed.error().code;
    }
    const sink::sink_options options = std::move(*parsed);

    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    const core::kernel_features features = core::probe_kernel_features();
    if (!features.buf_ring || !features.multishot_accept || !features.recv_multishot || !features.msg_ring) {
        say("this kernel lacks io_uring features the sink needs (Linux 6.0 or later: provided buffer rings, "
            "multishot accept/recv, MSG_RING); " + core::describe(features));
        return 1;
    }
    say(core::describe(features));
    int save_fd = -1;
    if (!options.save_dir.empty()) {
        save_fd = open_save_dir(options.save_dir);
        if (save_fd < 0) {
            say("--save " + options.save_dir + ": " + std::strerror(-save_fd));
            return 1;
        }
    }
    temp_tls_dir temp_dir;
    std::optional<core::tls_credentials> credentials;
    bool kernel_tls = false;
    if (options.tls) {
        std::string cert = options.tls_cert;
        std::string key = options.tls_key;
        std::string origin = "configured";
        if (cert.empty()) {
            std::string dir = options.tls_dir;
            if (dir.empty()) {
                char name[] = "/tmp/ringrelay-sink-tls-XXXXXX";
                if (::mkdtemp(name) == nullptr) {
                    say(std::string("--tls: cannot make a temporary directory: ") + std::strerror(errno));
                    return 1;
                }
                temp_dir.path = name;
                dir = name;
            }
            auto files = core::ensure_self_signed(dir, options.hostname);
            if (!files) {
                say("--tls: " + files.error().text);
                return 1;
            }
            cert = files->cert_file;
            key = files->key_file;
            origin = "self-signed";
        }
        auto loaded = core::tls_credentials::load_pem(cert, key);
        if (!loaded) {
            say("--tls: " + loaded.error().text);
            return 1;
        }
        credentials.emplace(std::move(*loaded));
        say("STARTTLS offered; certificate " + cert + " (" + origin + ", CN=" + credentials->common_name() + ", " +
            credentials->sha256_fingerprint() + ")");
        // The relay's kTLS rule: the kernel takes the records only where a real handshake
        // probe shows it takes both directions.
        const core::ktls_decision ktls = core::decide_ktls(core::probe_ktls(), options.ktls, *credentials);
        kernel_tls = ktls.kernel;
        say(ktls.detail);
    }
    protocol::server_config server;
    server.hostname = options.hostname;
    if (credentials) server.tls = protocol::tls_offer::starttls;
    server.max_message_size = options.max_message_size;
    server.max_recipients = 1000;
    server.max_errors = 20;

    sink::sink_shared shared(options, save_fd);
    shared.tls = credentials ? &*credentials : nullptr;
    shared.kernel_tls = kernel_tls;
    core::reactor control;  // only for the MSG_RING stop requests
    if (auto ec = control.init(64, core::kernel_features{}); ec) {
        say("io_uring setup failed: " + ec.message());
        return 1;
    }
    std::vector<std::unique_ptr<sink::shard>> shards;
    std::vector<std::unique_ptr<std::promise<sink::shard_init_result>>> ready;
    std::vector<std::thread> threads;
    std::vector<core::endpoint> listen = options.listen;
    std::vector<core::endpoint> bound;
    auto stop_all = [&](std::uint32_t linger_ms) {
        for (auto& s : shards) s->request_stop(control, linger_ms);
        (void)io_uring_submit(&control.ring());
    };
    auto join_all = [&] {
        for (std::thread& t : threads)
            if (t.joinable()) t.join();
    };
    for (unsigned i = 0; i < options.shards; ++i) {
        shards.push_back(std::make_unique<sink::shard>(i, shared, server, features, listen));
        ready.push_back(std::make_unique<std::promise<sink::shard_init_result>>());
        auto result = ready.back()->get_future();
        sink::shard* s = shards.back().get();
        std::promise<sink::shard_init_result>* r = ready.back().get();
        threads.emplace_back([s, r] { s->run(*r); });
        sink::shard_init_result init = result.get();
        if (!init.error.empty()) {
            say("shard " + std::to_string(i) + ": " + init.error);
            stop_all(0);
            join_all();
            return 1;
        }
        if (i == 0) {
            // Every shard binds the same endpoints (SO_REUSEPORT): a port 0 becomes shard 0's.
            listen = init.bound;
            bound = init.bound;
        }
    }
    std::string where;
    for (const core::endpoint& e : bound) where += (where.empty() ? "" : ", ") + core::to_string(e);
    say("listening on " + where + " with " + std::to_string(options.shards) + " shard(s); seed " +
        std::to_string(options.seed) + (options.save_dir.empty() ? "" : "; saving to " + options.save_dir));

    std::vector<const sink::shard_stats*> stats;
    for (const auto& s : shards) stats.push_back(&s->stats());
    const std::int64_t started_ns = sink::monotonic_ns();
    std::int64_t last_line_ns = started_ns;
    sink::totals last_line = sink::snapshot(stats);
    bool expect_met = false;
    int exit_code = 0;
    for (;;) {
        const std::int64_t now = sink::monotonic_ns();
        if (options.duration_seconds != 0 &&
            now - started_ns >= static_cast<std::int64_t>(options.duration_seconds) * 1000000000) {
            break;
        }
        const std::int64_t next_line = last_line_ns + 1000000000;
        std::int64_t wait_ns = std::max<std::int64_t>(next_line - now, 1000000);
        wait_ns = std::min<std::int64_t>(wait_ns, 1000000000);
        timespec wait{static_cast<time_t>(wait_ns / 1000000000), static_cast<long>(wait_ns % 1000000000)};
        siginfo_t info{};
        const int sig = sigtimedwait(&signals, &info, &wait);
        if (sig == SIGUSR1 || (options.expect != 0 && shared.received_total.load() >= options.expect)) {
            expect_met = true;
            break;
        }
        if (sig == SIGTERM || sig == SIGINT) break;
        if (std::any_of(shards.begin(), shards.end(), [](const auto& s) { return s->finished(); })) {
            say("a shard stopped unexpectedly; shutting down");
            exit_code = 1;
            break;
        }
        const std::int64_t after = sink::monotonic_ns();
        if (after >= next_line) {
            const sink::totals t = sink::snapshot(stats);
            if (options.progress == sink::progress_lines::every_second) {
                say(sink::progress_line(t, last_line, static_cast<double>(after - last_line_ns) / 1e9));
            }
            last_line = t;
            last_line_ns = after;
        }
    }
    if (options.progress == sink::progress_lines::every_second) {
        // The last, partial interval, so the last line has the final totals.
        const std::int64_t now = sink::monotonic_ns();
        say(sink::progress_line(sink::snapshot(stats), last_line, static_cast<double>(now - last_line_ns) / 1e9));
    }
    // Met --expect: clients that are done get a second to QUIT before the 421s.
    stop_all(expect_met ? 1000 : 0);
    // A second signal while the shards drain exits at once.
    std::thread([signals] {
        siginfo_t info{};
        timespec forever{3600, 0};
        for (;;) {
            const int sig = sigtimedwait(&signals, &info, &forever);
            if (sig == SIGTERM || sig == SIGINT) {
                say("second signal: exiting at once");
                std::_Exit(1);
            }
        }
    }).detach();
    join_all();

    const sink::totals t = sink::snapshot(stats);
    // The throughput figure: from the first connection to the last message answered 250.
    std::int64_t first = 0;
    std::int64_t last = 0;
    for (const auto& s : shards) {
        const std::int64_t f = s->first_connection_ns();
        if (f != 0 && (first == 0 || f < first)) first = f;
        last = std::max(last, s->last_message_ns());
    }
    const double active = first != 0 && last > first ? static_cast<double>(last - first) / 1e9 : 0.0;
    if (options.format == sink::output_format::json) {
        std::fputs(sink::summary_json(t, active, options.expect).c_str(), stdout);
    } else {
        std::fputs(sink::summary_text(t, active, options.expect).c_str(), stdout);
    }
    std::fflush(stdout);
    if (options.expect != 0 && !expect_met && t.received < options.expect) {
        say("expected " + std::to_string(options.expect) + " message(s), got " + std::to_string(t.received));
        exit_code = 1;
    }
    if (save_fd >= 0) ::close(save_fd);
    return exit_code;
}
