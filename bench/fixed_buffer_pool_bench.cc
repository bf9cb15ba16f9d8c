// bench/fixed_buffer_pool_bench.cc: reading a streamed body as queue/outbound.cc does (a
// 30 MiB file from the page cache in 256 KiB pieces, one read in flight at a time, each issued
// when the previous completed, on one core::reactor), into a registered buffer
// (core::fixed_buffer_pool, IORING_OP_READ_FIXED) and into a plain buffer (IORING_OP_READ),
// in the same run. Bytes/s per case. Before timing, each case reads the file once and checks
// every piece against the file's bytes. The file is in /var/tmp (a real file system; read
// once before timing, so the page cache holds it): what differs between the cases is the
// kernel's copy into user memory, not the disk.
#include <benchmark/benchmark.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/reactor.h"

namespace {

using namespace ringrelay;

constexpr std::size_t file_size = 30u << 20;
constexpr std::size_t piece_size = 256u << 10;

struct read_done final : core::completion {
    int res = 1;
    void complete(int r, std::uint32_t) noexcept override { res = r; }
};

// The body file, made per case before timing: numbered CRLF lines.
struct body_file {
    body_file() {
        char path[] = "/var/tmp/ringrelay-fixed-bench-XXXXXX";
        fd = ::mkstemp(path);
        if (fd < 0) std::abort();
        ::unlink(path);
        for (int i = 0; bytes.size() < file_size; ++i) bytes += "line " + std::to_string(i) + " of a large body\r\n";
        bytes.resize(file_size);
        if (::pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) std::abort();
    }
    ~body_file() { ::close(fd); }
    int fd = -1;
    std::string bytes;
};

enum class memory { fixed, plain };

// Reads the whole file piece by piece into `buffer`; `check`: compare every piece.
bool read_all(core::reactor& r, const body_file& f, char* buffer, int index, memory kind, bool check) {
    for (std::size_t at = 0; at < file_size; at += piece_size) {
        read_done done;
        if (kind == memory::fixed) {
            io_uring_prep_read_fixed(r.sqe(&done), f.fd, buffer, piece_size, at, index);
        } else {
            io_uring_prep_read(r.sqe(&done), f.fd, buffer, piece_size, at);
        }
        while (done.res == 1)
            if (!r.run_once(1000)) return false;
        if (done.res != static_cast<int>(piece_size)) return false;
        if (check && std::memcmp(buffer, f.bytes.data() + at, piece_size) != 0) return false;
    }
    return true;
}

void run(benchmark::State& state, memory kind) {
    const body_file f;
    core::reactor r;
    if (r.init(64, core::probe_kernel_features())) {
        state.SkipWithError("io_uring setup failed");
        return;
    }
    std::string plain(piece_size, '\0');
    char* buffer = plain.data();
    int index = 0;
    if (kind == memory::fixed) {
        if (auto ec = r.fixed_buffers().init(r.ring(), 1, piece_size); ec) {
            state.SkipWithError(("registering the buffer: " + ec.message()).c_str());
            return;
        }
        const core::fixed_buffer b = r.fixed_buffers().acquire();
        buffer = b.data;
        index = b.index;
    }
    if (!read_all(r, f, buffer, index, kind, true)) {
        state.SkipWithError("a piece read differs from the file");
        return;
    }
    for (auto _ : state) {
        if (!read_all(r, f, buffer, index, kind, false)) {
            state.SkipWithError("a read failed");
            return;
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(file_size));
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * (file_size / piece_size)));
}

void BM_FixedBufferPool_ReadFixed(benchmark::State& state) { run(state, memory::fixed); }
void BM_FixedBufferPool_ReadPlain(benchmark::State& state) { run(state, memory::plain); }

BENCHMARK(BM_FixedBufferPool_ReadFixed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FixedBufferPool_ReadPlain)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
