// queue/warmup.h: IP warm-up (issue 17): how many messages an egress source may send a day while
// its address builds a reputation, from the schedules of the shaping rules' top-level "warmup"
// (queue/shaping_rules.h, source_warmup), and the choice of a message's source that keeps to it.
//
// Days are UTC calendar days (unix time / 86400 s). A source's schedule for a site is its
// provider's own when the source has one for the site's provider, else the source's all-sites
// schedule; each counts on its own ("counted as" the provider's name, or ""). The day's allowance
// is split over the shards, the remainder to the lowest ones (7 over 2 shards: 4 and 3), and each
// shard counts its own share with no cross-shard traffic, so the node never exceeds the day's
// total; a shard whose mail does not use its share leaves it unused (the node then sends less).
// A message counts when it is given the source for its site (each attempt: a retry sent again
// counts again). Counts live in memory: a restart starts the day's counts from zero.
//
// The choice (choose_warm_source): the pool's smooth weighted round robin (queue/egress.h) among
// the sources that still have allowance today for the site's provider; with every source
// unlimited it is the plain round robin. None left: the job waits for the next day.
//
// Lifecycle and threading: one warmup_ledger per shard (the shard that chooses: the message's);
// pure: every call is given the day, so tests drive it with a fake clock.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "queue/egress.h"
#include "queue/shaping_rules.h"

namespace ringrelay::queue {

// The UTC day (days since 1970-01-01) of a Unix time in microseconds.
[[nodiscard]] constexpr std::int64_t unix_day(std::int64_t unix_us) noexcept {
    constexpr std::int64_t day_us = 86'400'000'000;
    return unix_us >= 0 ? unix_us / day_us : -((-unix_us + day_us - 1) / day_us);
}

// Shard `shard`'s share of a day's allowance `total` over `shards` shards (remainder to the low ones).
[[nodiscard]] constexpr std::uint64_t warmup_share(std::uint64_t total, unsigned shard, unsigned shards) noexcept {
    if (shards == 0) return total;
    return total / shards + (shard < total % shards ? 1 : 0);
}

// A source's allowance used up on this shard for the day (for a Shaping log line).
struct warmup_used_up {
    std::string source;
    std::string provider;  // "" for the all-sites schedule
    std::int64_t day = 0;
    std::uint64_t allowance = 0;  // the day's, for the whole node
    std::uint64_t share = 0;      // this shard's part of it
};

class warmup_ledger {
public:
    warmup_ledger(unsigned shard, unsigned shards) noexcept : _shard(shard), _shards(shards) {}

    // May `source` send one more message on `day` to a site of `provider`? True without a
    // warm-up (none, or its schedule is over). A share found empty (0: the allowance is smaller
    // than the shard count) is reported in `used_up` once a day.
    [[nodiscard]] bool allows(const shaping_rules& rules, std::string_view source, std::string_view provider,
                              std::int64_t day, std::vector<warmup_used_up>& used_up);
    // One message counted against it (call after allows() said true); the one that uses the
    // share up is reported in `used_up`.
    void count(const shaping_rules& rules, std::string_view source, std::string_view provider, std::int64_t day,
               std::vector<warmup_used_up>& used_up);
    // Messages counted on `day` for `source` as `counted_as` (tests, inspection).
    [[nodiscard]] std::uint64_t used(std::string_view source, std::string_view counted_as, std::int64_t day) const;

private:
    struct counter {
        std::int64_t day = 0;
        std::uint64_t used = 0;
        bool reported = false;
    };
    struct limit {
        counter* entry = nullptr;  // null: not limited
        std::uint64_t allowance = 0;
        std::uint64_t share = 0;
        std::string_view counted_as;
    };
    [[nodiscard]] limit limit_of(const shaping_rules& rules, std::string_view source, std::string_view provider,
                                 std::int64_t day);
    void report(const limit& l, std::string_view source, std::int64_t day, std::vector<warmup_used_up>& used_up);

    const unsigned _shard;
    const unsigned _shards;
    std::unordered_map<std::string, counter> _counters;  // "SOURCE\nPROVIDER"
};

// Does any source of `pool` have a warm-up in `rules`? (Without one, the source is chosen as
// before any warm-up existed: by the round robin, before the site is known.)
[[nodiscard]] bool pool_has_warmup(const egress_table& table, const egress_pool& pool, const shaping_rules& rules);

// The source for a message to a site of `provider` on `day`: the pool's round robin among the
// sources with allowance left, counted; nullopt when none has any (the message waits).
[[nodiscard]] std::optional<std::uint32_t> choose_warm_source(egress_chooser& chooser, warmup_ledger& ledger,
                                                              const egress_table& table, const egress_pool& pool,
                                                              const shaping_rules& rules, std::string_view provider,
                                                              std::int64_t day, std::vector<warmup_used_up>& used_up);

// {"type":"Shaping","time":...,"source":"a","event":"warmup_used_up","provider":"google"|null,
//  "day":"2026-12-07","allowance":N,"shard":K,"share":S} and a newline, appended to `line`.
void append_warmup_record(std::string& line, const warmup_used_up& u, unsigned shard, std::int64_t unix_us);

}  // namespace ringrelay::queue
