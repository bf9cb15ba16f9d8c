// core/dns_message.cc: see dns_message.h.
#include "core/dns_message.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace ringrelay::core {

namespace {

struct reader {
    std::span<const std::uint8_t> msg;

    [[nodiscard]] bool has(std::size_t pos, std::size_t n) const noexcept {
        return pos <= msg.size() && n <= msg.size() - pos;
    }
    [[nodiscard]] std::uint16_t u16(std::size_t pos) const noexcept {
        return static_cast<std::uint16_t>((msg[pos] << 8) | msg[pos + 1]);
    }
    [[nodiscard]] std::uint32_t u32(std::size_t pos) const noexcept {
        return (static_cast<std::uint32_t>(msg[pos]) << 24) | (static_cast<std::uint32_t>(msg[pos + 1]) << 16) |
               (static_cast<std::uint32_t>(msg[pos + 2]) << 8) | msg[pos + 3];
    }

    // Reads the (possibly compressed) name at `pos` into `out` (presentation form: lower-case
    // letters, other bytes outside [a-z0-9-] as \DDD so that a label holding a dot cannot pose
    // as two labels). Returns the position just past the name where it sits in the message.
    [[nodiscard]] std::expected<std::size_t, dns_message_error>
    name(std::size_t pos, std::string* out) const {
        std::size_t end = 0;  // 0: not yet jumped
        std::size_t hops = 0;
        std::size_t wire_length = 0;
        std::size_t limit = pos;  // a pointer must point before the label that holds it
        if (out != nullptr) out->clear();
        for (;;) {
            if (!has(pos, 1)) return std::unexpected(dns_message_error::truncated);
            const std::uint8_t len = msg[pos];
            if ((len & 0xC0) == 0xC0) {
                if (!has(pos, 2)) return std::unexpected(dns_message_error::truncated);
                const std::size_t target = static_cast<std::size_t>(((len & 0x3F) << 8) | msg[pos + 1]);
                if (target >= limit || ++hops > max_name_hops) return std::unexpected(dns_message_error::bad_name);
                if (end == 0) end = pos + 2;
                pos = target;
                limit = target;
                continue;
            }
            if ((len & 0xC0) != 0) return std::unexpected(dns_message_error::bad_name);
            if (len == 0) {
                if (end == 0) end = pos + 1;
                return end;
            }
            if (!has(pos + 1, len)) return std::unexpected(dns_message_error::truncated);
            wire_length += 1u + len;
            if (wire_length > 255) return std::unexpected(dns_message_error::bad_name);  // RFC 1035 §3.1
            if (out != nullptr) {
                if (!out->empty()) out->push_back('.');
                for (std::size_t i = 0; i < len; ++i) {
                    const std::uint8_t c = msg[pos + 1 + i];
                    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
                        out->push_back(static_cast<char>(c));
                    } else if (c >= 'A' && c <= 'Z') {
                        out->push_back(static_cast<char>(c - 'A' + 'a'));
                    } else {
                        const char esc[4] = {'\\', static_cast<char>('0' + c / 100),
                                             static_cast<char>('0' + c / 10 % 10), static_cast<char>('0' + c % 10)};
                        out->append(esc, 4);
                    }
                }
            }
            pos += 1u + len;
        }
    }
};

struct rr_header {
    std::string owner;
    std::uint16_t type = 0;
    std::uint16_t klass = 0;
    std::uint32_t ttl = 0;
    std::size_t rdata = 0;  // offset
    std::uint16_t rdlength = 0;
};

std::expected<std::size_t, dns_message_error> read_rr(const reader& r, std::size_t pos, rr_header& h) {
    auto after = r.name(pos, &h.owner);
    if (!after) return std::unexpected(after.error());
    pos = *after;
    if (!r.has(pos, 10)) return std::unexpected(dns_message_error::truncated);
    h.type = r.u16(pos);
    h.klass = r.u16(pos + 2);
    h.ttl = r.u32(pos + 4);
    if (h.ttl > 0x7FFFFFFFu) h.ttl = 0;  // RFC 2181 §8
    h.rdlength = r.u16(pos + 8);
    h.rdata = pos + 10;
    if (!r.has(h.rdata, h.rdlength)) return std::unexpected(dns_message_error::truncated);
    return h.rdata + h.rdlength;
}

constexpr std::uint16_t class_in = 1;

}  // namespace

