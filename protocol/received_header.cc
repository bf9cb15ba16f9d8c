// protocol/received_header.cc: the Received: header (RFC 5321 §4.4) and queue id text.
// SECURITY: filters control octets so a field can never inject a header line.
#include "protocol/received_header.h"

#include "protocol/server_session.h"

namespace ringrelay::protocol {
namespace {

void append_clean(std::string& out, std::string_view field) {
    for (const char c : field) {
        const auto u = static_cast<unsigned char>(c);
        out.push_back((u < 0x20 || u == 0x7f) ? '?' : c);
    }
}

}  // namespace

void write_queue_id(std::uint64_t id, char* out) noexcept {
    constexpr char digits[] = "0123456789ABCDEF";
    for (std::size_t i = 0; i < queue_id_length; ++i) {
        out[queue_id_length - 1 - i] = digits[id & 0xf];
        id >>= 4;
    }
}

std::string format_queue_id(std::uint64_t id) {
    std::string s(queue_id_length, '0');
    write_queue_id(id, s.data());
    return s;
}

void append_received_header(std::string& out, const received_fields& f) {
    out.append("Received: from ");
    append_clean(out, f.helo);
    out.append(" (");
    append_clean(out, f.client_address);
    out.append(")\r\n\t");
    if (!f.tls.empty()) {
        out.append("(using ");
        append_clean(out, f.tls);
        out.append(")\r\n\t");
    }
    out.append("by ");
    append_clean(out, f.hostname);
    out.append(" (ringrelay) with ");
    out.append(f.protocol);
    out.append(" id ");
    char id[queue_id_length];
    write_queue_id(f.queue_id, id);
    out.append(id, queue_id_length);
    if (!f.recipient.empty()) {
        out.append("\r\n\tfor <");
        append_clean(out, f.recipient);
        out.push_back('>');
    }
    out.append("; ");
    append_clean(out, f.date);
    out.append("\r\n");
}

}  // namespace ringrelay::protocol
