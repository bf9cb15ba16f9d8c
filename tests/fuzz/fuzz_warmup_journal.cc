// tests/fuzz/fuzz_warmup_journal.cc: libFuzzer target for the warm-up journal's reader
// (queue/warmup.h parse_warmup_journal; issue 17), SPOOL/warmup.json as the relay reads it at
// start. Any bytes as the file. Checks: no sanitizer report; the same text gives the same verdict
// twice; a refusal names its line ("line N: ..."); an accepted file's counts have a source, and
// written back (format_warmup_journal) they read back the same.
// SECURITY: the file is the relay's own, in its spool; a damaged one must not crash the start.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "queue/warmup.h"

using namespace ringrelay::queue;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto a = parse_warmup_journal(text);
    const auto b = parse_warmup_journal(text);
    if (a.has_value() != b.has_value()) std::abort();
    if (!a) {
        if (!a.error().starts_with("line ") || a.error() != b.error()) std::abort();
        return 0;
    }
    if (*a != *b) std::abort();
    for (const warmup_count& c : *a)
        if (c.source.empty()) std::abort();
    const auto back = parse_warmup_journal(format_warmup_journal(*a));
    if (!back || *back != *a) std::abort();
    return 0;
}
