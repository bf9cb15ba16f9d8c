// bench/spool_bench.cc: spool append with group commit (queue/spool.h) on the real disk
// (/var/tmp): N messages of 2 KiB appended in one turn become one write and one fdatasync.
// Reports messages/s and bytes/s per batch size, which is how group commit turns one
// fdatasync into many acknowledgements. Each batch is checked: every message committed ok.
// The disk's fdatasync latency dominates the small batches; run on a quiet machine.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/spool.h"
#include "queue/storage.h"

namespace {

using namespace ringrelay;

struct counter final : queue::commit_waiter {
    std::size_t ok = 0;
    std::size_t failed = 0;
    queue::spool* owner = nullptr;
    void committed(protocol::commit_result r) noexcept override {
        if (r == protocol::commit_result::ok) {
            ++ok;
        } else {
            ++failed;
        }
    }
};

void BM_Spool_GroupCommit(benchmark::State& state) {
    const auto batch = static_cast<std::size_t>(state.range(0));
    char tmpl[] = "/var/tmp/ringrelay-spool-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    const std::string dir = tmpl;
    {
        core::reactor reactor;
        if (reactor.init(256, core::probe_kernel_features())) std::abort();
        queue::disk_storage storage(reactor);
        queue::spool s(reactor, storage, dir + "/shard-0");
        if (!s.open()) std::abort();
        reactor.add_turn_hook(&s);
        const std::string message = "Received: from bench\r\nSubject: spool bench\r\n\r\n" + std::string(2000, 'x') + "\r\n";
        protocol::envelope env;
        env.helo = "bench.example";
        env.mail_from = "sender@example.org";
        env.rcpt_to = {"rcpt@example.net"};
        counter w;
        std::uint64_t id = 0;
        for (auto _ : state) {
            const std::size_t target = w.ok + batch;
            for (std::size_t i = 0; i < batch; ++i) {
                env.queue_id = ++id;
                s.append(env, "127.0.0.1", message, 1, &w);
            }
            // The appends are queued; the commit starts at the end of a loop turn, as it does
            // in a shard when the appends come from receive completions. A turn that does not
            // wait starts it; then wait for the write and fdatasync completions.
            if (!reactor.run_once(0)) std::abort();
            while (w.ok + w.failed < target)
                if (!reactor.run_once(100)) std::abort();
            if (w.failed != 0) std::abort();
        }
        reactor.remove_turn_hook(&s);
        state.SetItemsProcessed(static_cast<std::int64_t>(w.ok));
        state.SetBytesProcessed(static_cast<std::int64_t>(w.ok * message.size()));
        state.counters["fdatasyncs"] = benchmark::Counter(static_cast<double>(s.stats().commits));
    }
    std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Spool_GroupCommit)->Arg(1)->Arg(16)->Arg(64)->Arg(256)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
