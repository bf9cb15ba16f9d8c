// queue/message_store.h: a shard's queued messages (docs/ARCHITECTURE.md "Delivery"): what is
// queued, where each body is (its spool segment; today the body is also kept in memory), and
// the state of every recipient, as Postfix's qmgr_message keeps them. It owns the outcome
// journal: every change of a recipient's state that must survive a restart is appended to the
// spool (an outcome record, queue/record.h) in the next group commit, and logged
// (queue/delivery_log.h).
//
// States of a recipient (queue::recipient_status): pending -> (deferred ->)* delivered |
// bounced | expired. deferred is journaled with its next attempt only when the recipient was
// attempted (it has a next hop): one that could not even be routed is simply looked at again
// after a restart. The last outcome record of a recipient wins at recovery.
//
// Lifecycle of a message: add() (or recovery: on_record()* then finish_recovery()) holds its
// segment; jobs take its recipients (`in_flight`, `jobs`); finish()/defer() apply outcomes;
// release_if_done() forgets it once every recipient is final and no job is out, after handing
// its failures to the failure_reporter (the DSN writer), which may keep its segment held until
// the report is durable. With queue_mode::hold nothing is kept in memory: the segments stay
// held and the messages wait in the spool.
//
// Threading: shard-local. A stored_message is owned here; jobs point into it (queue/delivery_job.h)
// and may be read by the owner shard while m.jobs > 0, when envelope and body do not change.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "protocol/server_session.h"
#include "queue/delivery_log.h"
#include "queue/record.h"
#include "queue/spool.h"

namespace ringrelay::queue {

struct failed_recipient {
    std::uint32_t rcpt_index = 0;
    recipient_status status = recipient_status::bounced;  // bounced or expired
    std::string remote;                                   // next hop, "" if none was reached
    std::string diagnostic;                               // the reply, e.g. "550 5.1.1 ..."
    std::string enhanced;                                 // "5.1.1"
    bool from_peer = false;                               // diagnostic is the next hop's reply
    std::uint64_t time_us = 0;                            // of the last attempt
};

struct stored_message {
    std::uint64_t queue_id = 0;
    std::uint64_t segment = 0;
    std::uint64_t arrival_us = 0;
    protocol::envelope envelope;
    std::string client;
    std::string body;
    std::vector<recipient_status> status;
    std::vector<std::uint32_t> attempts;
    std::vector<std::uint8_t> in_flight;  // per recipient: part of a job now
    std::vector<failed_recipient> failures;
    std::uint32_t unfinished = 0;  // recipients not delivered/bounced/expired
    std::uint32_t jobs = 0;        // jobs in flight
    std::uint64_t next_attempt_us = 0;  // recovery only: when its deferred recipients are due
};

[[nodiscard]] constexpr bool final_status(recipient_status s) noexcept {
    return s == recipient_status::delivered || s == recipient_status::bounced || s == recipient_status::expired;
}

// Told about a finished message some of whose recipients failed (the DSN writer).
class failure_reporter {
public:
    // True if the report took over m's hold on its segment (to release it once the report is
    // itself durable); false: nothing to report (or it cannot be), the store releases it.
    virtual bool report_failures(const stored_message& m) noexcept = 0;

protected:
    ~failure_reporter() = default;
};

struct delivery_counters {
    std::uint64_t delivered = 0;
    std::uint64_t deferred = 0;
    std::uint64_t bounced = 0;
    std::uint64_t expired = 0;
    std::uint64_t dsns = 0;
};

// --hold: messages are spooled and never delivered.
enum class queue_mode : std::uint8_t { deliver, hold };

class message_store final : public record_visitor {
public:
    message_store(spool& s, delivery_log& log, failure_reporter& reporter, queue_mode mode) noexcept;
    message_store(const message_store&) = delete;
    message_store& operator=(const message_store&) = delete;

    // Recovery: every intact record of the shard's spool, in order, then finish_recovery().
    void on_record(std::uint64_t segment, const decoded_message& record) override;
    struct recovered {
        std::size_t unfinished = 0;  // messages still to deliver (or held)
        // (when due, queue id) of each message kept in memory: its deferred recipients' time,
        // 0 if it has none.
        std::vector<std::pair<std::uint64_t, std::uint64_t>> due;
    };
    // Drops finished messages and holds the segments of the rest.
    [[nodiscard]] recovered finish_recovery();

    // A message just committed to `segment`: holds the segment; null under queue_mode::hold
    // (then nothing is kept in memory).
    stored_message* add(const protocol::envelope& env, std::string_view client, std::string_view body,
                        std::uint64_t segment, std::uint64_t received_us);
    [[nodiscard]] stored_message* find(std::uint64_t queue_id) noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return _messages.size(); }

    // Recipient `i` is final (delivered, bounced or expired): journaled, logged, counted;
    // a bounce or an expiry is kept for the failure report.
    void finish(stored_message& m, std::uint32_t i, recipient_status status, const outcome_note& note);
    // Recipient `i` waits until next_attempt_us: journaled if it was attempted (note.hop named),
    // logged, counted.
    void defer(stored_message& m, std::uint32_t i, std::uint64_t next_attempt_us, const outcome_note& note);
    // Forgets m (destroys it) if every recipient is final and no job is out; its failures go
    // to the reporter first.
    void release_if_done(stored_message& m) noexcept;

    [[nodiscard]] const delivery_counters& counters() const noexcept { return _counters; }

private:
    spool& _spool;
    delivery_log& _log;
    failure_reporter& _reporter;
    const queue_mode _mode;
    std::unordered_map<std::uint64_t, std::unique_ptr<stored_message>> _messages;
    delivery_counters _counters;
};

}  // namespace ringrelay::queue
