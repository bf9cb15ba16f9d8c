// queue/throttle_controller.h: the closed loop of traffic shaping (issue 17) for one (egress
// source, site): how many connections it may hold and how fast it may send messages, given the
// configured limits (queue/shaping_rules.h: resolved_shaping) and what the receiver said. Pure:
// no I/O, no clock of its own (every call takes the time, monotonic microseconds), no
// randomness; the engine owns one per (source, site) and logs each reported change as a
// {"type":"Shaping",...} line (append_shaping_record()).
//
// The loop (AIMD, as TCP's congestion control, one cut per measurement; constants in
// controller_params):
//   - Start: the configured limits (connection_limit; max_message_rate, or no rate limit).
//   - Rate signals (queue/throttle_signal.h) from attempts started before the last rate cut are
//     ignored (they say nothing about the new rate, as TCP ignores losses of segments sent
//     before its window was cut). The first rate signal cuts at once; after a cut, a signal cuts
//     again only when the new rate has been measured (min_samples deliveries of attempts started
//     after the cut, over at least min_measure_us), or when refusals since the cut are at least
//     min_samples and mostly_refused times the deliveries: one cut per measurement, never a
//     cascade of cuts milliseconds apart.
//   - A cut sets the rate to `decrease` times the receiver's measured allowance: the delivered
//     rate since the last cut (if that was at most lookback_us ago, else over the last
//     lookback_us, in whole seconds), at most the allowed rate (while over its limit, a receiver
//     lets through just what it allows); with fewer deliveries but min_samples attempts (most
//     were refused), to the higher of half the allowed rate and the delivered rate, at most
//     `decrease` times the allowed rate; with fewer attempts, to `decrease` times the allowed
//     rate. Without a limit so far, the "allowed rate" is the attempted rate. Never below
//     min_rate_milli, never above the configured max_message_rate. The allowance before
//     `decrease` is the "good rate".
//   - A block: min_samples refusals of attempts started after a cut and no delivery (a fixed
//     window, as Postfix's anvil, used up: everything is refused until it ends, whatever the
//     rate). The rate drops to block_probe_milli and further signals are ignored; the first
//     delivery of an attempt started after that ends the block, and the rate becomes what the
//     receiver let through over the episode (from the controller's start, or from lookback_us
//     before the first rate signal after episode_gap_us without one; at most horizon_us back: a
//     fixed window's burst and its refusals alike, and the probe's lag), at most the rate
//     before the block.
//   - Growth: every increase_interval without a rate signal, during which some message was
//     delivered and some message had to wait for the rate (the limit was what held the site
//     back), the rate grows by increase_percent of itself up to the good rate, then above it by
//     probe_percent of the good rate times the number of such intervals since the last cut
//     (slowly near the rate that was refused, faster the longer it holds). The configured limit
//     caps it.
//   - A connections signal from a connection started after the last connections cut sets the
//     allowed count to max(1, min(floor(decrease * allowed), open)), `open` being the connections
//     the receiver took (established ones at the time of the refusal).
//     Every connection_increase_interval without a connections signal, during which some
//     connection could not be opened for the count, the count grows by one, up to the
//     configured connection_limit.
//   - Forgetting: each forget_after without a rate signal doubles a found rate (up to the
//     configured one); without a configured rate, a forget period in which the rate held no
//     message back drops it (the site has no rate limit again). A found rate never jumps back to
//     no limit while it is still what holds the site back.
//   - "adaptive": false (resolved_shaping::adaptive) turns the loop off: limits stay as
//     configured; automation still applies.
//   - Automation (queue/shaping_rules.h: automation_rule, matched by the engine on the reply):
//     suspend stops connections and messages until its end, after which the site resumes on one
//     connection (Gmail's advice for 4.7.28, the usual advice of the others), growing as above;
//     throttle multiplies the allowed rate by its factor until its end (from the attempted rate
//     when there was no limit).
//
// Every change of the allowed rate, the allowed connections or the suspension is returned as a
// shaping_change from the call that made it (nullopt: nothing changed).
//
// Lifecycle: made when a (source, site) gets its first job; reconfigure() on a rules reload.
// Threading: the site's owner shard only.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "queue/shaping_rate.h"
#include "queue/shaping_rules.h"
#include "queue/throttle_signal.h"
#include "queue/token_bucket.h"

