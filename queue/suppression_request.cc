// queue/suppression_request.cc: see suppression_request.h.
#include "queue/suppression_request.h"

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <tuple>
#include <unordered_set>

#include "core/ascii.h"
#include "core/clock.h"
#include "core/log.h"
#include "protocol/server_session.h"
#include "queue/json_body.h"

namespace ringrelay::queue {

namespace {

std::string json_quoted(std::string_view s) {
    std::string out = "\"";
    core::append_json_escaped(out, s);
    out += '"';
    return out;
}

// A tenant or an address: not empty, at most suppression_max_field bytes, no control
// characters or spaces (the journal and the listings keep them on one line).
std::expected<std::string, std::string> checked_value(std::string_view name, std::string_view value, bool address) {
    if (value.empty()) return std::unexpected(json_quoted(name) + ": empty");
    if (value.size() > suppression_max_field)
        return std::unexpected(json_quoted(name) + ": longer than " + std::to_string(suppression_max_field) + " bytes");
    for (const char c : value)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
            return std::unexpected(json_quoted(name) + ": holds a space or a control character");
    if (address) {
        const auto at = value.rfind('@');
        if (at == std::string_view::npos || at == 0 || at + 1 == value.size())
            return std::unexpected(json_quoted(name) + ": not an address (local@domain): " + json_quoted(value));
    }
    return core::ascii_lowered(value);
}

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// application/x-www-form-urlencoded (WHATWG URL §5.1): '+' is a space, %XX a byte.
std::expected<std::string, std::string> percent_decoded(std::string_view name, std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '+') {
            out += ' ';
        } else if (c == '%') {
            if (i + 2 >= text.size()) return std::unexpected(json_quoted(name) + ": bad percent-escape");
            const int hi = hex_value(text[i + 1]), lo = hex_value(text[i + 2]);
            if (hi < 0 || lo < 0) return std::unexpected(json_quoted(name) + ": bad percent-escape");
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else {
            out += c;
        }
    }
    return out;
}

struct query_pair {
    std::string name;
    std::string value;
};

// name=value pairs, each name once, each in `allowed`.
std::expected<std::vector<query_pair>, std::string> split_query(std::string_view query,
                                                                std::initializer_list<std::string_view> allowed) {
    std::vector<query_pair> out;
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view part = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (part.empty()) continue;
        const auto eq = part.find('=');
        auto name = percent_decoded("parameter", part.substr(0, eq));
        if (!name) return std::unexpected(name.error());
        if (std::find(allowed.begin(), allowed.end(), *name) == allowed.end())
            return std::unexpected("unknown parameter " + json_quoted(*name));
        if (std::any_of(out.begin(), out.end(), [&](const query_pair& p) { return p.name == *name; }))
            return std::unexpected(json_quoted(*name) + ": given twice");
        auto value = percent_decoded(*name, eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1));
        if (!value) return std::unexpected(value.error());
        out.push_back({std::move(*name), std::move(*value)});
    }
    return out;
}

std::string hex_encoded(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        out += digits[static_cast<unsigned char>(c) >> 4];
        out += digits[static_cast<unsigned char>(c) & 15];
    }
    return out;
}

// The cursor is the hex of "tenant\0address" of the last entry of the page.
std::string make_cursor(const suppression_entry& e) {
    std::string raw = e.tenant;
    raw += '\0';
    raw += e.address;
    return hex_encoded(raw);
}

bool read_cursor(std::string_view text, suppression_query& q) {
    if (text.empty() || text.size() % 2 != 0 || text.size() > 4 * suppression_max_field) return false;
    std::string raw;
    for (std::size_t i = 0; i < text.size(); i += 2) {
        const int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
        if (hi < 0 || lo < 0) return false;
        raw += static_cast<char>(hi * 16 + lo);
    }
    const auto nul = raw.find('\0');
    if (nul == std::string::npos || nul == 0 || nul + 1 == raw.size() || raw.find('\0', nul + 1) != std::string::npos)
        return false;
    q.after = true;
    q.after_tenant = raw.substr(0, nul);
    q.after_address = raw.substr(nul + 1);
    return true;
}

