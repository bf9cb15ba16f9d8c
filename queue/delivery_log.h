// queue/delivery_log.h: the delivery log records of recipient outcomes (docs/ARCHITECTURE.md
// "Delivery"): one JSON object per line, `Delivery`, `TransientFailure`, `Bounce` or
// `Expiration`, with the queue id, shard, sender, recipient, next hop, reply, TLS, attempt
// count, time in the queue, the attempt's duration and the next attempt.
//
// Threading: shard-local, like the core::log_writer it appends to.
#pragma once
#include <cstdint>
#include <string>

#include "core/log.h"
#include "protocol/client_types.h"
#include "queue/delivery_job.h"

namespace ringrelay::queue {

// What is known of one recipient's outcome when it is applied.
struct outcome_note {
    const next_hop_ref& hop;                        // name "" if no next hop was reached
    const protocol::outcome_reply* reply = nullptr;  // the reply, if there was one
    const char* why = nullptr;                       // else (or also) a local reason
    std::uint64_t now_us = 0;                        // wall clock
    std::int64_t attempt_ms = -1;  // from scheduling the attempt to its outcome; -1: no attempt
};

// "550 5.1.1 text" with the lines of a multi-line reply joined by spaces.
[[nodiscard]] std::string reply_line(const protocol::outcome_reply& r);

class delivery_log {
public:
    delivery_log(core::log_writer& log, unsigned shard) noexcept : _log(log), _shard(shard) {}

    // One record for recipient `i` of `m`; next_attempt_us 0: none (final outcomes).
    void record(const char* type, const stored_message& m, std::uint32_t i, const outcome_note& note,
                std::uint64_t next_attempt_us);

private:
    core::log_writer& _log;
    const unsigned _shard;
};

}  // namespace ringrelay::queue
