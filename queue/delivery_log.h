// queue/delivery_log.h: the delivery log records of recipient outcomes (docs/ARCHITECTURE.md
// "Delivery"): one JSON object per line, `Delivery`, `TransientFailure`, `Bounce` or
// `Expiration`, with the queue id, shard, sender, recipient, next hop, reply, TLS, attempt
// count, time in the queue, the attempt's duration and the next attempt. The three failure
// records also carry the failure's bounce class (issue 16; protocol/bounce_class.h, the rules in
// queue/bounce_rules.h): "bounce_class", with "blocklist" when the reply names a blocklist and
// "bounce_rule", the name of the rule that decided (absent when none did: class other).
//
// The class is decided once per outcome: a bounce is classified by the delivery whether the log
// is on or not (the suppression list reads the same verdict) and comes here in the note; other
// failures are classified here, only when the log is on.
//
// Threading: shard-local, like the core::log_writer it appends to. The rule table is the relay's
// one immutable table, read by every shard at once (no locks: nothing writes it after start).
#pragma once
#include <cstdint>
#include <string>

#include "core/log.h"
#include "protocol/bounce_class.h"
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
    // The failure's class if the caller decided it already (the delivery, for every bounce);
    // null: the log classifies when it writes the record. Outlives the call it is given to.
    const protocol::bounce_verdict* verdict = nullptr;
};

// "550 5.1.1 text" with the lines of a multi-line reply joined by spaces.
[[nodiscard]] std::string reply_line(const protocol::outcome_reply& r);

// What a failure is, for classification: the reply if there was one, else our reason (which may
// carry a refused greeting's reply, protocol::bounce_input_from_reason). Views into `note`.
[[nodiscard]] protocol::bounce_input bounce_input_of(const outcome_note& note) noexcept;

class delivery_log {
public:
    // Classifies with `rules` (load_bounce_rules: the embedded rules and --bounce-classes; the
    // relay's table), which outlive the log.
    delivery_log(core::log_writer& log, unsigned shard, const protocol::bounce_rules& rules) noexcept
        : _log(log), _shard(shard), _rules(rules) {}

    // One record for recipient `i` of `m`; next_attempt_us 0: none (final outcomes). Every type
    // but "Delivery" is a failure and gets its bounce class: note.verdict, else classify(note).
    // `campaign`: m's (message_store::campaign_of), "" for none: the record's "campaign".
    void record(const char* type, const stored_message& m, std::string_view campaign, std::uint32_t i,
                const outcome_note& note, std::uint64_t next_attempt_us);

    // The class of the failure `note` describes (note.verdict is not looked at); views into the
    // rule table, which outlives this log.
    [[nodiscard]] protocol::bounce_verdict classify(const outcome_note& note) const noexcept {
        return _rules.classify(bounce_input_of(note));
    }

private:
    core::log_writer& _log;
    const unsigned _shard;
    const protocol::bounce_rules& _rules;
};

}  // namespace ringrelay::queue
