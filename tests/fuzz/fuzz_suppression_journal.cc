// tests/fuzz/fuzz_suppression_journal.cc: libFuzzer target for parse_suppression_journal()
// (queue/suppression_file.h), the reader of the suppression list's journal files, which a
// crash can leave torn and a disk can corrupt, and whose addresses came from the network.
// Input layout: [mode byte] rest.
//   mode bit 0 clear: `rest` is the file, as it is.
//   mode bit 0 set: `rest` is "tenant\naddress\n" pairs until a NUL byte, each encoded as a
//   valid record (salt from the mode byte) after two valid segment records; the bytes after
//   the NUL are appended raw (a torn or damaged tail); with bit 1 set, the byte at offset
//   (mode >> 2) * 7 of the file is flipped.
// Checks: no crash or out-of-bounds read (ASan/UBSan) on any bytes; every entry read back has
// a non-empty tenant and address without ASCII capitals; in structured mode without a flip,
// the encoded entries come back first, in order; what was read, written again into a fresh
// file, reads back identically and without problems.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "queue/suppression_file.h"

using namespace ringrelay::queue;

namespace {

void check_entry(const suppression_entry& e) {
    if (e.tenant.empty() || e.address.empty()) std::abort();
    for (const std::string* s : {&e.tenant, &e.address})
        for (const char ch : *s)
            if (ch >= 'A' && ch <= 'Z') std::abort();
}

bool same(const suppression_entry& a, const suppression_entry& b) {
    return a.tenant == b.tenant && a.address == b.address && a.time_us == b.time_us && a.queue_id == b.queue_id &&
           a.source == b.source;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t mode = data[0];
    const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    std::string file;
    std::vector<suppression_entry> encoded;
    if ((mode & 1) == 0) {
        file.assign(rest);
    } else {
        const std::uint32_t salt = 0x9e3779b9u * (mode | 1u);
        encode_segment_record(file, salt);
        encode_segment_record(file, salt);
        const auto nul = rest.find('\0');
        std::string_view fields = rest.substr(0, nul);
        std::uint64_t n = 0;
        while (!fields.empty()) {
            const auto a = fields.find('\n');
            if (a == std::string_view::npos) break;
            const auto b = fields.find('\n', a + 1);
            if (b == std::string_view::npos) break;
            suppression_entry e;
            e.tenant.assign(fields.substr(0, a));
            e.address.assign(fields.substr(a + 1, b - a - 1));
            fields.remove_prefix(b + 1);
            if (e.tenant.empty() || e.address.empty() || e.tenant.size() > 0xFFFF || e.address.size() > 0xFFFF) continue;
            e.time_us = ++n * 1000003;
            e.queue_id = n;
            e.source = (n & 1) != 0 ? suppression_source::hard_bounce : suppression_source::operator_added;
            encode_suppression_record(file, e.tenant, e.address, e.source, e.queue_id, e.time_us, salt);
            suppression_normalise(e.tenant);
            suppression_normalise(e.address);
            encoded.push_back(std::move(e));
        }
        if (nul != std::string_view::npos) file.append(rest.substr(nul + 1));
        if ((mode & 2) != 0 && !file.empty()) file[(static_cast<std::size_t>(mode >> 2) * 7) % file.size()] ^= 0x40;
    }
    const journal_contents c = parse_suppression_journal(file, "fuzz");
    for (const suppression_entry& e : c.entries) check_entry(e);
    if ((mode & 3) == 1) {
        if (c.entries.size() < encoded.size()) std::abort();
        for (std::size_t i = 0; i < encoded.size(); ++i)
            if (!same(c.entries[i], encoded[i])) std::abort();
    }
    // What was read is written again as a compacted list would be, and reads back the same.
    std::string again;
    encode_segment_record(again, 77);
    encode_segment_record(again, 77);
    for (const suppression_entry& e : c.entries)
        encode_suppression_record(again, e.tenant, e.address, e.source, e.queue_id, e.time_us, 77);
    const journal_contents back = parse_suppression_journal(again, "again");
    if (!back.problems.empty() || back.entries.size() != c.entries.size()) std::abort();
    for (std::size_t i = 0; i < back.entries.size(); ++i)
        if (!same(back.entries[i], c.entries[i])) std::abort();
    return 0;
}
