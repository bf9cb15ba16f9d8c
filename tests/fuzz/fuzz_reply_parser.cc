// tests/fuzz/fuzz_reply_parser.cc: libFuzzer target for reply_parser (RFC 5321 §4.2). Feeds
// the input whole and in two pieces (cut at the first byte's value); both runs must produce
// the same replies and the same error, every reply is well-formed (code 200..559, text within
// bounds, no CR, exactly lines-1 LFs) and consumption never exceeds the input.
// Input layout: [cut byte] replies...
// SECURITY: this is everything a next hop can make the parser do.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/reply_parser.h"

using namespace ringrelay::protocol;

namespace {

struct run_result {
    std::vector<std::string> replies;  // "code|text|lines|enhanced"
    int error = -1;
};

void check(const parsed_reply& r) {
    if (r.code < 200 || r.code > 559 || r.lines == 0 || r.lines > max_reply_lines) std::abort();
    if (r.text.size() > max_reply_line * max_reply_lines) std::abort();
    std::size_t lfs = 0;
    for (const char c : r.text) {
        if (c == '\r') std::abort();
        if (c == '\n') ++lfs;
    }
    if (lfs + 1 != r.lines) std::abort();
    if (r.enhanced.present() && r.enhanced.status_class != r.code / 100) std::abort();
}

run_result run(std::string_view in, std::size_t cut) {
    reply_parser p;
    run_result res;
    std::string_view pieces[2] = {in.substr(0, cut), in.substr(cut)};
    for (std::string_view piece : pieces) {
        while (!piece.empty()) {
            const auto r = p.feed(piece);
            if (!r) {
                res.error = static_cast<int>(r.error());
                return res;
            }
            if (r->consumed > piece.size() || (!r->complete && r->consumed != piece.size())) std::abort();
            piece.remove_prefix(r->consumed);
            if (r->complete) {
                const parsed_reply rep = p.reply();
                check(rep);
                res.replies.push_back(std::to_string(rep.code) + "|" + std::string(rep.text) + "|" +
                                      std::to_string(rep.lines) + "|" + std::to_string(rep.enhanced.subject));
            }
        }
    }
    return res;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    const std::size_t cut = in.empty() ? 0 : data[0] % (in.size() + 1);
    const run_result whole = run(in, 0);
    const run_result split = run(in, cut);
    if (whole.error != split.error || whole.replies != split.replies) std::abort();
    return 0;
}