// The common part of POST and DELETE bodies.
std::expected<suppression_change_request, std::string> parse_change(std::string_view body, bool with_reason) {
    suppression_change_request r;
    simdjson::dom::parser parser;
    simdjson::dom::object top;
    if (auto ok = parse_json_body(parser, body, top); !ok) return std::unexpected(ok.error());
    bool have_tenant = false, have_address = false, have_addresses = false, have_reason = false;
    std::unordered_set<std::string> seen;
    auto add_address = [&](std::string_view name, std::string_view value) -> std::expected<void, std::string> {
        auto a = checked_value(name, value, true);
        if (!a) return std::unexpected(a.error());
        if (seen.insert(*a).second) r.addresses.push_back(std::move(*a));
        return {};
    };
    for (auto field : top) {
        const std::string_view key = field.key;
        if (key == "tenant" || key == "address" || (key == "reason" && with_reason)) {
            bool& have = key == "tenant" ? have_tenant : key == "address" ? have_address : have_reason;
            if (have) return std::unexpected(json_quoted(key) + ": given twice");
            have = true;
            std::string_view value;
            if (field.value.get_string().get(value) != simdjson::SUCCESS)
                return std::unexpected(json_quoted(key) + ": expected a string");
            if (key == "tenant") {
                auto t = checked_value(key, value, false);
                if (!t) return std::unexpected(t.error());
                r.tenant = std::move(*t);
            } else if (key == "address") {
                if (auto ok = add_address(key, value); !ok) return std::unexpected(ok.error());
            } else {
                if (value.size() > suppression_max_reason)
                    return std::unexpected(json_quoted(key) + ": longer than " + std::to_string(suppression_max_reason) +
                                           " bytes");
                if (std::any_of(value.begin(), value.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
                    return std::unexpected(json_quoted(key) + ": holds a control character");
                r.reason.assign(value);
            }
            continue;
        }
        if (key == "addresses") {
            if (have_addresses) return std::unexpected(json_quoted(key) + ": given twice");
            have_addresses = true;
            simdjson::dom::array list;
            if (field.value.get_array().get(list) != simdjson::SUCCESS)
                return std::unexpected(json_quoted(key) + ": expected an array of strings");
            if (list.size() == 0) return std::unexpected(json_quoted(key) + ": empty");
            if (list.size() > suppression_max_addresses)
                return std::unexpected(json_quoted(key) + ": more than " + std::to_string(suppression_max_addresses) +
                                       " addresses");
            for (auto item : list) {
                std::string_view value;
                if (item.get_string().get(value) != simdjson::SUCCESS)
                    return std::unexpected(json_quoted(key) + ": expected an array of strings");
                if (auto ok = add_address(key, value); !ok) return std::unexpected(ok.error());
            }
            continue;
        }
        return std::unexpected("unknown field " + json_quoted(key));
    }
    if (!have_tenant) return std::unexpected(std::string("\"tenant\" is required"));
    if (have_address && have_addresses) return std::unexpected(std::string("only one of \"address\", \"addresses\" may be given"));
    if (!have_address && !have_addresses) return std::unexpected(std::string("one of \"address\", \"addresses\" is required"));
    return r;
}

}  // namespace

std::string_view target_query(std::string_view target) noexcept {
    const auto q = target.find('?');
    return q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
}

std::expected<suppression_query, std::string> parse_suppression_query(std::string_view query) {
    suppression_query q;
    auto pairs = split_query(query, {"tenant", "address", "limit", "cursor"});
    if (!pairs) return std::unexpected(pairs.error());
    for (const query_pair& p : *pairs) {
        if (p.name == "tenant" || p.name == "address") {
            auto v = checked_value(p.name, p.value, p.name == "address");
            if (!v) return std::unexpected(v.error());
            (p.name == "tenant" ? q.tenant : q.address) = std::move(*v);
        } else if (p.name == "limit") {
            std::size_t n = 0;
            const auto [end, ec] = std::from_chars(p.value.data(), p.value.data() + p.value.size(), n);
            if (ec != std::errc{} || end != p.value.data() + p.value.size() || n < 1 || n > suppression_max_limit)
                return std::unexpected("\"limit\": not a number from 1 to " + std::to_string(suppression_max_limit));
            q.limit = n;
        } else if (!read_cursor(p.value, q)) {
            return std::unexpected(std::string("\"cursor\": not a cursor this API gave (next_cursor)"));
        }
    }
    return q;
}

std::expected<suppression_change_request, std::string> parse_suppression_add(std::string_view body) {
    return parse_change(body, true);
}

std::expected<suppression_change_request, std::string> parse_suppression_remove(std::string_view body,
                                                                              std::string_view query) {
    const bool blank = std::all_of(body.begin(), body.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
    if (!blank) {
        if (!query.empty()) return std::unexpected(std::string("give tenant and address in the body or the query, not both"));
        return parse_change(body, false);
    }
    auto pairs = split_query(query, {"tenant", "address"});
    if (!pairs) return std::unexpected(pairs.error());
    suppression_change_request r;
    for (const query_pair& p : *pairs) {
        auto v = checked_value(p.name, p.value, p.name == "address");
        if (!v) return std::unexpected(v.error());
        if (p.name == "tenant") r.tenant = std::move(*v);
        else r.addresses.push_back(std::move(*v));
    }
    if (r.tenant.empty()) return std::unexpected(std::string("\"tenant\" is required"));
    if (r.addresses.empty()) return std::unexpected(std::string("\"address\" is required"));
    return r;
}

suppression_page select_suppressions(const std::vector<suppression_entry>& entries, const suppression_query& q) {
    suppression_page page;
    for (const suppression_entry& e : entries) {
        if (!q.tenant.empty() && e.tenant != q.tenant) continue;
        if (!q.address.empty() && e.address != q.address) continue;
        ++page.matched;
        if (q.after && std::tie(e.tenant, e.address) <= std::tie(q.after_tenant, q.after_address)) continue;
        if (page.entries.size() == q.limit) {
            page.more = true;
            continue;
        }
        page.entries.push_back(&e);
    }
    if (page.more) page.next_cursor = make_cursor(*page.entries.back());
    return page;
}

std::string render_suppression_page(const suppression_page& page, std::uint32_t ttl_s) {
    std::string out = "{\"suppressions\": [";
    bool first = true;
    for (const suppression_entry* e : page.entries) {
        out += first ? "\n  {" : ",\n  {";
        first = false;
        out += "\"tenant\": " + json_quoted(e->tenant);
        out += ", \"address\": " + json_quoted(e->address);
        out += ", \"added\": " + json_quoted(core::iso8601_us(static_cast<std::int64_t>(e->time_us)));
        out += ", \"expires\": ";
        out += ttl_s == 0 ? std::string("null")
                          : json_quoted(core::iso8601_us(static_cast<std::int64_t>(e->time_us + std::uint64_t{ttl_s} * 1000000)));
        out += ", \"source\": " + json_quoted(suppression_source_name(e->source));
        out += ", \"reason\": ";
        out += e->reason.empty() ? std::string("null") : json_quoted(e->reason);
        out += ", \"queue_id\": ";
        out += e->queue_id == 0 ? std::string("null") : json_quoted(protocol::format_queue_id(e->queue_id));
        out += "}";
    }
    out += first ? "]" : "\n]";
    out += ", \"count\": " + std::to_string(page.entries.size());
    out += ", \"matched\": " + std::to_string(page.matched);
    out += ", \"next_cursor\": ";
    out += page.more ? json_quoted(page.next_cursor) : std::string("null");
    out += "}\n";
    return out;
}

}  // namespace ringrelay::queue
