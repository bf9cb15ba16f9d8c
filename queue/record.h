// queue/record.h: the on-disk format of spool records (docs/ARCHITECTURE.md "The spool").
//
// A segment file is a sequence of records, each:
//   header (32 bytes, little-endian)
//     u32 magic 'RRS1'   u8 type   u8 version   u16 reserved(0)
//     u32 payload_length u32 crc32c(header bytes 4..11 and 16..31, then payload), seeded with
//                            the segment's salt (0 for the segment record itself)
//     u64 queue_id       u64 received_unix_us
// Every segment starts with two identical segment records (type 3; queue_id and received_us
// 0; the second a copy in case the first is damaged):
//     u32 salt  u32 reserved(0)
// The salt is random per spool instance and secret. SECURITY: recovery resynchronises on the
// next magic after a damaged record, and a message body (BDAT carries any bytes) could hold
// a forged record; without the salt its CRC matches with probability 2^-32 at best.
//   payload (type 1, message; version 1, 2 when the client had authenticated, 3 when the message
//   named a campaign):
//     u8 body_type  u8 smtputf8  u16 helo_len helo  u16 client_len client
//     u16 from_len from  [version 2: u16 auth_len auth_user (not empty)]
//     [version 3: u16 auth_len auth_user (may be empty)  u16 campaign_len campaign (not empty)]
//     u32 rcpt_count { u16 len rcpt }*  then the message bytes to the end
//   Version 2 adds only the AUTH user (the sender's tenant for the suppression list); version 3
//   the campaign too (issue 17: the value of the campaign header, which is stripped from the
//   message before it is stored, so that the record is its only copy). A message without either
//   is still written as version 1, byte for byte as before, and one without a campaign as
//   version 2, so that a spool stays readable by an older relay except for those messages;
//   records of every version are read.
//   payload (type 2, outcome of one recipient of an earlier message; header.queue_id names
//   the message, header.received_us is the time of the outcome):
//     u32 rcpt_index  u8 status  u8 reserved(0)  u16 reserved(0)  u32 attempts  u64 next_attempt_us
//   payload (type 5, message copy: a message record rewritten by compaction into a newer
//   segment, with the state of each recipient when it was copied; header.queue_id and
//   received_us are the original's; versions 2 and 3 as for type 1):
//     u32 state_count (= rcpt_count) { u8 status u8 reserved(0) u16 reserved(0) u32 attempts
//     u64 next_attempt_us }*  then exactly a type 1 payload
//   At recovery a copy replaces whatever was read for its queue id before it (the older
//   copy may still be there after a crash) and outcome records after it apply as usual.
//   payload (type 4, suppression: one entry of a suppression journal, never in a segment;
//   queue/suppression_file.h. header.queue_id is the message whose bounce added it, 0 if
//   none; header.received_us is when it was added):
//     u8 source (1 hard bounce, 2 operator, 3 HTTP API, 4 one-click unsubscribe)  u8 flags
//     u16 reserved(0)  u16 tenant_len tenant  u16 address_len address   (both non-empty,
//     lower-case)  [flags bit 1: u16 reason_len reason]
//   flags: bit 0, a removal (the pair is off the list from header.received_us on: DELETE
//   /api/v1/suppressions); bit 1, a reason follows (POST /api/v1/suppressions). Other bits are
//   0. A record with sources 3-4 or flags set is refused (skipped as damaged) by relays older
//   than issue 18's suppression API; every other suppression record is as before.
// Anything else found at recovery is corrupt: reported with its offset and skipped.
// SECURITY: decode_* read disk input that may be torn or corrupt; nothing reads past the
// buffer given.
#pragma once
#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/server_session.h"

