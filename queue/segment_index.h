// queue/segment_index.h: the index of a closed spool segment (docs/ARCHITECTURE.md "The
// spool"), so that a restart rebuilds the queue from descriptors without reading message
// bodies (issue 15, "Recovery by descriptor").
//
// Segment "0000000003.seg" has its index in "0000000003.idx" beside it, complete once the
// segment is closed (rotation, or the spool closing cleanly). Until then it grows as
// "0000000003.idx.part" (queue/segment_index_writer.h), so the segment being written at a
// crash has no index, only a part file that the next start removes. The index is derived
// data: it is never fsynced, and a missing, torn, stale or corrupt one only means that
// recovery scans the segment as it would without an index. Nothing durable depends on it.
//
// An index file is a sequence of entries, each (little-endian):
//   header (24 bytes)
//     u32 magic 'RRX1'  u8 kind  u8 version(1)  u16 reserved(0)
//     u32 body_length   u32 crc32c(header bytes 4..11 and 16..23, then the body), seeded with
//                           the segment's salt (record.h)
//     u64 offset: of the record in the segment (kind 1); 0 (kind 2)
//   body (kind 1, record: one per record of the segment, in the segment's order):
//     u64 message_size: the message bytes left out (0 for a record without any)
//     the record's descriptor (record.h, decode_record_descriptor): its 32-byte header as in
//     the segment, then its payload up to the message bytes. A message record (type 1) and a
//     message copy (type 5) lose their message bytes (the envelope, client and recipient
//     states stay); an outcome record (type 2) is whole, with its own CRC.
//   body (kind 2, end: the last entry, and only there):
//     u64 segment number  u64 entry_count (kind 1 entries)  u64 segment_length (bytes of the
//     segment the index describes)  u32 salt  u32 index_crc (crc32c seeded with the salt of
//     every byte of the file before this entry)
// An index is used only if every entry's CRC and the end entry match, the end entry names
// the segment, its salt (from the segment's own segment records) and its current length, and
// the records tile the segment exactly: the first starts after the two segment records, each
// next one where the previous ended, the last ends at segment_length. A segment truncated or
// extended after its index was written therefore gets scanned; so does one whose index was
// copied from another segment or another spool instance (another salt).
// What an index cannot see: a byte of a message body damaged in place after the index was
// written. The record's own CRC still covers it, and it is checked when the body is read
// back for delivery (the recipients are then deferred with the reason, queue/message_store.h).
//
// SECURITY: an index file is disk input that may be torn or corrupt (or planted by someone
// who can write the spool directory, who can write segments as well). Nothing reads past the
// bytes given; lengths are bounded by the file's size; without the salt an entry's CRC
// matches with probability 2^-32.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "queue/record.h"

