// bench/data_reader_bench.cc: DATA body scanning throughput (RFC 5321 §4.5.2): the bulk
// reader against the octet-at-a-time reference, on typical 76-column text and on long
// lines. The bulk reader's output is compared with the reference before timing.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "protocol/data_reader.h"

namespace {

using namespace ringrelay::protocol;

// ~1 MiB of dot-stuffed text with `width`-octet lines, some starting with a stuffed dot.
std::string make_body(std::size_t width) {
    std::string s;
    std::size_t line = 0;
    while (s.size() < (1U << 20)) {
        if (line % 17 == 0) s += "..";  // stuffed dot
        for (std::size_t i = 0; i < width; ++i) s.push_back(static_cast<char>('a' + (i + line) % 26));
        s += "\r\n";
        ++line;
    }
    s += ".\r\n";
    return s;
}

template <typename Reader>
std::string scan(const std::string& in, std::size_t chunk) {
    Reader r;
    r.reset(data_framing::dot_stuffed, 0);
    std::string body;
    for (std::size_t pos = 0; pos < in.size();) {
        const auto p = r.feed(std::string_view(in).substr(pos, chunk), body);
        pos += p.consumed;
        if (p.complete) break;
    }
    return body;
}

template <typename Reader>
void run(benchmark::State& state, std::size_t width) {
    const std::string in = make_body(width);
    const std::size_t chunk = static_cast<std::size_t>(state.range(0));
    if (scan<data_reader>(in, chunk) != scan<reference_data_reader>(in, in.size())) {
        std::fprintf(stderr, "data_reader disagrees with the reference\n");
        std::abort();
    }
    Reader r;
    std::string body;
    body.reserve(in.size());
    for (auto _ : state) {
        r.reset(data_framing::dot_stuffed, 0);
        body.clear();
        for (std::size_t pos = 0; pos < in.size();) {
            const auto p = r.feed(std::string_view(in).substr(pos, chunk), body);
            pos += p.consumed;
            if (p.complete) break;
        }
        benchmark::DoNotOptimize(body.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.size()));
}

void BM_DataReader_Text76(benchmark::State& state) { run<data_reader>(state, 76); }
void BM_DataReader_Lines998(benchmark::State& state) { run<data_reader>(state, 998); }
void BM_DataReader_ReferenceText76(benchmark::State& state) { run<reference_data_reader>(state, 76); }

// Chunk sizes: a 16 KiB receive buffer, and a whole 1 MiB body at once.
BENCHMARK(BM_DataReader_Text76)->Arg(16384)->Arg(1 << 21);
BENCHMARK(BM_DataReader_Lines998)->Arg(16384);
BENCHMARK(BM_DataReader_ReferenceText76)->Arg(16384);

}  // namespace

BENCHMARK_MAIN();
