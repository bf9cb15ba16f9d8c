// queue/message_store.h: a shard's queued messages (docs/ARCHITECTURE.md "Delivery"): what is
// queued, where each body is (its record in the spool), and the state of every recipient, as
// Postfix's qmgr_message keeps them. Memory holds a descriptor per message (envelope,
// recipient states, record location), not its body: a body is read back from the spool when
// an attempt (or a DSN) needs it, except while the body cache still has it.
//
// The body cache: the bodies of recently received (or read back) messages, first in first
// out, within a byte budget (--body-cache-size divided among the shards); a message's body
// leaves it when the message is done. A read that fails (an I/O error, a checksum mismatch, a
// missing segment) is reported to the body_listener with the reason: the delivery then defers
// the recipients, never bounces them. It owns the outcome
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

#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/delivery_job.h"
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
    std::uint64_t segment = 0;  // == where.segment
    std::uint64_t arrival_us = 0;
    protocol::envelope envelope;
    std::string client;
    record_location where;      // the message record in the spool
    std::uint64_t size = 0;     // of the message (its body as spooled)
    body_ptr body;              // null unless cached, or read back for an attempt
    bool body_loading = false;  // a read is in flight (it holds one of `jobs`)
    bool body_unreadable = false;  // the last read failed: a DSN goes without the original
    bool cached = false;        // body is in the cache's list
    bool delay_warned = false;  // its --delay-warning notice was sent (journaled)
    // It has a campaign (issue 17: queue/campaign_header.h), in the store's side table
    // (message_store::campaign_of): most messages have none, and a string here would take the
    // struct out of its size class (below).
    bool has_campaign = false;
    // A compaction moved it while jobs were out: they still read the old record, so the old
    // segment stays held until no job is left (release_if_done). Where, and how many bytes,
    // is in the store's side table (message_store::pinned_segment): rare, and kept out of
    // this struct so that it stays in its allocator size class (below).
    bool pinned = false;
    stored_message* cache_prev = nullptr;
    stored_message* cache_next = nullptr;
    std::vector<recipient_status> status;
    std::vector<std::uint32_t> attempts;
    std::vector<std::uint8_t> in_flight;  // per recipient: part of a job now
    std::vector<failed_recipient> failures;
    std::uint32_t unfinished = 0;  // recipients not delivered/bounced/expired
    std::uint32_t jobs = 0;        // jobs in flight
    std::uint64_t next_attempt_us = 0;  // when its deferred recipients are due (the latest deferral's)
};
// One per queued message, for as long as it is queued: its size is most of the memory a queue
// costs. jemalloc's size classes here are 384 and 448 bytes; at 400 bytes (two pinned_* fields
// of 8 bytes, for a rare case) a descriptor took 448 and shared that class with delivery_job
// (440 bytes, one per attempt): the jobs of a deferral burst interleaved with the descriptors
// in the same slabs and left them half empty once freed. Measured with 200,000 deferred
// messages (tests/integration/queue_scale_test.py): the class at 51% use, +94 MiB RSS against
// 384 bytes at 99.9%. Keep it at or under 384 bytes (LP64 libstdc++: exactly 384).
static_assert(sizeof(void*) != 8 || sizeof(stored_message) <= 384,
              "stored_message grew past jemalloc's 384-byte size class: see the comment above");

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

// Told when a body read back from the spool (message_store::need_body) is there, or is not.
class body_listener {
public:
    // m.body is set if `error` is empty; otherwise error says why it could not be read
    // ("segment 3 offset 4096: checksum mismatch").
    virtual void body_ready(stored_message& m, const std::string& error) noexcept = 0;

protected:
    ~body_listener() = default;
};

struct body_cache_counters {
    std::uint64_t hits = 0;      // need_body found the body in memory
    std::uint64_t reads = 0;     // bodies read back from the spool
    std::uint64_t read_errors = 0;
    std::uint64_t bytes = 0;     // held by the cache now
    std::uint64_t entries = 0;
};

// --hold: messages are spooled and never delivered.
enum class queue_mode : std::uint8_t { deliver, hold };

class message_store final : public record_visitor {
public:
    // cache_bytes: this shard's share of --body-cache-size; listener: told of finished body
    // reads (null: the store releases the message itself, for tests).
    message_store(spool& s, delivery_log& log, failure_reporter& reporter, queue_mode mode,
                  std::uint64_t cache_bytes = 256ull << 20, body_listener* listener = nullptr) noexcept;
    message_store(const message_store&) = delete;
    message_store& operator=(const message_store&) = delete;
    ~message_store();

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

