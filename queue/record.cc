// queue/record.cc: see record.h.
#include "queue/record.h"

#include <algorithm>
#include <cstring>
#include <span>

#include "queue/crc32c.h"
#include "queue/little_endian.h"

namespace ringrelay::queue {

namespace {

constexpr std::uint8_t suppression_flag_removal = 1;  // record.h: suppression record flags
constexpr std::uint8_t suppression_flag_reason = 2;

void put_str16(std::string& out, std::string_view s) {
    const std::size_t n = s.size() > 0xFFFF ? 0xFFFF : s.size();
    put_le<std::uint16_t>(out, static_cast<std::uint16_t>(n));
    out.append(s.substr(0, n));
}

class reader {
public:
    explicit reader(std::string_view b) : _b(b) {}
    template <typename Int>
    bool read(Int& v) {
        if (_b.size() - _off < sizeof(Int)) return false;
        v = get_le<Int>(_b, _off);
        _off += sizeof(Int);
        return true;
    }
    bool read_str16(std::string& s) {
        std::uint16_t n = 0;
        if (!read(n) || _b.size() - _off < n) return false;
        s.assign(_b.substr(_off, n));
        _off += n;
        return true;
    }
    [[nodiscard]] std::string_view rest() const { return _b.substr(_off); }

private:
    std::string_view _b;
    std::size_t _off = 0;
};

// Appends a version 1 record of `type` to `out`: the header, then `payload`. The CRC-32C,
// seeded with `seed` (the segment's salt; 0 for the segment record itself), covers the header
// after the magic (the CRC field excepted) and the payload.
void append_record(std::string& out, record_type type, std::uint64_t queue_id, std::uint64_t time_us,
                   std::string_view payload, std::uint32_t seed) {
    std::string header;
    put_le<std::uint32_t>(header, record_magic);
    put_le<std::uint8_t>(header, static_cast<std::uint8_t>(type));
    put_le<std::uint8_t>(header, 1);
    put_le<std::uint16_t>(header, 0);
    put_le<std::uint32_t>(header, static_cast<std::uint32_t>(payload.size()));
    put_le<std::uint32_t>(header, 0);
    put_le<std::uint64_t>(header, queue_id);
    put_le<std::uint64_t>(header, time_us);
    std::uint32_t crc = crc32c(seed, std::string_view(header).substr(4, 8));
    crc = crc32c(crc, std::string_view(header).substr(16));
    crc = crc32c(crc, payload);
    store_le(header.data() + 12, crc);
    out += header;
    out += payload;
}

}  // namespace

namespace {

// A message record (type message) or a copy made by compaction (type message_copy: the
// recipients' states first), message bytes excepted.
void encode_message_like(std::string& out, record_type type, const protocol::envelope& env, std::string_view client,
                         std::uint64_t received_us, std::string_view message, std::uint32_t salt,
                         std::span<const recipient_state> states, std::string_view campaign) {
    const std::size_t start = out.size();
    out.resize(start + record_header_size);
    const std::size_t payload_start = out.size();
    if (type == record_type::message_copy) {
        put_le<std::uint32_t>(out, static_cast<std::uint32_t>(states.size()));
        for (const recipient_state& st : states) {
            put_le<std::uint8_t>(out, static_cast<std::uint8_t>(st.status));
            put_le<std::uint8_t>(out, 0);
            put_le<std::uint16_t>(out, 0);
            put_le<std::uint32_t>(out, st.attempts);
            put_le<std::uint64_t>(out, st.next_attempt_us);
        }
    }
    put_le<std::uint8_t>(out, static_cast<std::uint8_t>(env.body));
    put_le<std::uint8_t>(out, env.smtputf8 ? 1 : 0);
    put_str16(out, env.helo);
    put_str16(out, client);
    put_str16(out, env.mail_from);
    // Version 2 only when there is an AUTH user, 3 only when there is a campaign: other records
    // stay as older relays wrote them.
    const std::uint8_t version = !campaign.empty() ? 3 : env.auth_user.empty() ? 1 : 2;
    if (version >= 2) put_str16(out, env.auth_user);
    if (version == 3) put_str16(out, campaign);
    put_le<std::uint32_t>(out, static_cast<std::uint32_t>(env.rcpt_to.size()));
    for (const std::string& r : env.rcpt_to) put_str16(out, r);
    const std::size_t payload_len = out.size() - payload_start + message.size();

    std::string header;
    put_le<std::uint32_t>(header, record_magic);
    put_le<std::uint8_t>(header, static_cast<std::uint8_t>(type));
    put_le<std::uint8_t>(header, version);
    put_le<std::uint16_t>(header, 0);
    put_le<std::uint32_t>(header, static_cast<std::uint32_t>(payload_len));
    put_le<std::uint32_t>(header, 0);  // crc placeholder
    put_le<std::uint64_t>(header, env.queue_id);
    put_le<std::uint64_t>(header, received_us);
    std::uint32_t crc = crc32c(salt, std::string_view(header).substr(4, 8));
    crc = crc32c(crc, std::string_view(header).substr(16));
    crc = crc32c(crc, std::string_view(out).substr(payload_start));
    crc = crc32c(crc, message);
    store_le(header.data() + 12, crc);
    std::memcpy(out.data() + start, header.data(), record_header_size);
}

}  // namespace

void encode_message_record(std::string& out, const protocol::envelope& env, std::string_view client,
                           std::uint64_t received_us, std::string_view message, std::uint32_t salt,
                           std::string_view campaign) {
    encode_message_like(out, record_type::message, env, client, received_us, message, salt, {}, campaign);
}

void encode_message_copy_record(std::string& out, const protocol::envelope& env, std::string_view client,
                                std::uint64_t received_us, std::string_view message,
                                std::span<const recipient_state> states, std::uint32_t salt,
                                std::string_view campaign) {
    encode_message_like(out, record_type::message_copy, env, client, received_us, message, salt, states, campaign);
    out.append(message);
}

void encode_outcome_record(std::string& out, std::uint64_t queue_id, std::uint64_t time_us, std::uint32_t rcpt_index,
                           recipient_status status, std::uint32_t attempts, std::uint64_t next_attempt_us,
                           std::uint32_t salt) {
    std::string payload;
    put_le<std::uint32_t>(payload, rcpt_index);
    put_le<std::uint8_t>(payload, static_cast<std::uint8_t>(status));
    put_le<std::uint8_t>(payload, 0);
    put_le<std::uint16_t>(payload, 0);
    put_le<std::uint32_t>(payload, attempts);
    put_le<std::uint64_t>(payload, next_attempt_us);
    append_record(out, record_type::outcome, queue_id, time_us, payload, salt);
}

void encode_suppression_record(std::string& out, std::string_view tenant, std::string_view address,
                               suppression_source source, std::uint64_t queue_id, std::uint64_t time_us,
                               std::uint32_t salt, std::string_view reason, suppression_change change) {
    std::string payload;
    put_le<std::uint8_t>(payload, static_cast<std::uint8_t>(source));
    const std::uint8_t flags = static_cast<std::uint8_t>((change == suppression_change::remove ? suppression_flag_removal : 0) |
                                                         (reason.empty() ? 0 : suppression_flag_reason));
    put_le<std::uint8_t>(payload, flags);
    put_le<std::uint16_t>(payload, 0);
    put_str16(payload, tenant);
    put_str16(payload, address);
    if (!reason.empty()) put_str16(payload, reason);
    append_record(out, record_type::suppression, queue_id, time_us, payload, salt);
}

void encode_segment_record(std::string& out, std::uint32_t salt) {
    std::string payload;
    put_le<std::uint32_t>(payload, salt);
    put_le<std::uint32_t>(payload, 0);
    append_record(out, record_type::segment, 0, 0, payload, 0);
}

std::string_view describe(decode_error e) noexcept {
    switch (e) {
        case decode_error::truncated: return "truncated record (torn write)";
        case decode_error::bad_magic: return "no record magic";
        case decode_error::bad_length: return "impossible record length";
        case decode_error::bad_checksum: return "checksum mismatch";
        case decode_error::bad_payload: return "malformed envelope";
    }
    return "unknown";
}

namespace {

// The header of the record at the start of `bytes` (at least record_header_size of them), with
// the checks that need no payload: known type and version, a possible length.
std::expected<decoded_message, decode_error> decode_header(std::string_view bytes) {
    decoded_message d;
    d.header.type = static_cast<record_type>(get_le<std::uint8_t>(bytes, 4));
    d.header.version = get_le<std::uint8_t>(bytes, 5);
    d.header.payload_length = get_le<std::uint32_t>(bytes, 8);
    d.header.crc = get_le<std::uint32_t>(bytes, 12);
    d.header.queue_id = get_le<std::uint64_t>(bytes, 16);
    d.header.received_us = get_le<std::uint64_t>(bytes, 24);
    const bool message_like = d.header.type == record_type::message || d.header.type == record_type::message_copy;
    const bool known_type = message_like || d.header.type == record_type::outcome ||
                            d.header.type == record_type::segment || d.header.type == record_type::suppression;
    // Versions 2 (the AUTH user) and 3 (and the campaign) exist for message records (and their
    // copies) only.
    const bool known_version = d.header.version == 1 || ((d.header.version == 2 || d.header.version == 3) && message_like);
    if (d.header.payload_length > max_payload_length || !known_type || !known_version ||
        (d.header.type == record_type::outcome && d.header.payload_length != outcome_payload_size) ||
        (d.header.type == record_type::segment && d.header.payload_length != segment_payload_size))
        return std::unexpected(decode_error::bad_length);
    d.record_size = record_header_size + d.header.payload_length;
    return d;
}

// The payload's fields into `d` (whose header is decoded). For a message (or a copy) the
// message bytes are whatever follows the envelope in `payload`: all of them, or none when
// only the descriptor was given.
std::expected<void, decode_error> decode_payload(decoded_message& d, std::string_view payload) {
    reader r(payload);
    if (d.header.type == record_type::segment) {
        std::uint32_t pad = 0;
        if (!r.read(d.salt) || !r.read(pad) || pad != 0 || d.header.queue_id != 0)
            return std::unexpected(decode_error::bad_payload);
        return {};
    }
    if (d.header.type == record_type::outcome) {
        std::uint8_t status = 0, pad8 = 0;
        std::uint16_t pad16 = 0;
        if (!r.read(d.rcpt_index) || !r.read(status) || !r.read(pad8) || !r.read(pad16) || !r.read(d.attempts) ||
            !r.read(d.next_attempt_us) || status < 1 || status > 4 || pad8 != 0 || pad16 != 0)
            return std::unexpected(decode_error::bad_payload);
        d.status = static_cast<recipient_status>(status);
        d.envelope.queue_id = d.header.queue_id;
        return {};
    }
    if (d.header.type == record_type::suppression) {
        std::uint8_t source = 0, flags = 0;
        std::uint16_t pad16 = 0;
        if (!r.read(source) || !r.read(flags) || !r.read(pad16) || !r.read_str16(d.tenant) ||
            !r.read_str16(d.address) || source < 1 || source > 4 ||
            (flags & ~(suppression_flag_removal | suppression_flag_reason)) != 0 || pad16 != 0 || d.tenant.empty() ||
            d.address.empty())
            return std::unexpected(decode_error::bad_payload);
        if ((flags & suppression_flag_reason) != 0 && (!r.read_str16(d.reason) || d.reason.empty()))
            return std::unexpected(decode_error::bad_payload);
        if (!r.rest().empty()) return std::unexpected(decode_error::bad_payload);
        d.source = static_cast<suppression_source>(source);
        d.change = (flags & suppression_flag_removal) != 0 ? suppression_change::remove : suppression_change::add;
        return {};
    }
    if (d.header.type == record_type::message_copy) {
        std::uint32_t states = 0;
        if (!r.read(states) || states > 1000000) return std::unexpected(decode_error::bad_payload);
        for (std::uint32_t i = 0; i < states; ++i) {
            std::uint8_t status = 0, pad8 = 0;
            std::uint16_t pad16 = 0;
            recipient_state st;
            if (!r.read(status) || !r.read(pad8) || !r.read(pad16) || !r.read(st.attempts) ||
                !r.read(st.next_attempt_us) || status > 4 || pad8 != 0 || pad16 != 0)
                return std::unexpected(decode_error::bad_payload);
            st.status = static_cast<recipient_status>(status);
            d.states.push_back(st);
        }
    }
    std::uint8_t body = 0, utf8 = 0;
    std::uint32_t count = 0;
    if (!r.read(body) || !r.read(utf8) || !r.read_str16(d.envelope.helo) || !r.read_str16(d.client) ||
        !r.read_str16(d.envelope.mail_from) ||
        (d.header.version == 2 && (!r.read_str16(d.envelope.auth_user) || d.envelope.auth_user.empty())) ||
        (d.header.version == 3 &&
         (!r.read_str16(d.envelope.auth_user) || !r.read_str16(d.campaign) || d.campaign.empty())) ||
        !r.read(count) || body > 1 || utf8 > 1 || count > 1000000)
        return std::unexpected(decode_error::bad_payload);
    d.envelope.body = static_cast<protocol::body_type>(body);
    d.envelope.smtputf8 = utf8 != 0;
    d.envelope.queue_id = d.header.queue_id;
    for (std::uint32_t i = 0; i < count; ++i) {
        std::string rcpt;
        if (!r.read_str16(rcpt)) return std::unexpected(decode_error::bad_payload);
        d.envelope.rcpt_to.push_back(std::move(rcpt));
    }
    if (d.header.type == record_type::message_copy && d.states.size() != d.envelope.rcpt_to.size())
        return std::unexpected(decode_error::bad_payload);
    d.message = r.rest();
    d.message_size = d.message.size();
    return {};
}

bool has_message_bytes(record_type t) noexcept { return t == record_type::message || t == record_type::message_copy; }

}  // namespace

std::expected<decoded_message, decode_error> decode_record(std::string_view bytes, std::uint32_t salt) {
    if (bytes.size() < 4) return std::unexpected(decode_error::truncated);
    if (get_le<std::uint32_t>(bytes, 0) != record_magic) return std::unexpected(decode_error::bad_magic);
    if (bytes.size() < record_header_size) return std::unexpected(decode_error::truncated);
    auto d = decode_header(bytes);
    if (!d) return d;
    if (bytes.size() - record_header_size < d->header.payload_length) return std::unexpected(decode_error::truncated);
    const std::string_view payload = bytes.substr(record_header_size, d->header.payload_length);
    std::uint32_t crc = crc32c(d->header.type == record_type::segment ? 0 : salt, bytes.substr(4, 8));
    crc = crc32c(crc, bytes.substr(16, 16));
    crc = crc32c(crc, payload);
    if (crc != d->header.crc) return std::unexpected(decode_error::bad_checksum);
    if (auto ok = decode_payload(*d, payload); !ok) return std::unexpected(ok.error());
    return d;
}

std::expected<void, decode_error> record_stream_check::add(std::string_view bytes) noexcept {
    if (_failed) return std::unexpected(decode_error::bad_length);
    if (bytes.size() > _size - _seen) {
        _failed = true;
        return std::unexpected(decode_error::bad_length);
    }
    if (_seen == 0) {
        if (bytes.size() < 4) {
            _failed = true;
            return std::unexpected(decode_error::truncated);
        }
        if (get_le<std::uint32_t>(bytes, 0) != record_magic) {
            _failed = true;
            return std::unexpected(decode_error::bad_magic);
        }
        if (bytes.size() < record_header_size) {
            _failed = true;
            return std::unexpected(decode_error::truncated);
        }
        auto d = decode_header(bytes);
        if (!d || !has_message_bytes(d->header.type) || d->record_size != _size) {
            _failed = true;
            return std::unexpected(d ? decode_error::bad_length : d.error());
        }
        _header = d->header;
        // As decode_record: the header after the magic, the CRC field excepted.
        _crc = crc32c(_crc, bytes.substr(4, 8));
        _crc = crc32c(_crc, bytes.substr(16, 16));
        _crc = crc32c(_crc, bytes.substr(record_header_size));
    } else {
        _crc = crc32c(_crc, bytes);
    }
    _seen += bytes.size();
    return {};
}

std::expected<void, decode_error> record_stream_check::finish() const noexcept {
    if (_failed || _seen == 0) return std::unexpected(decode_error::bad_length);
    if (_seen < _size) return std::unexpected(decode_error::truncated);
    if (_crc != _header.crc) return std::unexpected(decode_error::bad_checksum);
    return {};
}

std::expected<decoded_message, decode_error> decode_record_descriptor(std::string_view head, std::uint64_t message_size,
                                                                      std::uint32_t salt) {
    if (head.size() < 4) return std::unexpected(decode_error::truncated);
    if (get_le<std::uint32_t>(head, 0) != record_magic) return std::unexpected(decode_error::bad_magic);
    if (head.size() < record_header_size) return std::unexpected(decode_error::truncated);
    auto d = decode_header(head);
    if (!d) return d;
    const std::uint64_t given = head.size() - record_header_size;
    if (given + message_size != d->header.payload_length) return std::unexpected(decode_error::bad_length);
    if (!has_message_bytes(d->header.type)) {
        // Nothing left out: the whole record, its own CRC checked.
        if (message_size != 0) return std::unexpected(decode_error::bad_length);
        return decode_record(head, salt);
    }
    if (auto ok = decode_payload(*d, head.substr(record_header_size)); !ok) return std::unexpected(ok.error());
    // The descriptor ends where the message bytes begin: none of them may be in `head`.
    if (!d->message.empty()) return std::unexpected(decode_error::bad_payload);
    d->message = {};
    d->message_size = message_size;
    return d;
}

std::size_t record_descriptor_size(std::string_view bytes) noexcept {
    if (bytes.size() < record_header_size || get_le<std::uint32_t>(bytes, 0) != record_magic) return 0;
    auto d = decode_header(bytes);
    if (!d) return 0;
    const std::size_t available = std::min<std::size_t>(bytes.size(), d->record_size);
    if (!has_message_bytes(d->header.type)) return available == d->record_size ? available : 0;
    const std::string_view payload = bytes.substr(record_header_size, available - record_header_size);
    if (!decode_payload(*d, payload)) return 0;
    return available - d->message.size();
}

std::expected<std::string_view, std::string> message_read_back(std::string_view bytes, int read_result,
                                                                const record_location& where, std::uint64_t queue_id) {
    if (read_result < 0) return std::unexpected(std::string(std::strerror(-read_result)));
    if (static_cast<std::uint64_t>(read_result) < where.size)
        return std::unexpected("the segment ends " + std::to_string(where.size - static_cast<std::uint64_t>(read_result)) +
                               " bytes short of the record");
    auto rec = decode_record(bytes.substr(0, static_cast<std::size_t>(read_result)), where.salt);
    if (!rec) return std::unexpected(std::string(describe(rec.error())));
    if ((rec->header.type != record_type::message && rec->header.type != record_type::message_copy) ||
        rec->header.queue_id != queue_id)
        return std::unexpected(std::string("another record is there"));
    return rec->message;
}

}  // namespace ringrelay::queue
