// queue/warmup.cc: see warmup.h.
#include "queue/warmup.h"

#include "core/clock.h"
#include "core/log.h"

#include <simdjson.h>

#include <algorithm>
#include <tuple>

namespace ringrelay::queue {

warmup_ledger::limit warmup_ledger::limit_of(const shaping_rules& rules, std::string_view source,
                                             std::string_view provider, std::int64_t day) {
    limit l;
    const source_warmup* w = rules.find_warmup(source);
    if (w == nullptr) return l;
    const warmup_schedule* schedule = w->schedule_for(provider, l.counted_as);
    if (schedule == nullptr) return l;
    const std::optional<std::uint64_t> allowance = warmup_allowance(*schedule, day);
    if (!allowance) return l;  // warmed: the schedule is over
    std::string key(source);
    key += '\n';
    key += l.counted_as;
    counter& c = _counters[key];
    if (c.day != day) c = counter{day, 0, false};  // a new day: nothing counted yet
    l.entry = &c;
    l.allowance = *allowance;
    l.share = warmup_share(*allowance, _shard, _shards);
    return l;
}

void warmup_ledger::report(const limit& l, std::string_view source, std::int64_t day,
                           std::vector<warmup_used_up>& used_up) {
    if (l.entry->reported) return;
    l.entry->reported = true;
    used_up.push_back(warmup_used_up{std::string(source), std::string(l.counted_as), day, l.allowance, l.share});
}

bool warmup_ledger::allows(const shaping_rules& rules, std::string_view source, std::string_view provider,
                           std::int64_t day, std::vector<warmup_used_up>& used_up) {
    const limit l = limit_of(rules, source, provider, day);
    if (l.entry == nullptr || l.entry->used < l.share) return true;
    report(l, source, day, used_up);
    return false;
}

void warmup_ledger::count(const shaping_rules& rules, std::string_view source, std::string_view provider,
                          std::int64_t day, std::vector<warmup_used_up>& used_up) {
    const limit l = limit_of(rules, source, provider, day);
    if (l.entry == nullptr) return;
    ++_version;
    if (++l.entry->used >= l.share) report(l, source, day, used_up);
}

void warmup_ledger::seed(const warmup_count& c) {
    std::string key = c.source;
    key += '\n';
    key += c.counted_as;
    counter& entry = _counters[key];
    if (entry.day != c.day) entry = counter{c.day, 0, false};
    entry.used += c.used;
    ++_version;
}

void warmup_ledger::counts(std::vector<warmup_count>& out) const {
    out.clear();
    for (const auto& [key, c] : _counters) {
        const std::size_t nl = key.find('\n');
        out.push_back(warmup_count{key.substr(0, nl), key.substr(nl + 1), c.day, c.used});
    }
}

std::string format_warmup_journal(const std::vector<warmup_count>& totals) {
    std::string out;
    for (const warmup_count& c : totals) {
        out += "{\"day\":\"";
        out += core::iso8601_us(c.day * 86'400'000'000).substr(0, 10);
        out += "\",\"source\":\"";
        core::append_json_escaped(out, c.source);
        out += "\",\"counted_as\":\"";
        core::append_json_escaped(out, c.counted_as);
        out += "\",\"used\":";
        out += std::to_string(c.used);
        out += "}\n";
    }
    return out;
}

std::expected<std::vector<warmup_count>, std::string> parse_warmup_journal(std::string_view text) {
    std::vector<warmup_count> out;
    simdjson::dom::parser parser;
    std::size_t line_no = 0;
    for (std::size_t at = 0; at < text.size();) {
        std::size_t end = text.find('\n', at);
        if (end == std::string_view::npos) end = text.size();
        const std::string_view line = text.substr(at, end - at);
        at = end + 1;
        ++line_no;
        if (line.empty()) continue;
        auto fail = [&](std::string_view why) {
            return std::unexpected("line " + std::to_string(line_no) + ": " + std::string(why));
        };
        simdjson::dom::object o;
        if (parser.parse(simdjson::padded_string(line)).get_object().get(o) != simdjson::SUCCESS)
            return fail("not a JSON object");
        warmup_count c;
        std::string_view day, source, counted_as;
        std::uint64_t used = 0;
        if (o["day"].get_string().get(day) != simdjson::SUCCESS) return fail("\"day\" must be a string");
        const auto d = parse_civil_date(day);
        if (!d) return fail("\"day\" must be a date, YYYY-MM-DD");
        if (o["source"].get_string().get(source) != simdjson::SUCCESS || source.empty())
            return fail("\"source\" must be a non-empty string");
        if (o["counted_as"].get_string().get(counted_as) != simdjson::SUCCESS)
            return fail("\"counted_as\" must be a string");
        if (o["used"].get_uint64().get(used) != simdjson::SUCCESS) return fail("\"used\" must be a non-negative integer");
        out.push_back(warmup_count{std::string(source), std::string(counted_as), *d, used});
    }
    return out;
}

std::vector<warmup_count> warmup_totals(const std::vector<warmup_count>& counts, std::int64_t day) {
    std::vector<warmup_count> out;
    for (const warmup_count& c : counts) {
        if (c.day != day || c.used == 0) continue;
        auto it = std::find_if(out.begin(), out.end(), [&](const warmup_count& o) {
            return o.source == c.source && o.counted_as == c.counted_as;
        });
        if (it == out.end()) {
            out.push_back(c);
        } else {
            it->used += c.used;
        }
    }
    std::sort(out.begin(), out.end(), [](const warmup_count& a, const warmup_count& b) {
        return std::tie(a.source, a.counted_as) < std::tie(b.source, b.counted_as);
    });
    return out;
}

std::vector<warmup_count> warmup_seed(const std::vector<warmup_count>& totals, unsigned shard, unsigned shards) {
    std::vector<warmup_count> out;
    for (const warmup_count& c : totals) {
        warmup_count part = c;
        part.used = warmup_share(c.used, shard, shards);
        if (part.used != 0) out.push_back(std::move(part));
    }
    return out;
}

std::uint64_t warmup_ledger::used(std::string_view source, std::string_view counted_as, std::int64_t day) const {
    std::string key(source);
    key += '\n';
    key += counted_as;
    const auto it = _counters.find(key);
    return it == _counters.end() || it->second.day != day ? 0 : it->second.used;
}

bool pool_has_warmup(const egress_table& table, const egress_pool& pool, const shaping_rules& rules) {
    if (rules.warmup.empty()) return false;
    for (const egress_pool::member& m : pool.members)
        if (rules.find_warmup(table.sources()[m.source].name) != nullptr) return true;
    return false;
}

std::optional<std::uint32_t> choose_warm_source(egress_chooser& chooser, warmup_ledger& ledger,
                                                const egress_table& table, const egress_pool& pool,
                                                const shaping_rules& rules, std::string_view provider,
                                                std::int64_t day, std::vector<warmup_used_up>& used_up) {
    const auto chosen = chooser.next_eligible(pool, [&](std::uint32_t source) {
        return ledger.allows(rules, table.sources()[source].name, provider, day, used_up);
    });
    if (chosen) ledger.count(rules, table.sources()[*chosen].name, provider, day, used_up);
    return chosen;
}

void append_warmup_record(std::string& line, const warmup_used_up& u, unsigned shard, std::int64_t unix_us) {
    line += "{\"type\":\"Shaping\",\"time\":\"";
    line += core::iso8601_us(unix_us);
    line += "\",\"source\":\"";
    core::append_json_escaped(line, u.source);
    line += "\",\"event\":\"warmup_used_up\",\"provider\":";
    if (u.provider.empty()) {
        line += "null";
    } else {
        line += '"';
        core::append_json_escaped(line, u.provider);
        line += '"';
    }
    line += ",\"day\":\"";
    line += core::iso8601_us(u.day * 86'400'000'000).substr(0, 10);
    line += "\",\"allowance\":";
    line += std::to_string(u.allowance);
    line += ",\"shard\":";
    line += std::to_string(shard);
    line += ",\"share\":";
    line += std::to_string(u.share);
    line += "}\n";
}

}  // namespace ringrelay::queue
