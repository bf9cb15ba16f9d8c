// bench/spool_bench.cc: spool append with group commit (queue/spool.h) on the real disk
// (/var/tmp): N messages of 2 KiB appended in one turn become one write and one fdatasync.
// Reports messages/s and bytes/s per batch size, which is how group commit turns one
// fdatasync into many acknowledgements. Each batch is checked: every message committed ok.
// The disk's fdatasync latency dominates the small batches; run on a quiet machine.
// Also recovery (issue 15, "Recovery by descriptor"): recover_directory over a spool of N
// messages of S KiB, from the segments' indexes and by scanning them (every index moved
// aside), with the shard's visitor shape (no message list); each run is checked to see every
// message. And the cost the index adds to each committed record (segment_index_builder::add).
// Recovery reads what the page cache holds unless RR_BENCH_DROP_CACHES=1 (root) drops it
// before each run, which is the cold start a reboot gives.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/segment_index.h"
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

// Spools of `messages` messages of `kib` KiB in /var/tmp, each filled once (the indexed and
// the scanned case share it) and removed when main() ends.
class recovery_spools {
public:
    struct filled {
        std::string dir;
        std::size_t segments = 0;
    };
    recovery_spools() = default;
    recovery_spools(const recovery_spools&) = delete;
    recovery_spools& operator=(const recovery_spools&) = delete;
    ~recovery_spools() {
        for (const auto& [k, v] : _spools) std::filesystem::remove_all(v.dir);
    }
    const filled& get(std::size_t messages, std::size_t kib) {
        auto [it, fresh] = _spools.try_emplace({messages, kib});
        if (fresh) fill(it->second, messages, kib);
        return it->second;
    }

private:
    static void fill(filled& f, std::size_t messages, std::size_t kib) {
        char tmpl[] = "/var/tmp/ringrelay-recover-bench-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) std::abort();
        f.dir = tmpl;
        core::reactor reactor;
        if (reactor.init(256, core::probe_kernel_features())) std::abort();
        queue::disk_storage storage(reactor);
        {
            queue::spool s(reactor, storage, f.dir + "/shard-0");
            if (!s.open()) std::abort();
            reactor.add_turn_hook(&s);
            std::string message = "Received: from bench\r\nSubject: recovery bench\r\n\r\n";
            message.append(kib * 1024 - message.size() - 2, 'x').append("\r\n");  // kib KiB exactly
            protocol::envelope env;
            env.helo = "bench.example";
            env.mail_from = "sender@example.org";
            env.rcpt_to = {"rcpt@example.net"};
            // Holds the segment of every committed message, as the delivery does for queued
            // ones: otherwise the spool deletes full segments with nothing live in them.
            struct holder final : queue::commit_waiter {
                queue::spool* owner = nullptr;
                std::size_t ok = 0;
                std::size_t failed = 0;
                void committed(protocol::commit_result r) noexcept override {
                    if (r != protocol::commit_result::ok) {
                        ++failed;
                        return;
                    }
                    ++ok;
                    owner->hold_segment(owner->committed_segment());
                }
            } w;
            w.owner = &s;
            for (std::size_t done = 0; done < messages;) {
                const std::size_t batch = std::min<std::size_t>(256, messages - done);
                for (std::size_t i = 0; i < batch; ++i) {
                    env.queue_id = (done + i + 1) << 8;
                    s.append(env, "127.0.0.1", message, 1, &w);
                }
                done += batch;
                if (!reactor.run_once(0)) std::abort();
                while (w.ok + w.failed < done || !s.idle())
                    if (!reactor.run_once(100)) std::abort();
                if (w.failed != 0) std::abort();
            }
            reactor.remove_turn_hook(&s);
        }  // closed cleanly: the last segment is indexed too
        for (const auto& e : std::filesystem::directory_iterator(f.dir + "/shard-0"))
            f.segments += e.path().extension() == ".seg";
    }
    std::map<std::pair<std::size_t, std::size_t>, filled> _spools;
};

