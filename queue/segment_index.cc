// queue/segment_index.cc: see segment_index.h.
#include "queue/segment_index.h"

#include <unistd.h>

#include <cstdio>

#include "queue/crc32c.h"
#include "queue/little_endian.h"

namespace ringrelay::queue {

namespace {

// Appends one entry (header and body) to `out`.
void append_entry(std::string& out, index_entry_kind kind, std::uint64_t offset, std::string_view body_prefix,
                  std::string_view body_rest, std::uint32_t salt) {
    const std::size_t start = out.size();
    put_le<std::uint32_t>(out, index_magic);
    put_le<std::uint8_t>(out, static_cast<std::uint8_t>(kind));
    put_le<std::uint8_t>(out, 1);
    put_le<std::uint16_t>(out, 0);
    put_le<std::uint32_t>(out, static_cast<std::uint32_t>(body_prefix.size() + body_rest.size()));
    put_le<std::uint32_t>(out, 0);  // crc placeholder
    put_le<std::uint64_t>(out, offset);
    out.append(body_prefix);
    out.append(body_rest);
    const std::string_view e = std::string_view(out).substr(start);
    std::uint32_t crc = crc32c(salt, e.substr(4, 8));
    crc = crc32c(crc, e.substr(16));
    store_le(out.data() + start + 12, crc);
}

std::uint64_t parse_name(std::string_view name, std::string_view suffix) noexcept {
    if (name.size() != 10 + suffix.size() || name.substr(10) != suffix) return 0;
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < 10; ++i) {
        if (name[i] < '0' || name[i] > '9') return 0;
        n = n * 10 + static_cast<std::uint64_t>(name[i] - '0');
    }
    return n;
}

std::string make_name(std::uint64_t n, const char* suffix) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%010llu%s", static_cast<unsigned long long>(n), suffix);
    return buf;
}

// A record entry's body: the message size, then a descriptor of at least a header.
constexpr std::size_t min_record_body = 8 + record_header_size;
constexpr std::uint64_t max_record_body = 8 + record_header_size + max_payload_length;

}  // namespace

std::string segment_file_name(std::uint64_t segment) { return make_name(segment, ".seg"); }
std::string index_file_name(std::uint64_t segment) { return make_name(segment, ".idx"); }
std::string index_part_file_name(std::uint64_t segment) { return make_name(segment, ".idx.part"); }
std::uint64_t parse_segment_file_name(std::string_view name) noexcept { return parse_name(name, ".seg"); }
std::uint64_t parse_index_file_name(std::string_view name) noexcept { return parse_name(name, ".idx"); }
std::uint64_t parse_index_part_file_name(std::string_view name) noexcept { return parse_name(name, ".idx.part"); }

void remove_segment_index(const std::string& dir, std::uint64_t segment) noexcept {
    const std::string path = dir + "/" + index_file_name(segment);
    (void)::unlink(path.c_str());
}

void segment_index_builder::start(std::uint64_t segment, std::uint32_t salt, std::string buffer) {
    if (buffer.capacity() > _bytes.capacity()) _bytes.swap(buffer);
    _bytes.clear();
    _bytes.reserve(_last_size);  // the last segment's index: one allocation, not a doubling series
    _crc = salt;
    _count = 0;
    _segment = segment;
    _salt = salt;
    _next_offset = segment_records_size;
    _active = true;
    _broken = false;
}

void segment_index_builder::add(std::uint64_t offset, std::string_view bytes, std::uint64_t separate_message_bytes) {
    if (!_active || _broken) return;
    if (bytes.size() < record_header_size || get_le<std::uint32_t>(bytes, 0) != record_magic || offset != _next_offset) {
        _broken = true;
        return;
    }
    const std::uint64_t record_size = record_header_size + get_le<std::uint32_t>(bytes, 8);
    const auto type = static_cast<record_type>(get_le<std::uint8_t>(bytes, 4));
    // The usual cases need no parsing (this runs for every committed record on the shard):
    // a message record whose message bytes are written separately, an outcome record. A
    // copy (whole in `bytes`) or a message without message bytes is walked to its message.
    std::size_t descriptor = 0;
    if (separate_message_bytes > 0 && bytes.size() + separate_message_bytes == record_size &&
        (type == record_type::message || type == record_type::message_copy)) {
        descriptor = bytes.size();
    } else if (separate_message_bytes == 0 && type == record_type::outcome && bytes.size() == record_size) {
        descriptor = bytes.size();
    } else if (separate_message_bytes == 0 && bytes.size() >= record_size) {
        descriptor = record_descriptor_size(bytes.substr(0, record_size));
    }
    if (descriptor == 0) {
        _broken = true;
        return;
    }
    const std::uint64_t message_size = record_size - descriptor;
    char size[8];
    store_le(size, message_size);
    const std::size_t start = _bytes.size();
    append_entry(_bytes, index_entry_kind::record, offset, std::string_view(size, 8), bytes.substr(0, descriptor), _salt);
    _crc = crc32c(_crc, std::string_view(_bytes).substr(start));
    ++_count;
    _next_offset = offset + record_size;
}

std::string segment_index_builder::take_piece(std::string buffer) {
    buffer.clear();
    buffer.swap(_bytes);
    return buffer;
}

