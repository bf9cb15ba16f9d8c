// queue/warmup.cc: see warmup.h.
#include "queue/warmup.h"

#include "core/clock.h"
#include "core/log.h"

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
    if (++l.entry->used >= l.share) report(l, source, day, used_up);
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