namespace ringrelay::queue {

inline constexpr std::uint32_t index_magic = 0x31585252;  // "RRX1" little-endian
inline constexpr std::size_t index_entry_header_size = 24;
inline constexpr std::size_t index_end_body_size = 32;
// Where a segment's first record starts: after its two segment records (record.h).
inline constexpr std::uint64_t segment_records_size = 2 * (record_header_size + segment_payload_size);

enum class index_entry_kind : std::uint8_t { record = 1, end = 2 };

// "0000000003.seg", "0000000003.idx", "0000000003.idx.part" (an index being written); the
// number of such a name, 0 if it is not one.
[[nodiscard]] std::string segment_file_name(std::uint64_t segment);
[[nodiscard]] std::string index_file_name(std::uint64_t segment);
[[nodiscard]] std::string index_part_file_name(std::uint64_t segment);
[[nodiscard]] std::uint64_t parse_segment_file_name(std::string_view name) noexcept;
[[nodiscard]] std::uint64_t parse_index_file_name(std::string_view name) noexcept;
[[nodiscard]] std::uint64_t parse_index_part_file_name(std::string_view name) noexcept;

// Unlinks `dir`/<segment>.idx if it is there (a segment being deleted takes its index with
// it; compaction calls this as collect_segments does). Synchronous; errors other than a missing
// file are ignored: a stray index is never used for another segment (its end entry names
// its segment and salt) and open() removes those whose segment is gone.
void remove_segment_index(const std::string& dir, std::uint64_t segment) noexcept;

// Builds the index of the segment being written, as its batches commit, so that closing the
// segment only has to write the last bytes out.
// Lifecycle: start() when a segment is created; add() for each committed record in file
// order; take_piece() whenever the caller wants the bytes built so far written out (the
// spool: every index_piece_size); finish() when the segment is closed. The pieces and
// finish()'s bytes, concatenated, are the index. Threading: the spool's shard.
class segment_index_builder {
public:
    // `buffer`: memory to build in (a written piece's, segment_index_writer::spare()), emptied
    // with its capacity kept.
    void start(std::uint64_t segment, std::uint32_t salt, std::string buffer = {});
    // The record at `offset` of the segment, as the spool has it: either `bytes` is its
    // descriptor and `separate_message_bytes` (> 0) message bytes follow it elsewhere (a
    // message record: the spool's arena holds the header and envelope, the message is written
    // from the session's buffer), or `bytes` holds the whole record (an outcome, a copy).
    // Records must come in file order without gaps; anything else makes the index unusable,
    // and finish() then gives nothing.
    void add(std::uint64_t offset, std::string_view bytes, std::uint64_t separate_message_bytes);
    // The finished index of a segment `segment_length` bytes long; empty if there is nothing
    // to write (no segment started, no record, or the records do not tile the segment). Resets
    // the builder.
    [[nodiscard]] std::string finish(std::uint64_t segment_length);
    // The bytes built since start() or the last take_piece(), leaving `buffer` (emptied, its
    // capacity kept) to build the next ones in: once the buffers of a few pieces exist, building
    // an index touches no new memory.
    [[nodiscard]] std::string take_piece(std::string buffer = {});
    [[nodiscard]] bool active() const noexcept { return _active; }
    [[nodiscard]] std::uint64_t segment() const noexcept { return _segment; }
    // Bytes built and not yet taken.
    [[nodiscard]] std::size_t size() const noexcept { return _bytes.size(); }

private:
    std::string _bytes;      // built since start() or the last take_piece()
    std::uint32_t _crc = 0;  // of every byte built since start(), seeded with the salt
    std::uint64_t _count = 0;
    std::uint64_t _segment = 0;
    std::uint32_t _salt = 0;
    std::uint64_t _next_offset = 0;
    std::size_t _last_size = 0;
    bool _active = false;
    bool _broken = false;
};

enum class index_error : std::uint8_t {
    truncated,       // ends before its end entry (torn write, or never finished)
    bad_magic,
    bad_length,      // an impossible body length, or bytes after the end entry
    bad_checksum,    // an entry's CRC, or the end entry's CRC of the whole index
    bad_entry,       // an unknown kind or version, or a descriptor that does not decode
    wrong_segment,   // the end entry names another segment
    wrong_salt,      // ... another salt (another spool instance)
    wrong_length,    // ... another length: the segment changed since (truncated, appended to)
    wrong_count,     // the entry count disagrees
    not_contiguous,  // the records do not tile the segment
};
[[nodiscard]] std::string_view describe(index_error e) noexcept;

// What recovery knows of the segment from the segment file itself.
struct index_expectation {
    std::uint64_t segment = 0;
    std::uint32_t salt = 0;             // from its segment records
    std::uint64_t segment_length = 0;   // its size now
};

// One record of an index; `descriptor` points into the bytes given to parse_segment_index.
struct index_entry {
    std::uint64_t offset = 0;
    std::uint64_t message_size = 0;
    std::string_view descriptor;
};

// Checks the whole index (every entry, including that its descriptor decodes, and the end
// entry against `want`) before returning its records: either all of them or an error, so
// that a caller can fall back to scanning without having used any.
[[nodiscard]] std::expected<std::vector<index_entry>, index_error> parse_segment_index(std::string_view bytes,
                                                                                      const index_expectation& want);

// The record an entry describes, exactly as a scan of the segment decodes it
// (decode_record), except that `message` is empty: message_size and record_size set, and for
// a message or copy `offset` and `segment_salt` (= `salt`) as recovery sets them.
[[nodiscard]] std::expected<decoded_message, decode_error> decode_index_entry(const index_entry& e, std::uint32_t salt);

}  // namespace ringrelay::queue