void drop_caches() {
    const char* want = std::getenv("RR_BENCH_DROP_CACHES");
    if (want == nullptr || std::string(want) != "1") return;
    ::sync();
    const int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "3", 1) != 1) std::abort();
    ::close(fd);
}

struct counting_visitor final : queue::record_visitor {
    std::size_t messages = 0;
    std::uint64_t bytes = 0;
    void on_record(std::uint64_t, const queue::decoded_message& r) override {
        ++messages;
        bytes += r.message_size;
    }
};

// Args: messages, KiB per message, 1 = from the indexes / 0 = scanned.
void BM_Spool_Recover(benchmark::State& state, recovery_spools* spools) {
    const auto messages = static_cast<std::size_t>(state.range(0));
    const auto kib = static_cast<std::size_t>(state.range(1));
    const bool indexed = state.range(2) != 0;
    const recovery_spools::filled& fs = spools->get(messages, kib);
    const std::string shard = fs.dir + "/shard-0";
    const std::string aside = fs.dir + "/aside";
    std::filesystem::create_directories(aside);
    // Put the indexes where this case wants them.
    const std::string from = indexed ? aside : shard;
    const std::string to = indexed ? shard : aside;
    for (const auto& e : std::filesystem::directory_iterator(from))
        if (e.path().extension() == ".idx") std::filesystem::rename(e.path(), to + "/" + e.path().filename().string());
    std::uint64_t indexed_segments = 0;
    for (auto _ : state) {
        state.PauseTiming();
        drop_caches();
        state.ResumeTiming();
        counting_visitor v;
        auto r = queue::recover_directory(shard, &v, queue::recovery_listing::none);
        if (!r || v.messages != messages || v.bytes != messages * (kib * 1024) || !r->problems.empty()) {
            std::fprintf(stderr, "recovery saw %zu messages (%llu bytes) of %zu; %zu problem(s)\n", v.messages,
                         static_cast<unsigned long long>(v.bytes), messages, r ? r->problems.size() : 0);
            std::abort();
        }
        indexed_segments = r->indexed_segments;
    }
    if ((indexed_segments == fs.segments) != indexed) {  // the case measured what it says
        std::fprintf(stderr, "%llu of %zu segments indexed\n", static_cast<unsigned long long>(indexed_segments),
                     fs.segments);
        std::abort();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * messages));
    state.counters["segments"] = benchmark::Counter(static_cast<double>(fs.segments));
    state.counters["indexed"] = benchmark::Counter(static_cast<double>(indexed_segments));
}

// What indexing costs per committed record: the descriptor found and appended with its CRC.
void BM_SegmentIndex_Add(benchmark::State& state) {
    protocol::envelope env;
    env.queue_id = 1;
    env.helo = "bench.example";
    env.mail_from = "sender@example.org";
    env.rcpt_to = {"rcpt@example.net"};
    const std::string message(20 * 1024, 'x');
    std::string head;
    queue::encode_message_record(head, env, "127.0.0.1", 1, message, 42);
    queue::segment_index_builder b;
    b.start(1, 42);
    std::uint64_t offset = queue::segment_records_size;
    std::size_t records = 0;
    for (auto _ : state) {
        b.add(offset, head, message.size());
        offset += head.size() + message.size();
        if (++records == 3300) {  // a 64 MiB segment of 20 KiB messages
            if (b.finish(offset).empty()) std::abort();
            b.start(1, 42);
            offset = queue::segment_records_size;
            records = 0;
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_SegmentIndex_Add);

}  // namespace

int main(int argc, char** argv) {
    recovery_spools spools;
    // Scanned and indexed side by side for each shape; 200,000 x 20 KiB is a 4 GiB spool.
    benchmark::RegisterBenchmark("BM_Spool_Recover", BM_Spool_Recover, &spools)
        ->Args({20000, 20, 1})
        ->Args({20000, 20, 0})
        ->Args({200000, 20, 1})
        ->Args({200000, 20, 0})
        ->Iterations(3)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