    // A message just committed at `where`: holds its segment and puts a copy of the body in
    // the cache (if it fits); null under queue_mode::hold (then nothing is kept in memory).
    // `campaign`: its campaign, "" for none.
    stored_message* add(const protocol::envelope& env, std::string_view client, std::string_view body,
                        const record_location& where, std::uint64_t received_us, std::string_view campaign = {});
    [[nodiscard]] stored_message* find(std::uint64_t queue_id) noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return _messages.size(); }
    // Calls f(m) for every message in memory (the queue control API); f must not add or remove
    // messages.
    template <typename F>
    void for_each(F f) const {
        for (const auto& [id, m] : _messages) f(*m);
    }

    // Recipient `i` is final (delivered, bounced or expired): journaled, logged, counted;
    // a bounce or an expiry is kept for the failure report.
    void finish(stored_message& m, std::uint32_t i, recipient_status status, const outcome_note& note);
    // Recipient `i` waits until next_attempt_us: journaled if it was attempted (note.hop named),
    // logged, counted.
    void defer(stored_message& m, std::uint32_t i, std::uint64_t next_attempt_us, const outcome_note& note);
    // m's delay notice is spooled: journaled so that a restart does not send another.
    void delay_warned(stored_message& m);
    // Forgets m (destroys it) if every recipient is final and no job is out; its failures go
    // to the reporter first.
    // A message whose failures need a DSN waits for its body first (need_body).
    void release_if_done(stored_message& m) noexcept;

    // True if m.body is there; otherwise starts reading it back from the spool (unless a read
    // is in flight already), which holds one of m.jobs until the listener hears of it.
    [[nodiscard]] bool need_body(stored_message& m) noexcept;
    [[nodiscard]] std::size_t reads_in_flight() const noexcept { return _reads.size(); }

    // Compaction (queue/compactor.h). The unfinished messages whose record is in `segment`
    // and that have no job out (a job carries the record's location: it would still read the
    // old one), up to about max_bytes of records (a scan of the queue: once per compaction
    // round).
    [[nodiscard]] std::vector<std::uint64_t> live_in(std::uint64_t segment, std::uint64_t max_bytes) const;
    // Each recipient's state as a copy records it.
    [[nodiscard]] static std::vector<recipient_state> states_of(const stored_message& m);
    // m's copy is durable at `copy`: m now lives there (the hold moves with it; with jobs still
    // out, the old segment stays held until they are done: stored_message::pinned).
    void relocate(stored_message& m, const record_location& copy) noexcept;
    // The segment m's jobs still hold after a relocation, 0 if none (stored_message::pinned).
    [[nodiscard]] std::uint64_t pinned_segment(const stored_message& m) const noexcept;
    // m's campaign (as its header gave it; stored with its record), "" if none. Valid while m is.
    [[nodiscard]] std::string_view campaign_of(const stored_message& m) const noexcept;

    [[nodiscard]] const delivery_counters& counters() const noexcept { return _counters; }
    [[nodiscard]] body_cache_counters cache_counters() const noexcept;

private:
    struct body_read final : core::completion {
        message_store* store = nullptr;
        std::uint64_t queue_id = 0;
        record_location where;
        std::string bytes;
        void complete(int res, std::uint32_t) noexcept override { store->on_body_read(this, res); }
    };
    void on_body_read(body_read* op, int res) noexcept;
    // The cache's list, oldest first; insert evicts the oldest until the budget holds.
    void cache_insert(stored_message& m) noexcept;
    void cache_remove(stored_message& m) noexcept;
    void forget(stored_message& m) noexcept;  // out of the cache and the map; destroys m
    // m's campaign (stored_message::has_campaign and the side table); "" for none.
    void set_campaign(stored_message& m, std::string_view campaign);

    spool& _spool;
    delivery_log& _log;
    failure_reporter& _reporter;
    const queue_mode _mode;
    const std::uint64_t _cache_budget;
    body_listener* const _listener;
    std::unordered_map<std::uint64_t, std::unique_ptr<stored_message>> _messages;
    std::unordered_map<const body_read*, std::unique_ptr<body_read>> _reads;
    // queue id -> (old segment, its record's bytes) of each message with stored_message::pinned.
    struct pin {
        std::uint64_t segment = 0;
        std::uint64_t bytes = 0;
    };
    std::unordered_map<std::uint64_t, pin> _pins;
    // queue id -> campaign of each message with stored_message::has_campaign.
    std::unordered_map<std::uint64_t, std::string> _campaigns;
    stored_message* _cache_head = nullptr;  // oldest
    stored_message* _cache_tail = nullptr;
    std::uint64_t _cache_used = 0;
    std::uint64_t _cache_entries = 0;
    body_cache_counters _cache_stats;
    delivery_counters _counters;
};

}  // namespace ringrelay::queue