namespace ringrelay::queue {

struct controller_params {
    std::uint32_t decrease_percent = 85;  // multiplicative decrease (beta), percent
    std::uint32_t min_samples = 10;       // deliveries (or attempts) an estimate needs
    std::uint64_t lookback_us = 2 * us_per_second;       // the estimation window of a cut
    std::uint64_t min_measure_us = 250'000;              // a cut's measurement at the new rate is at least this long
    std::uint32_t mostly_refused = 4;                    // refusals per delivery that cut without waiting
    std::uint64_t episode_gap_us = 120 * us_per_second;  // a rate signal this long after the last one starts an episode
    std::uint64_t horizon_us = 60 * us_per_second;       // how far back a block's end measures (at most 63 s)
    std::uint64_t block_probe_milli = 2000;              // the rate while the receiver refuses everything
    std::uint64_t increase_interval_us = 2 * us_per_second;
    std::uint32_t increase_percent = 10;  // of the current rate per interval, below the good rate
    std::uint32_t probe_percent = 2;      // of the good rate, times the intervals spent above it, per interval
    std::uint64_t connection_increase_interval_us = 30 * us_per_second;
    std::uint64_t forget_after_us = 600 * us_per_second;
    std::uint64_t min_rate_milli = 16;    // one message a minute
};

enum class shaping_event : std::uint8_t {
    decrease,  // a throttle signal cut the rate or the connections
    increase,  // a quiet period let one of them grow
    reset,     // a found rate was forgotten (forget_after), or a reload changed the limits
    suspend,   // an automation rule suspended the site
    throttle,  // an automation rule set a factor
    resume,    // a suspension or a throttle ended
};

[[nodiscard]] std::string_view to_string(shaping_event e) noexcept;

struct shaping_change {
    shaping_event event = shaping_event::decrease;
    std::uint64_t old_rate_milli = 0;  // allowed messages a second * 1000 (with any factor); 0: no limit
    std::uint64_t new_rate_milli = 0;
    std::uint32_t old_connections = 0;
    std::uint32_t new_connections = 0;
    std::uint64_t until_us = 0;  // suspend, throttle: when it ends
    std::string cause;           // the reply, the rule ("automation yahoo-tss04: 421 ..."), or why
};

class throttle_controller {
public:
    throttle_controller(const resolved_shaping& limits, std::uint64_t now_us, controller_params params = {});

    // New limits (a rules reload): the allowed rate and connections are clamped to them; with
    // a configured rate and no cut yet, the rate is the configured one.
    [[nodiscard]] std::optional<shaping_change> reconfigure(const resolved_shaping& limits, std::uint64_t now_us);

    // --- Asked by the engine before it acts --------------------------------------------------
    // May a connection be opened now, `open` being those open or opening? False while suspended,
    // at the allowed count, or without a max_connection_rate token (taken when true).
    [[nodiscard]] bool may_open_connection(std::uint32_t open, std::uint64_t now_us);
    // Microseconds until the connection rate allows another connection (0: now).
    [[nodiscard]] std::uint64_t connection_wait_us(std::uint64_t now_us);
    // May a message be sent now? Takes a token of the allowed message rate when true. False: it
    // stays in the ready queue for message_wait_us() (no retry is consumed).
    [[nodiscard]] bool take_message(std::uint64_t now_us);
    [[nodiscard]] std::uint64_t message_wait_us(std::uint64_t now_us);
    // Whole message tokens there at `now_us`, none taken (UINT64_MAX without a rate limit; 0
    // while suspended): how many connections being opened could get a message at once.
    [[nodiscard]] std::uint64_t message_tokens(std::uint64_t now_us);

    // --- Told by the engine after an attempt ---------------------------------------------------
    // A message delivered (a 2xx to its end of data); `started_us` when its transaction began.
    [[nodiscard]] std::optional<shaping_change> delivered(std::uint64_t started_us, std::uint64_t now_us);
    // A failed attempt: a connection that failed (stage connect/greeting, code 0) or a negative
    // reply (`code`, `text` as protocol::parsed_reply::text). `started_us`: when the connection
    // (stages connect, greeting) or the transaction (command) began; `open`: connections to the
    // site established at the time, not counting a failed one. Not every failure is a signal.
    [[nodiscard]] std::optional<shaping_change> failed(attempt_stage stage, std::uint16_t code, std::string_view text,
                                                       std::uint64_t started_us, std::uint64_t now_us,
                                                       std::uint32_t open);
    // Time passing: growth, the end of a suspension or throttle, forgetting. The calls above do
    // it too; an engine with nothing to report calls it from a timer (next_event_us()).
    [[nodiscard]] std::optional<shaping_change> advance(std::uint64_t now_us);
    // When advance() may next have something to do (a suspension or throttle ending).
    [[nodiscard]] std::uint64_t next_event_us() const noexcept;
    // An automation rule matched a reply of this site (the engine matched it: shaping_rules::
    // match_automation); `reply` is logged as the cause.
    [[nodiscard]] std::optional<shaping_change> automate(const automation_rule& rule, std::string_view reply,
                                                         std::uint64_t now_us);

