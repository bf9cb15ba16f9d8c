// queue/campaign_header.cc: see campaign_header.h.
#include "queue/campaign_header.h"

#include "core/ascii.h"
#include "protocol/dkim_canon.h"
#include "queue/shaping_rules.h"

namespace ringrelay::queue {

namespace {

constexpr bool is_wsp(char c) noexcept { return c == ' ' || c == '\t'; }
constexpr bool is_line_end(char c) noexcept { return c == '\r' || c == '\n'; }

// The value of field `raw` (after its colon): unfolded, whitespace runs made one space, trimmed;
// "" if it is not 1..max_campaign_name octets of printable US-ASCII.
std::string campaign_value(std::string_view raw) {
    const std::size_t colon = raw.find(':');
    std::string out;
    bool space = false;
    for (const char c : raw.substr(colon + 1)) {
        if (is_line_end(c)) continue;  // unfolding: the line end goes, the WSP after it stays
        if (is_wsp(c)) {
            space = !out.empty();
            continue;
        }
        if (c < 0x20 || c > 0x7e) return {};
        if (space) out += ' ';
        space = false;
        out += c;
        if (out.size() > max_campaign_name) return {};
    }
    return out;
}

}  // namespace

campaign_fields find_campaign_fields(std::string_view message, std::string_view name) {
    campaign_fields found;
    if (name.empty()) return found;
    for (const protocol::dkim::header_field& f : protocol::dkim::split_header_fields(message)) {
        if (!core::iequals(f.name, name)) continue;
        field_span span{static_cast<std::size_t>(f.raw.data() - message.data()), f.raw.size()};
        // Its line end: CRLF, or a lone CR or LF; none at the end of the message.
        const std::size_t end = span.offset + span.size;
        if (end < message.size()) span.size += (message[end] == '\r' && end + 1 < message.size() && message[end + 1] == '\n') ? 2 : 1;
        if (found.fields.empty()) found.campaign = campaign_value(f.raw);
        found.fields.push_back(span);
    }
    return found;
}

void append_without_fields(std::string& out, std::string_view message, std::span<const field_span> fields) {
    std::size_t at = 0;
    for (const field_span& f : fields) {
        out.append(message.substr(at, f.offset - at));
        at = f.offset + f.size;
    }
    out.append(message.substr(at));
}

}  // namespace ringrelay::queue
