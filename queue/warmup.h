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
// counts again).
//
// Counts survive a restart (the warm-up journal): each shard publishes its counts at its tick
// when they changed (a core::snapshot_slot, no waiting); the relay's main thread sums them
// and rewrites SPOOL/warmup.json (write, fdatasync, rename) at most every few seconds and at
// shutdown (queue/relay.h save_warmup()). At start the relay reads it back, keeps today's
// counts and seeds each shard with its part of each total (split as the allowance is, so the
// node's remaining allowance is the day's minus what was used, whatever --shards was before).
// A SIGKILL or power cut loses the counts since the last save (seconds of sending); a file
// that does not parse is named in one start-up line and the day's counts start from zero.
//
// The choice (choose_warm_source): the pool's smooth weighted round robin (queue/egress.h) among
// the sources that still have allowance today for the site's provider; with every source
// unlimited it is the plain round robin. None left: the job waits for the next day.
//
// Lifecycle and threading: one warmup_ledger per shard (the shard that chooses: the message's);
// pure: every call is given the day, so tests drive it with a fake clock.
#pragma once
#include <cstdint>
#include <expected>
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

// One count of the journal: messages sent on `day` through `source` counted as `counted_as`
// (a provider's name, or "" for the all-sites schedule).
struct warmup_count {
    std::string source;
    std::string counted_as;
    std::int64_t day = 0;
    std::uint64_t used = 0;
    friend bool operator==(const warmup_count&, const warmup_count&) = default;
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
    // Start-up: counts restored from the journal (this shard's part), before anything is counted.
    void seed(const warmup_count& c);
    // Every count, appended to `out` (cleared first), in no particular order.
    void counts(std::vector<warmup_count>& out) const;
    // Moves whenever a count changes (to publish only then).
    [[nodiscard]] std::uint64_t version() const noexcept { return _version; }

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
    std::uint64_t _version = 0;
};

// The journal (SPOOL/warmup.json): one JSON object per line,
//   {"day":"2026-12-08","source":"a","counted_as":"google","used":120}
// ("counted_as" "" for the all-sites schedule). Parsed with simdjson; an error names the line.
[[nodiscard]] std::string format_warmup_journal(const std::vector<warmup_count>& totals);
[[nodiscard]] std::expected<std::vector<warmup_count>, std::string> parse_warmup_journal(std::string_view text);
// The counts of `day` in `counts`, summed per (source, counted_as), sorted.
[[nodiscard]] std::vector<warmup_count> warmup_totals(const std::vector<warmup_count>& counts, std::int64_t day);
// Shard `shard`'s seed of `totals` over `shards` shards: each total split as warmup_share
// splits an allowance, so every shard's part of the used count is within its part of the
// allowance whenever the total is within the allowance.
[[nodiscard]] std::vector<warmup_count> warmup_seed(const std::vector<warmup_count>& totals, unsigned shard,
                                                    unsigned shards);

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
