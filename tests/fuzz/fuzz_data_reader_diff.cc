// tests/fuzz/fuzz_data_reader_diff.cc: differential libFuzzer target: the bulk DATA/BDAT
// reader, fed the input in pieces, must agree with the one-octet-at-a-time reference fed it
// whole (RFC 5321 §4.5.2 dot-unstuffing, §2.3.8 bare CR/LF, §4.5.3.1.6 line length).
// Input layout: [framing+limit byte][cut byte][cut byte][cut byte] body...
// SECURITY: the reader sees every octet of every message body.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/data_reader.h"

using namespace ringrelay::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 4) return 0;
    const data_framing framing = (data[0] & 1) != 0 ? data_framing::raw : data_framing::dot_stuffed;
    const std::uint64_t limit = (data[0] & 2) != 0 ? static_cast<std::uint64_t>(data[0] >> 2) * 8 : 0;
    const std::string_view in(reinterpret_cast<const char*>(data + 4), size - 4);
    std::vector<std::size_t> cuts;
    for (int i = 1; i < 4; ++i) {
        if (!in.empty()) cuts.push_back(static_cast<std::size_t>(data[i]) * in.size() / 256);
    }
    std::sort(cuts.begin(), cuts.end());

    reference_data_reader ref;
    ref.reset(framing, limit);
    std::string ref_body;
    const data_progress rp = ref.feed(in, ref_body);

    data_reader fast;
    fast.reset(framing, limit);
    std::string fast_body;
    std::size_t consumed = 0;
    bool complete = false;
    std::size_t begin = 0;
    for (std::size_t i = 0; i <= cuts.size() && !complete; ++i) {
        const std::size_t end = i < cuts.size() ? cuts[i] : in.size();
        const data_progress p = fast.feed(in.substr(begin, end - begin), fast_body);
        consumed += p.consumed;
        complete = p.complete;
        if (!complete && p.consumed != end - begin) std::abort();
        begin = end;
    }
    if (framing == data_framing::raw) {
        ref.finish(ref_body);
        fast.finish(fast_body);
    }
    if (consumed != rp.consumed || complete != rp.complete) std::abort();
    if (fast.bare_cr() != ref.bare_cr() || fast.bare_lf() != ref.bare_lf() ||
        fast.line_too_long() != ref.line_too_long() || fast.over_limit() != ref.over_limit() ||
        fast.size() != ref.size()) {
        std::abort();
    }
    if (!fast.over_limit() && fast_body != ref_body) std::abort();
    if (limit != 0 && fast_body.size() > limit) std::abort();
    return 0;
}