    // --- State -----------------------------------------------------------------------------------
    [[nodiscard]] std::uint64_t rate_milli() const noexcept;  // allowed, factor included; 0: no limit
    [[nodiscard]] std::uint32_t connections() const noexcept { return _connections; }
    [[nodiscard]] bool suspended(std::uint64_t now_us) const noexcept { return now_us < _suspended_until; }
    [[nodiscard]] const resolved_shaping& limits() const noexcept { return _limits; }
    // The limits are the configured ones and nothing is pending (no suspension, throttle or
    // block): advance() has nothing to change, whatever the time.
    [[nodiscard]] bool settled() const noexcept;
    // A controller made now may take this one's place: no suspension or throttle pending, the
    // token buckets full (a new one's are), and the limits settled() or no signal heard for
    // forget_after (a cut that old is let go: a new controller starts at the configured limits).
    // What lets the engine drop an idle site (queue/destination_pool.h).
    [[nodiscard]] bool at_rest(std::uint64_t now_us);

private:
    struct counts {
        std::uint64_t delivered = 0;
        std::uint64_t attempts = 0;
    };
    void count(bool delivered, std::uint64_t now_us);
    void roll(std::uint64_t now_us);
    // Deliveries and attempts from the second `from_us` falls in to `now_us` (at most the
    // ring's length back); `length_us`: the time they cover (>= 1).
    [[nodiscard]] counts window(std::uint64_t from_us, std::uint64_t now_us, std::uint64_t& length_us);
    void set_rate(std::uint64_t milli, std::uint64_t now_us);
    [[nodiscard]] std::optional<shaping_change> cut_rate(std::string_view cause, std::uint64_t now_us);
    [[nodiscard]] std::optional<shaping_change> block(std::string_view cause, std::uint64_t now_us);
    [[nodiscard]] std::optional<shaping_change> unblock(std::uint64_t now_us);
    void mark_cut(std::uint64_t now_us);
    [[nodiscard]] std::optional<shaping_change> cut_connections(std::uint32_t open, std::string_view cause,
                                                                std::uint64_t now_us);
    [[nodiscard]] std::optional<shaping_change> forget(std::uint64_t now_us);
    [[nodiscard]] shaping_change change(shaping_event e, std::uint64_t old_rate, std::uint32_t old_conns,
                                        std::string_view cause) const;
    [[nodiscard]] std::uint64_t configured_rate_milli() const noexcept;

    // Fixed after construction (limits: until reconfigure()).
    controller_params _params;
    resolved_shaping _limits;

    // The loop's state.
    std::uint64_t _rate_milli = 0;  // allowed by the loop, no factor; 0: no limit
    std::uint32_t _connections = 0;
    std::uint64_t _last_rate_cut_us = 0;
    std::uint64_t _last_conn_cut_us = 0;
    bool _rate_cut_ever = false;
    bool _conn_cut_ever = false;
    std::uint64_t _good_milli = 0;        // the rate the receiver let through at the last cut: growth target
    std::uint64_t _cut_delivered = 0;     // since the last cut: deliveries,
    std::uint64_t _cut_refused = 0;       // and rate refusals of attempts started after it
    std::uint64_t _probe_steps = 0;       // growth intervals above the good rate since the last cut
    bool _blocked = false;                // every attempt since the last cut was refused: probing
    std::uint64_t _rate_before_block = 0;
    std::uint64_t _episode_from_us = 0;   // the current episode's measurement starts here
    std::uint64_t _rate_interval_start = 0;
    bool _rate_limited = false;   // a message waited for the rate this interval
    bool _delivered_in_interval = false;
    std::uint64_t _conn_interval_start = 0;
    bool _conn_limited = false;   // a connection could not be opened for the count this interval
    bool _delivered_in_conn_interval = false;
    std::uint64_t _last_rate_signal_us = 0;
    std::uint64_t _forget_from_us = 0;    // the last rate signal or forget step
    bool _held_since_forget = false;      // a message waited for the rate since then

    // Deliveries and attempts per second, the last ring_seconds seconds (ending at _ring_second).
    static constexpr std::size_t ring_seconds = 64;
    std::array<counts, ring_seconds> _ring{};
    std::uint64_t _ring_second = 0;
    std::uint64_t _start_us = 0;          // the controller's start: nothing was counted before it

    // Automation.
    std::uint64_t _suspended_until = 0;
    std::uint64_t _factor_until = 0;
    double _factor = 1.0;
    bool _rate_from_throttle = false;  // the site had no rate: a throttle made one from the attempts

    // Token buckets: messages (at rate_milli(), when limited), connections (the configured rate).
    std::optional<token_bucket> _messages;
    std::optional<token_bucket> _connection_rate;
};

// Appends one delivery log line for `c` (ending in '\n'):
// {"type":"Shaping","time":"ISO 8601","site":SITE,"source":SOURCE,"event":"decrease",
//  "rate":{"old":null,"new":170.0},"connections":{"old":16,"new":5},"cause":"451 4.7.1 ..."}
// (rates in messages a second, null for no limit; "until" for suspend and throttle, as ISO 8601,
// given `until_unix_us`; `unix_us` is the time of the change).
void append_shaping_record(std::string& line, std::string_view site, std::string_view source, const shaping_change& c,
                           std::int64_t unix_us, std::int64_t until_unix_us = 0);

}  // namespace ringrelay::queue