std::string normalize_dns_name(std::string_view name) {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    std::string out(name);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

bool valid_host_name(std::string_view name) noexcept {
    if (!name.empty() && name.back() == '.') name.remove_suffix(1);
    if (name.empty() || name.size() > max_dns_name) return false;
    std::size_t label = 0;
    char prev = '.';
    for (const char c : name) {
        if (c == '.') {
            if (label == 0 || prev == '-') return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            ++label;
        } else if (c == '-') {
            if (label == 0) return false;
            ++label;
        } else {
            return false;
        }
        if (label > max_dns_label) return false;
        prev = c;
    }
    return label != 0 && prev != '-';
}

std::expected<dns_answer, dns_message_error>
parse_dns_answer(std::span<const std::uint8_t> message, std::string_view qname, dns_type qtype) {
    const reader r{message};
    if (!r.has(0, 12)) return std::unexpected(dns_message_error::truncated);
    if ((message[2] & 0x80) == 0) return std::unexpected(dns_message_error::not_a_response);
    dns_answer answer;
    answer.rcode = message[3] & 0x0F;
    const std::size_t qdcount = r.u16(4);
    const std::size_t ancount = r.u16(6);
    const std::size_t nscount = r.u16(8);

    std::size_t pos = 12;
    for (std::size_t i = 0; i < qdcount; ++i) {
        auto after = r.name(pos, nullptr);
        if (!after) return std::unexpected(after.error());
        pos = *after + 4;
        if (pos > message.size()) return std::unexpected(dns_message_error::truncated);
    }

    // Answer section: keep the headers, decide ownership once the CNAME chain is known.
    std::vector<rr_header> answers;
    std::size_t budget = max_answer_records;
    for (std::size_t i = 0; i < ancount && budget > 0; ++i, --budget) {
        rr_header h;
        auto after = read_rr(r, pos, h);
        if (!after) return std::unexpected(after.error());
        pos = *after;
        if (h.klass != class_in) continue;
        const bool wanted = h.type == static_cast<std::uint16_t>(qtype) ||
                            h.type == static_cast<std::uint16_t>(dns_type::cname);
        if (wanted) answers.push_back(std::move(h));
    }
    // Authority section: only an SOA matters (negative caching). Not reached when the answer
    // section was cut short by the budget.
    if (budget > 0 && ancount <= max_answer_records) {
        for (std::size_t i = 0; i < nscount && budget > 0; ++i, --budget) {
            rr_header h;
            auto after = read_rr(r, pos, h);
            if (!after) return std::unexpected(after.error());
            pos = *after;
            if (h.type != static_cast<std::uint16_t>(dns_type::soa) || h.klass != class_in) continue;
            auto mname_end = r.name(h.rdata, nullptr);
            if (!mname_end) return std::unexpected(mname_end.error());
            auto rname_end = r.name(*mname_end, nullptr);
            if (!rname_end) return std::unexpected(rname_end.error());
            if (*rname_end + 20 != h.rdata + h.rdlength) return std::unexpected(dns_message_error::bad_rdata);
            std::uint32_t minimum = r.u32(*rname_end + 16);
            if (minimum > 0x7FFFFFFFu) minimum = 0;
            answer.negative_ttl = std::min(h.ttl, minimum);
            break;
        }
    }

    // Follow the CNAME chain from the query name (RFC 1034 §3.6.2).
    std::string owner = normalize_dns_name(qname);
    std::uint32_t ttl = 0x7FFFFFFFu;
    for (std::size_t hop = 0; hop < max_cname_chain; ++hop) {
        const auto it = std::find_if(answers.begin(), answers.end(), [&](const rr_header& h) {
            return h.type == static_cast<std::uint16_t>(dns_type::cname) && h.owner == owner;
        });
        if (it == answers.end()) break;
        std::string target;
        auto end = r.name(it->rdata, &target);
        if (!end) return std::unexpected(end.error());
        if (*end != it->rdata + it->rdlength) return std::unexpected(dns_message_error::bad_rdata);
        ttl = std::min(ttl, it->ttl);
        owner = std::move(target);
    }

    for (const rr_header& h : answers) {
        if (h.owner != owner || h.type != static_cast<std::uint16_t>(qtype)) continue;
        if (qtype == dns_type::mx) {
            if (h.rdlength < 3) return std::unexpected(dns_message_error::bad_rdata);
            dns_mx_record mx;
            mx.preference = r.u16(h.rdata);
            auto end = r.name(h.rdata + 2, &mx.exchange);
            if (!end) return std::unexpected(end.error());
            if (*end != h.rdata + h.rdlength) return std::unexpected(dns_message_error::bad_rdata);
            mx.ttl = h.ttl;
            answer.mx.push_back(std::move(mx));
        } else if (qtype == dns_type::a || qtype == dns_type::aaaa) {
            const std::size_t size = qtype == dns_type::a ? 4 : 16;
            if (h.rdlength != size) return std::unexpected(dns_message_error::bad_rdata);
            dns_address_record a;
            a.family = qtype == dns_type::a ? AF_INET : AF_INET6;
            std::memcpy(a.bytes, message.data() + h.rdata, size);
            a.ttl = h.ttl;
            answer.addresses.push_back(a);
        } else {
            continue;
        }
        ttl = std::min(ttl, h.ttl);
    }
    answer.ttl = answer.mx.empty() && answer.addresses.empty() ? 0 : ttl;
    return answer;
}

}  // namespace ringrelay::core
