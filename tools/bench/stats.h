// tools/bench/stats.h: what ringrelay-bench counts and how it reports it. Each shard fills its
// own run_stats (no sharing); the main thread merges them once the shards have stopped and
// prints a summary as text or as one JSON object.
//
// Definitions (also in the summary's help):
// - completed = accepted + failed; a message is accepted on a 2xx to its end of data (RFC 5321
//   §6.1); any 4xx/5xx, a local refusal or a connection lost mid-transaction makes it failed.
//   Messages the session never started (connection refused, greeting refused) are retried
//   on another connection and are not counted.
// - acknowledgement latency: end of data sent (the send holding the final octets completed)
//   -> the 2xx reply; in open loop (--rate) plus the time the message waited for a connection
//   after its scheduled time (no coordinated omission).
// - transaction latency: MAIL submitted (in open loop: the scheduled time) -> the final reply.
// Both histograms hold accepted messages only, in nanoseconds.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "core/histogram.h"
#include "tools/bench/options.h"

namespace ringrelay::bench {

inline constexpr std::size_t reply_code_slots = 600;  // 0..599; 0 = no code

// Shard-local while running; merged by the main thread afterwards.
struct run_stats {
    core::histogram ack_ns;
    core::histogram transaction_ns;
    std::uint64_t accepted = 0;
    std::uint64_t transient_failures = 0;                   // 4xx final replies (421 included)
    std::uint64_t permanent_failures = 0;                   // 5xx final replies
    std::uint64_t local_refusals = 0;                       // refused by the client session (e.g. SIZE too small)
    std::uint64_t lost_in_transaction = 0;                  // connection lost or protocol error mid-transaction
    std::array<std::uint64_t, reply_code_slots> replies{};  // final replies to messages
    std::array<std::uint64_t, reply_code_slots> session_replies{};  // refused greeting/EHLO, 421 while idle
    std::uint64_t connections_opened = 0;                           // TCP connects that succeeded
    std::uint64_t connect_errors = 0;                               // connects that failed or timed out
    std::uint64_t connections_lost = 0;                // established connections that ended other than by our QUIT
    std::uint64_t timeouts = 0;                        // connect or reply timeouts (also in the counts above)
    std::uint64_t unsent = 0;                          // open loop: scheduled but never sent when the run ended
    std::map<std::string, std::uint64_t> errors;       // error text -> occurrences
    std::map<std::uint16_t, std::string> reply_texts;  // first text seen for each failing code
    std::int64_t last_outcome_ns = 0;                  // steady clock; 0 = none

    [[nodiscard]] std::uint64_t failed() const noexcept {
        return transient_failures + permanent_failures + local_refusals + lost_in_transaction;
    }
    [[nodiscard]] std::uint64_t completed() const noexcept { return accepted + failed(); }
    void merge(const run_stats& other);
};

// Everything the summary says besides the counts.
struct run_report {
    const bench_options* options = nullptr;
    double seconds = 0;        // start -> last outcome (or end of run if none)
    bool gave_up = false;      // nothing could connect within --timeout
    bool interrupted = false;  // SIGINT/SIGTERM
};

[[nodiscard]] double messages_per_second(const run_report& report, const run_stats& stats) noexcept;
// 0 if every message was accepted (and, with --messages, all of them completed), else 1.
[[nodiscard]] int exit_code(const run_report& report, const run_stats& stats) noexcept;

// The human summary (several lines, ends with a newline).
[[nodiscard]] std::string format_text(const run_report& report, const run_stats& stats);
// One JSON object (one line, ends with a newline). Latencies in microseconds. Fields:
// target, connections, shards, size, recipients, mode ("messages"|"duration"), rate (null in
// closed loop), pipelining, chunking, messages (completed), accepted, failed, seconds,
// messages_per_second, messages_per_hour, ack_latency_us {count, min, mean, p50, p90, p99,
// p99_9, max}, transaction_latency_us {same}, replies {"250": n, ...}, session_replies,
// failures {transient, permanent, local_refusals, lost_in_transaction}, connection_events
// {opened, connect_errors, lost, timeouts}, unsent, errors {"text": n}, reply_texts {"451": "first text"},
// gave_up, interrupted.
[[nodiscard]] std::string format_json(const run_report& report, const run_stats& stats);

}  // namespace ringrelay::bench
