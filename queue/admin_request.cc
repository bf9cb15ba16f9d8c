// queue/admin_request.cc: see admin_request.h.
#include "queue/admin_request.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <span>
#include <unordered_map>
#include <utility>

#include "core/ascii.h"
#include "core/clock.h"
#include "core/duration.h"
#include "core/log.h"
#include "protocol/server_session.h"
#include "queue/json_body.h"

namespace ringrelay::queue {

namespace {

struct field_rule {
    std::string_view name;
    admin_selector selector;  // all: not a selector
};

// The fields each action takes; the selectors among them are exclusive.
constexpr std::array<field_rule, 5> suspend_fields{{{"site", admin_selector::site},
                                                    {"provider", admin_selector::provider},
                                                    {"domain", admin_selector::domain},
                                                    {"tenant", admin_selector::tenant},
                                                    {"duration", admin_selector::all}}};
constexpr std::array<field_rule, 4> resume_fields{{{"site", admin_selector::site},
                                                   {"provider", admin_selector::provider},
                                                   {"domain", admin_selector::domain},
                                                   {"tenant", admin_selector::tenant}}};
constexpr std::array<field_rule, 1> flush_fields{{{"domain", admin_selector::domain}}};
constexpr std::array<field_rule, 4> bounce_fields{{{"domain", admin_selector::domain},
                                                   {"sender", admin_selector::sender},
                                                   {"queue_id", admin_selector::queue_id},
                                                   {"reason", admin_selector::all}}};

std::span<const field_rule> fields_of(admin_action action) noexcept {
    switch (action) {
    case admin_action::suspend: return suspend_fields;
    case admin_action::resume: return resume_fields;
    case admin_action::flush: return flush_fields;
    case admin_action::bounce: return bounce_fields;
    case admin_action::queue:
    case admin_action::message: break;
    }
    return {};
}

std::string json_quoted(std::string_view s) {
    std::string out = "\"";
    core::append_json_escaped(out, s);
    out += '"';
    return out;
}

// "\"site\", \"provider\"" for the selectors of `fields`.
std::string selector_list(std::span<const field_rule> fields) {
    std::string out;
    for (const field_rule& f : fields) {
        if (f.selector == admin_selector::all) continue;
        if (!out.empty()) out += ", ";
        out += json_quoted(f.name);
    }
    return out;
}

void append_time(std::string& out, std::uint64_t unix_us) {
    if (unix_us == 0) {
        out += "null";
        return;
    }
    out += json_quoted(core::iso8601_us(static_cast<std::int64_t>(unix_us)));
}

void append_string(std::string& out, std::string_view key, std::string_view value) {
    out += json_quoted(key);
    out += ": ";
    out += json_quoted(value);
}

void append_number(std::string& out, std::string_view key, std::uint64_t value) {
    out += json_quoted(key);
    out += ": ";
    out += std::to_string(value);
}

std::string_view state_name(site_state s) noexcept {
    switch (s) {
    case site_state::active: return "active";
    case site_state::backing_off: return "backing off";
    case site_state::suspended: return "suspended";
    }
    return "active";
}

// {"domain": "example.org"} or "all".
void append_selector(std::string& out, const admin_request& r) {
    if (r.selector == admin_selector::all) {
        out += "\"all\"";
        return;
    }
    out += "{";
    if (r.selector == admin_selector::queue_id) {
        append_string(out, "queue_id", protocol::format_queue_id(r.queue_id));
    } else {
        append_string(out, selector_name(r.selector), r.value);
    }
    out += "}";
}

using json_count = std::pair<std::string_view, std::uint64_t>;

// {"<verb>": <selector>, "<count>": n, ..., "until": T (if until_us), "<count>": n, ... without
// the closing brace: `before` comes before "until", `after` after it.
void append_counts(std::string& out, std::string_view verb, const admin_request& request,
                   std::initializer_list<json_count> before, std::initializer_list<json_count> after = {},
                   std::uint64_t until_us = 0) {
    out += "{";
    out += json_quoted(verb);
    out += ": ";
    append_selector(out, request);
    auto counts = [&out](std::initializer_list<json_count> list) {
        for (const auto& [key, value] : list) {
            out += ", ";
            append_number(out, key, value);
        }
    };
    counts(before);
    if (until_us != 0) {
        out += ", \"until\": ";
        append_time(out, until_us);
    }
    counts(after);
}

constexpr std::array<std::string_view, age_bucket_count> age_bucket_names{
    "0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160-320m", "320m+"};

// {"0-5m": n, ..., "320m+": n}
void append_ages(std::string& out, const age_counts& ages) {
    out += "{";
    for (std::size_t i = 0; i < ages.size(); ++i) {
        if (i != 0) out += ", ";
        append_number(out, age_bucket_names[i], ages[i]);
    }
    out += "}";
}

void render_queue(std::string& out, const admin_report& report) {
    std::vector<const site_row*> rows;
    rows.reserve(report.sites.size());
    for (const site_row& r : report.sites) rows.push_back(&r);
    std::sort(rows.begin(), rows.end(), [](const site_row* a, const site_row* b) { return a->site < b->site; });
    out += "{\"sites\": [";
    bool first = true;
    age_counts total{};
    for (const site_row* r : rows) {
        for (std::size_t i = 0; i < total.size(); ++i) total[i] += r->ages[i];
        out += first ? "\n  {" : ",\n  {";
        first = false;
        append_string(out, "site", r->site);
        out += ", ";
        append_number(out, "queued", r->queued);
        out += ", \"ages\": ";
        append_ages(out, r->ages);
        out += ", ";
        append_number(out, "deferred", r->deferred);
        out += ", ";
        append_number(out, "in_flight", r->in_flight);
        out += ", \"oldest\": ";
        append_time(out, r->oldest_us);
        out += ", \"next_attempt\": ";
        append_time(out, r->next_attempt_us);
        out += ", ";
        append_string(out, "state", state_name(r->state));
        if (r->owned) {
            out += ", ";
            append_number(out, "connections", r->connections);
            out += ", ";
            append_number(out, "connection_limit", r->connection_limit);
            out += ", \"message_rate\": ";
            if (r->rate_milli == 0) {
                out += "null";
            } else {
                // messages a second, with three decimals
                out += std::to_string(r->rate_milli / 1000) + "." + std::to_string(1000 + r->rate_milli % 1000).substr(1);
            }
        } else {
            out += ", \"connections\": 0, \"connection_limit\": null, \"message_rate\": null";
        }
        out += "}";
    }
    out += first ? "], \"ages\": " : "\n], \"ages\": ";
    append_ages(out, total);
    out += "}\n";
}

void render_message(std::string& out, const message_view& m, std::uint64_t now_us) {
    out += "{";
    append_string(out, "queue_id", protocol::format_queue_id(m.queue_id));
    out += ", ";
    append_number(out, "shard", m.shard);
    out += ", ";
    append_string(out, "sender", m.sender);
    out += ", ";
    append_string(out, "client", m.client);
    out += ", ";
    append_number(out, "size", m.size);
    out += ", \"received\": ";
    append_time(out, m.arrival_us);
    out += ", ";
    append_number(out, "age_seconds", now_us > m.arrival_us ? (now_us - m.arrival_us) / 1'000'000 : 0);
    out += ", \"next_attempt\": ";
    append_time(out, m.next_attempt_us);
    out += ", \"recipients\": [";
    bool first = true;
    for (const recipient_view& r : m.recipients) {
        out += first ? "\n  {" : ",\n  {";
        first = false;
        append_string(out, "address", r.address);
        out += ", ";
        append_string(out, "state", r.state);
        out += ", ";
        append_number(out, "attempts", r.attempts);
        out += ", \"last_reply\": ";
        out += r.last_reply.empty() ? "null" : json_quoted(r.last_reply);
        out += ", \"site\": ";
        out += r.site.empty() ? "null" : json_quoted(r.site);
        out += "}";
    }
    out += first ? "]}\n" : "\n]}\n";
}

}  // namespace

std::size_t age_bucket(std::uint64_t arrival_us, std::uint64_t now_us) noexcept {
    constexpr std::uint64_t minute_us = 60'000'000;
    // The upper ends of the buckets but the last: qshape's 5, 10, 20, ..., 320 minutes.
    constexpr std::array<std::uint64_t, age_bucket_count - 1> below{
        5 * minute_us, 10 * minute_us, 20 * minute_us, 40 * minute_us, 80 * minute_us, 160 * minute_us, 320 * minute_us};
    const std::uint64_t age = now_us > arrival_us ? now_us - arrival_us : 0;
    return static_cast<std::size_t>(std::upper_bound(below.begin(), below.end(), age) - below.begin());
}

std::string_view age_bucket_name(std::size_t i) noexcept {
    return i < age_bucket_names.size() ? age_bucket_names[i] : std::string_view();
}

std::string_view selector_name(admin_selector s) noexcept {
    switch (s) {
    case admin_selector::all: return "all";
    case admin_selector::site: return "site";
    case admin_selector::provider: return "provider";
    case admin_selector::domain: return "domain";
    case admin_selector::tenant: return "tenant";
    case admin_selector::sender: return "sender";
    case admin_selector::queue_id: return "queue_id";
    }
    return "all";
}

std::optional<std::uint64_t> parse_queue_id(std::string_view text) noexcept {
    if (text.size() != 16) return std::nullopt;
    std::uint64_t id = 0;
    for (const char c : text) {
        unsigned digit = 0;
        if (c >= '0' && c <= '9') {
            digit = static_cast<unsigned>(c - '0');
        } else if (c >= 'A' && c <= 'F') {
            digit = static_cast<unsigned>(c - 'A' + 10);
        } else if (c >= 'a' && c <= 'f') {
            digit = static_cast<unsigned>(c - 'a' + 10);
        } else {
            return std::nullopt;
        }
        id = id << 4 | digit;
    }
    return id;
}

std::expected<admin_request, std::string> parse_admin_body(admin_action action, std::string_view body) {
    admin_request r;
    r.action = action;
    const std::span<const field_rule> fields = fields_of(action);
    const bool blank = std::all_of(body.begin(), body.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
    if (blank && action == admin_action::flush) return r;  // everything
    simdjson::dom::parser parser;
    simdjson::dom::object top;
    if (auto ok = parse_json_body(parser, body, top); !ok) return std::unexpected(ok.error());
    bool have_duration = false;
    bool have_reason = false;
    for (auto field : top) {
        const std::string_view key = field.key;
        const auto rule = std::find_if(fields.begin(), fields.end(), [key](const field_rule& f) { return f.name == key; });
        if (rule == fields.end()) return std::unexpected("unknown field " + json_quoted(key));
        std::string_view value;
        if (field.value.get_string().get(value) != simdjson::SUCCESS)
            return std::unexpected(json_quoted(key) + ": expected a string");
        if (value.empty()) return std::unexpected(json_quoted(key) + ": empty");
        if (rule->selector == admin_selector::all) {
            if (key == "duration") {
                auto d = core::parse_duration(value);
                if (!d) return std::unexpected(json_quoted(key) + ": not a duration: " + d.error().message);
                if (d->count() <= 0) return std::unexpected(json_quoted(key) + ": must be more than 0");
                r.duration_us = static_cast<std::uint64_t>(d->count()) * 1000;
                have_duration = true;
            } else {  // reason
                r.reason.assign(value);
                have_reason = true;
            }
            continue;
        }
        if (r.selector != admin_selector::all)
            return std::unexpected("only one of " + selector_list(fields) + " may be given");
        r.selector = rule->selector;
        if (rule->selector == admin_selector::queue_id) {
            const auto id = parse_queue_id(value);
            if (!id) return std::unexpected(json_quoted(key) + ": not a queue id (16 hex digits): " + json_quoted(value));
            r.queue_id = *id;
        }
        r.value = core::ascii_lowered(value);
    }
    if (r.selector == admin_selector::all && action != admin_action::flush)
        return std::unexpected("one of " + selector_list(fields) + " is required");
    if (action == admin_action::suspend && !have_duration) return std::unexpected(std::string("\"duration\" is required"));
    if (action == admin_action::bounce && !have_reason) return std::unexpected(std::string("\"reason\" is required"));
    return r;
}

void merge(admin_report& into, admin_report&& from) {
    // Rows by site name: no reallocation below, so the views stay valid.
    into.sites.reserve(into.sites.size() + from.sites.size());
    std::unordered_map<std::string_view, std::size_t> at;
    at.reserve(into.sites.size() + from.sites.size());
    for (std::size_t i = 0; i < into.sites.size(); ++i) at.emplace(into.sites[i].site, i);
    for (site_row& row : from.sites) {
        const auto it = at.find(row.site);
        if (it == at.end()) {
            into.sites.push_back(std::move(row));
            at.emplace(into.sites.back().site, into.sites.size() - 1);
            continue;
        }
        site_row& r = into.sites[it->second];
        r.queued += row.queued;
        for (std::size_t i = 0; i < r.ages.size(); ++i) r.ages[i] += row.ages[i];
        r.in_flight += row.in_flight;
        r.deferred += row.deferred;
        if (row.oldest_us != 0 && (r.oldest_us == 0 || row.oldest_us < r.oldest_us)) r.oldest_us = row.oldest_us;
        if (row.next_attempt_us != 0 && (r.next_attempt_us == 0 || row.next_attempt_us < r.next_attempt_us))
            r.next_attempt_us = row.next_attempt_us;
        r.state = std::max(r.state, row.state);
        if (row.owned) {
            // The same site name split over egress sources or domain rules (several keys):
            // their connections and allowances add up.
            r.connections += row.connections;
            r.connection_limit += row.connection_limit;
            r.rate_milli = (r.owned && (r.rate_milli == 0 || row.rate_milli == 0)) ? 0 : r.rate_milli + row.rate_milli;
            r.owned = true;
        }
    }
    if (from.message && !into.message) into.message = std::move(from.message);
    into.messages += from.messages;
    into.recipients += from.recipients;
    into.in_flight += from.in_flight;
    into.sites_reached += from.sites_reached;
    into.suspensions = std::max(into.suspensions, from.suspensions);
    for (std::string& id : from.queue_ids) into.queue_ids.push_back(std::move(id));
}

std::string render_admin_report(const admin_request& request, const admin_report& report, std::uint64_t now_us) {
    std::string out;
    switch (request.action) {
    case admin_action::queue: render_queue(out, report); break;
    case admin_action::message:
        if (report.message) render_message(out, *report.message, now_us);
        break;
    case admin_action::suspend:
        append_counts(out, "suspended", request, {},
                      {{"sites", report.sites_reached}, {"messages", report.messages}}, now_us + request.duration_us);
        out += "}\n";
        break;
    case admin_action::resume:
        append_counts(out, "resumed", request,
                      {{"suspensions", report.suspensions}, {"sites", report.sites_reached}, {"messages", report.messages}});
        out += "}\n";
        break;
    case admin_action::flush:
        append_counts(out, "flushed", request, {{"messages", report.messages}, {"recipients", report.recipients}});
        out += "}\n";
        break;
    case admin_action::bounce: {
        std::vector<std::string> ids = report.queue_ids;
        std::sort(ids.begin(), ids.end());
        append_counts(out, "bounced", request,
                      {{"messages", report.messages}, {"recipients", report.recipients}, {"in_flight", report.in_flight}});
        out += ", \"queue_ids\": [";
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i != 0) out += ", ";
            out += json_quoted(ids[i]);
        }
        out += "]}\n";
        break;
    }
    }
    return out;
}

}  // namespace ringrelay::queue