std::string segment_index_builder::finish(std::uint64_t segment_length) {
    std::string out;
    if (_active && !_broken && _count > 0 && _next_offset == segment_length) {
        std::string end;
        put_le<std::uint64_t>(end, _segment);
        put_le<std::uint64_t>(end, _count);
        put_le<std::uint64_t>(end, segment_length);
        put_le<std::uint32_t>(end, _salt);
        put_le<std::uint32_t>(end, _crc);
        append_entry(_bytes, index_entry_kind::end, 0, end, {}, _salt);
        _last_size = _bytes.size();
        out.swap(_bytes);
    }
    _bytes.clear();
    _active = false;
    _broken = false;
    _count = 0;
    return out;
}

std::string_view describe(index_error e) noexcept {
    switch (e) {
        case index_error::truncated: return "index truncated (torn or unfinished)";
        case index_error::bad_magic: return "no index entry magic";
        case index_error::bad_length: return "impossible index entry length";
        case index_error::bad_checksum: return "index checksum mismatch";
        case index_error::bad_entry: return "malformed index entry";
        case index_error::wrong_segment: return "index of another segment";
        case index_error::wrong_salt: return "index of another spool (salt)";
        case index_error::wrong_length: return "segment length changed since its index was written";
        case index_error::wrong_count: return "index entry count mismatch";
        case index_error::not_contiguous: return "index records do not cover the segment";
    }
    return "unknown";
}

std::expected<decoded_message, decode_error> decode_index_entry(const index_entry& e, std::uint32_t salt) {
    auto d = decode_record_descriptor(e.descriptor, e.message_size, salt);
    if (!d) return d;
    if (d->header.type == record_type::message || d->header.type == record_type::message_copy) {
        d->offset = e.offset;
        d->segment_salt = salt;
    } else if (d->header.type != record_type::outcome) {
        // A segment the spool wrote holds nothing else after its segment records.
        return std::unexpected(decode_error::bad_payload);
    }
    return d;
}

std::expected<std::vector<index_entry>, index_error> parse_segment_index(std::string_view bytes,
                                                                        const index_expectation& want) {
    std::vector<index_entry> entries;
    std::size_t pos = 0;
    std::uint32_t whole = want.salt;  // CRC of everything before the end entry
    std::uint64_t next_offset = segment_records_size;
    for (;;) {
        const std::string_view rest = bytes.substr(pos);
        if (rest.size() < 4) return std::unexpected(index_error::truncated);
        if (get_le<std::uint32_t>(rest, 0) != index_magic) return std::unexpected(index_error::bad_magic);
        if (rest.size() < index_entry_header_size) return std::unexpected(index_error::truncated);
        const auto kind = static_cast<index_entry_kind>(get_le<std::uint8_t>(rest, 4));
        const std::uint8_t version = get_le<std::uint8_t>(rest, 5);
        const std::uint16_t reserved = get_le<std::uint16_t>(rest, 6);
        const std::uint32_t body_length = get_le<std::uint32_t>(rest, 8);
        const std::uint32_t crc = get_le<std::uint32_t>(rest, 12);
        const std::uint64_t offset = get_le<std::uint64_t>(rest, 16);
        if (version != 1 || reserved != 0 || (kind != index_entry_kind::record && kind != index_entry_kind::end))
            return std::unexpected(index_error::bad_entry);
        if ((kind == index_entry_kind::end && body_length != index_end_body_size) ||
            (kind == index_entry_kind::record && (body_length < min_record_body || body_length > max_record_body)))
            return std::unexpected(index_error::bad_length);
        if (rest.size() - index_entry_header_size < body_length) return std::unexpected(index_error::truncated);
        const std::string_view entry = rest.substr(0, index_entry_header_size + body_length);
        const std::string_view body = entry.substr(index_entry_header_size);
        std::uint32_t expect = crc32c(want.salt, entry.substr(4, 8));
        expect = crc32c(expect, entry.substr(16));
        if (expect != crc) return std::unexpected(index_error::bad_checksum);
        if (kind == index_entry_kind::end) {
            if (offset != 0) return std::unexpected(index_error::bad_entry);
            if (entry.size() != rest.size()) return std::unexpected(index_error::bad_length);
            if (get_le<std::uint32_t>(body, 28) != whole) return std::unexpected(index_error::bad_checksum);
            if (get_le<std::uint64_t>(body, 0) != want.segment) return std::unexpected(index_error::wrong_segment);
            if (get_le<std::uint32_t>(body, 24) != want.salt) return std::unexpected(index_error::wrong_salt);
            if (get_le<std::uint64_t>(body, 16) != want.segment_length) return std::unexpected(index_error::wrong_length);
            // The builder writes no index without a record: an empty one is not ours.
            if (get_le<std::uint64_t>(body, 8) != entries.size() || entries.empty())
                return std::unexpected(index_error::wrong_count);
            if (next_offset != want.segment_length) return std::unexpected(index_error::not_contiguous);
            return entries;
        }
        index_entry e{offset, get_le<std::uint64_t>(body, 0), body.substr(8)};
        if (e.offset != next_offset) return std::unexpected(index_error::not_contiguous);
        auto d = decode_index_entry(e, want.salt);
        if (!d) return std::unexpected(index_error::bad_entry);
        next_offset += d->record_size;  // at most the index's size times 2^30: no overflow
        entries.push_back(e);
        whole = crc32c(whole, entry);
        pos += entry.size();
    }
}

}  // namespace ringrelay::queue
