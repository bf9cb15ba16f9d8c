// tests/fuzz/fuzz_segment_index.cc: libFuzzer target for parse_segment_index() and
// decode_index_entry() (queue/segment_index.h), the reader of a spool segment's index, which
// a crash can leave torn and a disk can corrupt.
// Input layout: [mode byte] rest; the salt is derived from the mode byte.
//   mode bit 0 clear: `rest` is the index file. With bit 1 set, its entries' checksums (and
//   the end entry's checksum of the whole index) are recomputed first, and the expectation
//   is taken from its end entry, so that the fuzzer gets past the checksums to the entry
//   decoder; otherwise the expectation is segment 7 of the length in the first 8 bytes.
//   mode bit 0 set: structured. `rest` is cut into records at '\n': a line starting with 'o'
//   is an outcome record, with 'c' a message copy, else a message record (its sender, its
//   recipients, its body length all from the line); the records are built into an index with
//   segment_index_builder. With bit 1 set the index is then damaged: with n = mode >> 2 odd,
//   cut short by n bytes; even, the byte at (n * 13) mod its size XORed with 1 + (n & 0x7F).
// Checks: no crash or out-of-bounds read (ASan/UBSan) on any bytes; an index accepted decodes
// every entry, built again from its entries gives the same bytes; a structured index is
// accepted unless damaged, then always refused, and its entries decode to the records built.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "queue/crc32c.h"
#include "queue/little_endian.h"
#include "queue/segment_index.h"

using namespace ringrelay::queue;

