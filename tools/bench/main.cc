// tools/bench/main.cc: ringrelay-bench, the SMTP load generator (issue 4). One thread per
// shard, each with its own io_uring; the connections and messages are divided among them.
//
// Usage:
//   ringrelay-bench --target ADDR:PORT --connections N (--messages M | --duration S)
//                   --size BYTES [--recipients R] [--rate MSGS_PER_S] [--domains d1:w1,d2:w2]
//                   [--chunking] [--no-pipelining] [--json] [--shards N] [--from ADDR]
//                   [--helo NAME] [--timeout S] [--max-messages-per-connection K] [--quiet]
//                   [--seed N]
// Examples:
//   ringrelay-bench --target 127.0.0.1:2525 --connections 50 --messages 100000 --size 2k
//   ringrelay-bench --target 127.0.0.1:2525 --connections 200 --duration 30s --size 100k
//                   --rate 5000 --domains gmail.com:5,yahoo.com:3,example.org:1 --json
//
// Closed loop by default (each connection sends its next message as soon as the previous one
// is answered); --rate makes it open loop at a fixed arrival rate, latencies counted from the
// scheduled times. On a terminal a progress line is redrawn on stderr every second; the
// summary goes to stdout (text, or one JSON object with --json; see stats.h for every field).
// Exit code 0 if every message was accepted, 1 if any failed (or nothing could connect
// within --timeout, or --messages was interrupted), 2 on a usage error. SIGINT/SIGTERM stop
// the run (QUIT, then the summary); a second one exits at once.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/reactor.h"
#include "tools/bench/message_template.h"
#include "tools/bench/options.h"
#include "tools/bench/shard.h"
#include "tools/bench/stats.h"

using namespace ringrelay;
using namespace ringrelay::bench;

namespace {

constexpr std::int64_t second_ns = 1'000'000'000;

struct shard_thread {
    std::unique_ptr<shard> engine;
    std::thread thread;
};

void print_progress(const bench_options& o, const std::vector<shard_thread>& shards, std::int64_t elapsed_ns,
                    std::uint64_t& last_completed) {
    std::uint64_t completed = 0, failed = 0;
    for (const shard_thread& s : shards) {
        completed += s.engine->progress_completed();
        failed += s.engine->progress_failed();
    }
    const std::uint64_t now_rate = completed - last_completed;
    last_completed = completed;
    const double elapsed = static_cast<double>(elapsed_ns) / 1e9;
    if (o.mode == run_mode::messages) {
        std::fprintf(stderr, "\r\033[K%llu/%llu messages, %llu msg/s, %llu failed, %.0f s",
                     static_cast<unsigned long long>(completed), static_cast<unsigned long long>(o.messages),
                     static_cast<unsigned long long>(now_rate), static_cast<unsigned long long>(failed), elapsed);
    } else {
        std::fprintf(stderr, "\r\033[K%llu messages, %llu msg/s, %llu failed, %.0f/%.0f s",
                     static_cast<unsigned long long>(completed), static_cast<unsigned long long>(now_rate),
                     static_cast<unsigned long long>(failed), elapsed, o.duration_seconds);
    }
    std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
    auto parsed = parse_options(argc, argv);
    if (!parsed) {
        std::FILE* to = parsed.error().code == 0 ? stdout : stderr;
        std::fprintf(to, "%s\n", parsed.error().message.c_str());
        return parsed.error().code;
    }
    const bench_options options = std::move(*parsed);

    // Signals are taken by this thread alone (sigtimedwait); shard threads inherit the mask.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    const core::kernel_features features = core::probe_kernel_features();
    if (!features.buf_ring || !features.recv_multishot) {
        std::fprintf(stderr, "ringrelay-bench: needs io_uring buffer rings and multishot recv (Linux 6.0+); %s\n",
                     core::describe(features).c_str());
        return 1;
    }
    const std::int64_t unix_us = core::unix_us();
    const auto run_id = static_cast<std::uint64_t>(unix_us) ^ (static_cast<std::uint64_t>(::getpid()) << 44);
    auto message = message_template::make(options.size, options.from, unix_us / 1'000'000, run_id);
    if (!message) {
        std::fprintf(stderr, "ringrelay-bench: %s\n", message.error().c_str());
        return 2;
    }

    run_control control;
    std::vector<shard_thread> shards(options.shards);
    for (unsigned i = 0; i < options.shards; ++i) {
        shards[i].engine = std::make_unique<shard>(options, *message, features, control, i, options.shards);
        shards[i].thread = std::thread([s = shards[i].engine.get()] { s->run(); });
    }
    std::string init_error;
    for (shard_thread& s : shards) {
        while (s.engine->current_phase() == shard::phase::starting)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (s.engine->current_phase() == shard::phase::failed && init_error.empty())
            init_error = s.engine->init_error();
    }
    if (!init_error.empty()) control.stop.store(true, std::memory_order_relaxed);
    control.start_ns = now_ns();
    control.go.store(true, std::memory_order_release);
    control.go.notify_all();
    if (!init_error.empty()) {
        for (shard_thread& s : shards) s.thread.join();
        std::fprintf(stderr, "ringrelay-bench: %s\n", init_error.c_str());
        return 1;
    }

    const bool progress = options.progress != progress_display::off && ::isatty(STDERR_FILENO) == 1;
    std::int64_t next_progress = control.start_ns + second_ns;
    std::uint64_t last_completed = 0;
    bool interrupted = false;
    bool gave_up = false;
    while (true) {
        const std::int64_t now = now_ns();
        const std::int64_t wait_ns = std::clamp<std::int64_t>(next_progress - now, 1'000'000, 100'000'000);
        timespec wait{0, static_cast<long>(wait_ns)};
        siginfo_t info{};
        const int sig = sigtimedwait(&signals, &info, &wait);
        if (sig == SIGINT || sig == SIGTERM) {
            if (interrupted) {
                std::fprintf(stderr, "\nringrelay-bench: second signal: exiting at once\n");
                std::_Exit(1);
            }
            interrupted = true;
            control.stop.store(true, std::memory_order_relaxed);
        }
        bool all_finished = true;
        for (const shard_thread& s : shards) {
            all_finished = all_finished && s.engine->current_phase() == shard::phase::finished;
            if (s.engine->gave_up() && !gave_up) {
                gave_up = true;
                control.stop.store(true, std::memory_order_relaxed);  // the others stop too
            }
        }
        if (all_finished) break;
        if (progress && now_ns() >= next_progress) {
            print_progress(options, shards, now_ns() - control.start_ns, last_completed);
            next_progress += second_ns;
        }
    }
    const std::int64_t end = now_ns();
    for (shard_thread& s : shards) s.thread.join();
    if (progress) std::fprintf(stderr, "\r\033[K");

    run_stats total;
    for (const shard_thread& s : shards) total.merge(s.engine->stats());
    run_report report;
    report.options = &options;
    report.gave_up = gave_up;
    report.interrupted = interrupted;
    const std::int64_t last = total.last_outcome_ns != 0 ? total.last_outcome_ns : end;
    report.seconds = static_cast<double>(last - control.start_ns) / 1e9;
    // With --duration, the rate is over the whole window: a server that stalled halfway must
    // not look as fast as it was before the stall.
    if (options.mode == run_mode::duration && report.seconds < options.duration_seconds)
        report.seconds = options.duration_seconds;
    const std::string summary =
        options.format == output_format::json ? format_json(report, total) : format_text(report, total);
    std::fwrite(summary.data(), 1, summary.size(), stdout);
    std::fflush(stdout);
    return exit_code(report, total);
}