namespace ringrelay::queue {

inline constexpr std::uint32_t record_magic = 0x31535252;  // "RRS1" little-endian
inline constexpr std::size_t record_header_size = 32;
inline constexpr std::uint32_t max_payload_length = 1u << 30;

enum class record_type : std::uint8_t { message = 1, outcome = 2, segment = 3, suppression = 4, message_copy = 5 };
inline constexpr std::size_t segment_payload_size = 8;

// What became of one recipient (journaled as an outcome record; the last one wins).
enum class recipient_status : std::uint8_t {
    pending = 0,    // never journaled: the state of every recipient of a new message
    delivered = 1,  // the next hop said 2xx
    bounced = 2,    // 5xx (a DSN went to the sender unless the sender is null)
    deferred = 3,   // 4xx or no connection: try again at next_attempt_us
    expired = 4,    // undelivered after --max-age (a DSN went to the sender)
};
inline constexpr std::size_t outcome_payload_size = 20;
// An outcome record with this rcpt_index (and status deferred) journals that the message's
// delay notice was sent (--delay-warning): none is sent again after a restart.
inline constexpr std::uint32_t delay_warning_index = 0xFFFFFFFFu;

// A recipient's state as a message copy (type 5) carries it.
struct recipient_state {
    recipient_status status = recipient_status::pending;
    std::uint32_t attempts = 0;
    std::uint64_t next_attempt_us = 0;
};

// Why an address is on a suppression list (a suppression record's source).
enum class suppression_source : std::uint8_t {
    hard_bounce = 1,  // a recipient bounced as invalid or inactive (queue/suppression.h)
    operator_added = 2,  // ringrelay --suppress
    api = 3,             // POST /api/v1/suppressions (queue/suppression_api.h)
    unsubscribe = 4,     // a one-click unsubscribe, POST /u/TOKEN (RFC 8058)
};

// What a suppression record does to its pair.
enum class suppression_change : std::uint8_t { add, remove };

struct record_header {
    std::uint32_t magic = record_magic;
    record_type type = record_type::message;
    std::uint8_t version = 1;  // 1; a message record with an AUTH user: 2; with a campaign: 3
    std::uint32_t payload_length = 0;
    std::uint32_t crc = 0;
    std::uint64_t queue_id = 0;
    std::uint64_t received_us = 0;
};

// Appends the header (with its crc over `payload_prefix` + `message`) and the envelope part
// of the payload to `out`; the message bytes follow separately (written from the session's
// buffer without a copy).
// `campaign`: the message's campaign (queue/campaign_header.h), "" for none.
void encode_message_record(std::string& out, const protocol::envelope& env, std::string_view client,
                           std::uint64_t received_us, std::string_view message, std::uint32_t salt,
                           std::string_view campaign = {});
// Appends the segment record that starts every segment (its own CRC is unsalted).
void encode_segment_record(std::string& out, std::uint32_t salt);

enum class decode_error : std::uint8_t {
    truncated,     // fewer bytes than the header or payload length says (torn write)
    bad_magic,
    bad_length,
    bad_checksum,
    bad_payload,   // checksum fine, envelope fields inconsistent
};
[[nodiscard]] std::string_view describe(decode_error e) noexcept;

struct decoded_message {
    record_header header;
    // type segment only:
    std::uint32_t salt = 0;
    // type outcome only:
    std::uint32_t rcpt_index = 0;
    recipient_status status = recipient_status::pending;
    std::uint32_t attempts = 0;
    std::uint64_t next_attempt_us = 0;
    // type suppression only:
    suppression_source source = suppression_source::hard_bounce;
    suppression_change change = suppression_change::add;
    std::string tenant;
    std::string address;
    std::string reason;  // "" if the record carries none
    // type message_copy only: one per recipient
    std::vector<recipient_state> states;
    // type message and message_copy (envelope.auth_user from a version 2 or 3 record, campaign
    // from a version 3 record, "" otherwise):
    protocol::envelope envelope;
    std::string campaign;
    std::string client;
    std::string_view message;  // points into the buffer given to decode_record
    std::uint64_t message_size = 0;  // message.size(); also set where only a descriptor was read
    std::size_t record_size = 0;
    // Set by recovery (queue/spool.h), not by decode_record: where the record lies, so that a
    // message's body can be read back later (record_location).
    std::uint64_t offset = 0;         // of the record's header in its segment
    std::uint32_t segment_salt = 0;   // the salt of the segment it is in
};

// Where a message record lies in a shard's spool: enough to read it back and check it
// (decode_record with `salt`). Memory keeps this instead of the body (docs/ARCHITECTURE.md
// "The spool").
struct record_location {
    std::uint64_t segment = 0;
    std::uint64_t offset = 0;  // of the record's header
    std::uint64_t size = 0;    // header and payload
    std::uint32_t salt = 0;
};

// The message text of the record read back from `where` into `bytes` (`read_result`: the
// read's result, bytes or -errno): a view into `bytes` once the record is whole, passes its
// CRC and is the message (or its copy) with `queue_id`; otherwise why not ("the segment ends
// 12 bytes short of the record", a decode_error's description, "another record is there",
// strerror). Every reader of a body (cache fill, compaction, delivery) checks it this way.
[[nodiscard]] std::expected<std::string_view, std::string> message_read_back(std::string_view bytes, int read_result,
                                                                            const record_location& where,
                                                                            std::uint64_t queue_id);

// A compaction's copy of a message record (type 5), with one state per recipient; the message
// bytes are part of `out` here (a copy is written from the bytes read back).
void encode_message_copy_record(std::string& out, const protocol::envelope& env, std::string_view client,
                                std::uint64_t received_us, std::string_view message,
                                std::span<const recipient_state> states, std::uint32_t salt,
                                std::string_view campaign = {});

// Appends a complete outcome record (header and payload) to `out`.
void encode_outcome_record(std::string& out, std::uint64_t queue_id, std::uint64_t time_us, std::uint32_t rcpt_index,
                           recipient_status status, std::uint32_t attempts, std::uint64_t next_attempt_us,
                           std::uint32_t salt);

// Appends a complete suppression record to `out` (tenant and address as given: the caller
// normalises them; each, and the reason, is cut at 65535 bytes). A reason is written only if
// not empty; a removal's source says who removed it.
void encode_suppression_record(std::string& out, std::string_view tenant, std::string_view address,
                               suppression_source source, std::uint64_t queue_id, std::uint64_t time_us,
                               std::uint32_t salt, std::string_view reason = {},
                               suppression_change change = suppression_change::add);

// Decodes the record at the start of `bytes` (any type; see decoded_message::header.type),
// checking its CRC with `salt` (a segment record's with 0).
[[nodiscard]] std::expected<decoded_message, decode_error> decode_record(std::string_view bytes, std::uint32_t salt);

// Checks a message record (or a copy) read back in pieces, in order, without holding it whole
// (a large body streamed from the spool, queue/outbound.h): from the first piece the header, as
// decode_record checks it (magic, type, version, a length that makes the record
// `record_size` bytes), then the CRC-32C over every piece. The record is intact only once
// every byte is in and finish() succeeded: what the pieces carry is provisional until then,
// and the caller must not act on it irrevocably (a delivery sends the body but not its end).
// The envelope is not decoded (the job has it). Shard-local; no allocation.
class record_stream_check {
public:
    // `record_size`: header and payload (record_location::size); `salt`: its segment's.
    record_stream_check(std::uint64_t record_size, std::uint32_t salt) noexcept : _size(record_size), _crc(salt) {}
    // The next bytes of the record, in order; the first call gives at least the header (32
    // bytes). Fails if the header is no message record of record_size bytes, or if more bytes
    // than that are given; a failure is final.
    [[nodiscard]] std::expected<void, decode_error> add(std::string_view bytes) noexcept;
    // Every byte was given and the CRC matched.
    [[nodiscard]] std::expected<void, decode_error> finish() const noexcept;
    // Valid once the first piece was added.
    [[nodiscard]] const record_header& header() const noexcept { return _header; }
    [[nodiscard]] std::uint64_t checked() const noexcept { return _seen; }

private:
    std::uint64_t _size;
    std::uint32_t _crc;
    std::uint64_t _seen = 0;
    record_header _header;
    bool _failed = false;
};

// A record's descriptor: its header and its payload without the message bytes (a segment
// index keeps these, queue/segment_index.h). For a message or a copy `head` ends where the
// message bytes begin and `message_size` says how many were left out; their CRC (in the
// header) covers those bytes, so it is not checked here (the index entry has its own);
// everything else is checked as decode_record does, and the result is decode_record's with
// `message` empty (message_size and record_size as decode_record sets them). Any other type
// has no message bytes: `head` is the whole record, message_size 0, and its CRC is checked
// with `salt`.
[[nodiscard]] std::expected<decoded_message, decode_error> decode_record_descriptor(std::string_view head,
                                                                                    std::uint64_t message_size,
                                                                                    std::uint32_t salt);
// The size of the descriptor of the record that starts `bytes`: its header and the payload
// before the message bytes (a record without message bytes: all of it). `bytes` holds at least
// that much (the spool's arena holds a message record's envelope without its message, a
// copy's whole record). 0 when the bytes are not such a record. CRC not checked.
[[nodiscard]] std::size_t record_descriptor_size(std::string_view bytes) noexcept;

}  // namespace ringrelay::queue