namespace {

// Recomputes each entry's CRC and the end entry's whole-index CRC (as the writer would) and
// returns the expectation the end entry states (if there is one).
index_expectation fix_checksums(std::string& b, std::uint32_t salt) {
    index_expectation want{7, salt, 0};
    std::size_t pos = 0;
    std::uint32_t whole = salt;
    while (b.size() - pos >= index_entry_header_size) {
        const std::uint32_t len = get_le<std::uint32_t>(b, pos + 8);
        if (b.size() - pos - index_entry_header_size < len) break;
        const bool end = static_cast<std::uint8_t>(b[pos + 4]) == 2 && len == index_end_body_size;
        if (end) {
            store_le(b.data() + pos + index_entry_header_size + 28, whole);
            want.segment = get_le<std::uint64_t>(b, pos + index_entry_header_size);
            want.segment_length = get_le<std::uint64_t>(b, pos + index_entry_header_size + 16);
            store_le(b.data() + pos + index_entry_header_size + 24, salt);
        }
        const std::string_view e = std::string_view(b).substr(pos, index_entry_header_size + len);
        std::uint32_t crc = crc32c(salt, e.substr(4, 8));
        crc = crc32c(crc, e.substr(16));
        store_le(b.data() + pos + 12, crc);
        whole = crc32c(whole, std::string_view(b).substr(pos, e.size()));
        pos += e.size();
    }
    return want;
}

// Parses, decodes every entry, and checks that rebuilding gives the same bytes. Returns
// whether the index was accepted.
bool check(std::string_view index, const index_expectation& want, std::vector<ringrelay::queue::decoded_message>* out) {
    auto entries = parse_segment_index(index, want);
    if (!entries) return false;
    segment_index_builder again;
    again.start(want.segment, want.salt);
    for (const index_entry& e : *entries) {
        auto d = decode_index_entry(e, want.salt);
        if (!d || !d->message.empty() || d->message_size != e.message_size ||
            d->record_size != e.descriptor.size() + e.message_size)
            std::abort();
        again.add(e.offset, e.descriptor, e.message_size);
        if (out != nullptr) out->push_back(std::move(*d));
    }
    if (again.finish(want.segment_length) != index) std::abort();
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t mode = data[0];
    const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
    const std::uint32_t salt = 0x9e3779b9u * (mode | 1u);
    if ((mode & 1) == 0) {
        std::string index(rest);
        index_expectation want{7, salt, rest.size() >= 8 ? get_le<std::uint64_t>(rest, 0) : 0};
        if ((mode & 2) != 0) want = fix_checksums(index, salt);
        (void)check(index, want, nullptr);
        return 0;
    }
    // Structured: records from the lines of `rest`.
    struct built {
        record_type type;
        std::uint64_t queue_id;
        std::string sender;
        std::size_t recipients;
        std::uint64_t message_size;
    };
    std::vector<built> records;
    segment_index_builder b;
    b.start(3, salt);
    std::uint64_t offset = segment_records_size;
    std::size_t pos = 0;
    while (pos < rest.size() && records.size() < 64) {
        std::size_t nl = rest.find('\n', pos);
        if (nl == std::string_view::npos) nl = rest.size();
        const std::string_view line = rest.substr(pos, nl - pos);
        pos = nl + 1;
        const std::uint64_t id = records.size() + 1;
        std::string rec;
        if (!line.empty() && line[0] == 'o') {
            const auto status = static_cast<recipient_status>(1 + (line.size() % 4));
            encode_outcome_record(rec, id, line.size(), static_cast<std::uint32_t>(line.size()), status, 1, 2, salt);
            b.add(offset, rec, 0);
            records.push_back({record_type::outcome, id, {}, 0, 0});
            offset += rec.size();
            continue;
        }
        ringrelay::protocol::envelope env;
        env.queue_id = id;
        env.helo = "h";
        env.mail_from = std::string(line.substr(0, line.size() / 2));
        const std::size_t rcpts = 1 + line.size() % 3;
        for (std::size_t i = 0; i < rcpts; ++i) env.rcpt_to.emplace_back(line.substr(line.size() / 2));
        if (line.size() % 5 == 1) env.auth_user = "u";
        const std::string body(line.size() * 3, 'x');
        if (!line.empty() && line[0] == 'c') {
            const std::vector<recipient_state> states(rcpts, recipient_state{recipient_status::deferred, 1, 9});
            encode_message_copy_record(rec, env, "c", 1, body, states, salt);
            b.add(offset, rec, 0);  // a copy: the whole record in the spool's arena
            records.push_back({record_type::message_copy, id, env.mail_from, rcpts, body.size()});
            offset += rec.size();
        } else {
            encode_message_record(rec, env, "c", 1, body, salt);
            b.add(offset, rec, body.size());  // the message bytes are written separately
            records.push_back({record_type::message, id, env.mail_from, rcpts, body.size()});
            offset += rec.size() + body.size();
        }
    }
    std::string index = b.finish(offset);
    const index_expectation want{3, salt, offset};
    if (records.empty()) {
        if (!index.empty()) std::abort();  // nothing to index: nothing written
        return 0;
    }
    bool damaged = false;
    if ((mode & 2) != 0 && !index.empty()) {
        const std::size_t n = mode >> 2;
        if (n % 2 == 1) {
            index.resize(index.size() - std::min(index.size(), n));
        } else {
            index[(n * 13) % index.size()] ^= static_cast<char>(1 + (n & 0x7F));
        }
        damaged = true;
    }
    std::vector<ringrelay::queue::decoded_message> got;
    const bool accepted = check(index, want, &got);
    if (accepted == damaged) std::abort();  // damage is always seen, an intact index always taken
    if (!accepted) return 0;
    if (got.size() != records.size()) std::abort();
    for (std::size_t i = 0; i < got.size(); ++i) {
        const built& r = records[i];
        const auto& d = got[i];
        if (d.header.type != r.type || d.header.queue_id != r.queue_id) std::abort();
        if (r.type == record_type::outcome) continue;
        if (d.envelope.mail_from != r.sender || d.envelope.rcpt_to.size() != r.recipients ||
            d.message_size != r.message_size || d.segment_salt != salt)
            std::abort();
        if (r.type == record_type::message_copy && d.states.size() != r.recipients) std::abort();
    }
    return 0;
}
