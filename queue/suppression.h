// queue/suppression.h: a shard's side of the suppression list (issue 16). A recipient whose
// mail hard-bounced (invalid or inactive mailbox) is added to the list of the sender's tenant;
// a later RCPT from that tenant to that address is refused with
//   550 5.1.1 <addr>: recipient suppressed after a hard bounce on DATE
// and a `Suppressed` record in the delivery log; the next hop never sees it. Entries expire
// after --suppression-ttl; --no-suppression turns the whole thing off (no list is made).
//
// The tenant is the AUTH user the message was sent under (protocol::envelope::auth_user,
// stored with the message: queue/record.h version 2), else the envelope sender's domain;
// a message with neither (the null sender without AUTH, DSNs) has no tenant: it is never
// checked and never adds. Tenants and addresses compare without ASCII case.
//
// Which bounces suppress: those the bounce classifier (protocol/bounce_class.h with the relay's
// rules, etc/bounce-classes.json and --bounce-classes) puts in class invalid-recipient or
// inactive-mailbox; suppresses() below. Deferrals and expiry never suppress, whatever their class.
//
// Where things happen: the check runs on the shard that receives the RCPT
// (shard::check_rcpt -> check()), against the relay's one suppression_table, lock-free. An
// addition happens on the message's origin shard, where delivery finishes a permanent failure
// and classifies it once, logged or not (delivery::apply_outcome -> delivery::bounced ->
// on_permanent_failure(), with the verdict the Bounce record carries): the table is updated at
// once (every shard sees it from its next RCPT), and the entry is journaled to this shard's
// file SPOOL/suppression/N.shard-K (queue/suppression_file.h) with group commit: every entry
// added during a loop turn goes out in one write and one fdatasync at the turn's end, through
// the shard's storage seam (queue/storage.h), one commit in flight at a time. Nobody waits
// for it, as for outcome records: a crash before the fdatasync loses the entry, and the
// recipient is suppressed again at its next hard bounce. A failed write or fdatasync cuts
// the file back to its last durable end and the entries wait in memory for the next try a
// second later (they are in the table meanwhile).
//
// Other ways onto and off the list (issue 18): POST and DELETE /api/v1/suppressions and POST
// /u/TOKEN (one-click unsubscribe) go through the serving shard's list (add(), remove()), so
// they are journaled like bounces; the HTTP answer waits for that commit (when_durable()). A
// removal is a record of its own (queue/suppression_file.h), applied when the list is loaded.
//
// Lifecycle: made by the shard at init (open() creates the journal file), registered as a
// turn hook (which is also where the shard reports its quiescent state to the table), tick()
// once a second, leave() when the shard's loop has ended. Threading: shard-local, except the
// table it shares.
#pragma once
#include <sys/uio.h>

#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/log.h"
#include "core/reactor.h"
#include "protocol/bounce_class.h"
#include "protocol/server_session.h"
#include "queue/record.h"
#include "queue/storage.h"
#include "queue/suppression_table.h"

namespace ringrelay::queue {

// --suppression-ttl in seconds: "0" (or any zero duration) is 0, never expire; other
// durations are rounded up to whole seconds and capped at 2^32 - 1. The error says why.
[[nodiscard]] std::expected<std::uint32_t, std::string> parse_suppression_ttl(std::string_view text);

// An entry's time in the table: Unix seconds, rounded up, so that an entry is never dropped
// before its TTL has passed (it may live up to a second longer).
[[nodiscard]] std::uint32_t suppression_seconds(std::uint64_t time_us) noexcept;

// The tenant whose list a message belongs to: its AUTH user, else its sender's domain (the
// text after the last '@'); empty if it has neither. Views into `env`.
[[nodiscard]] std::string_view tenant_of(const protocol::envelope& env) noexcept;

// The seam: whether a bounce of class `c` puts its recipient on the tenant's list. True for
// invalid-recipient (no such mailbox) and inactive-mailbox (disabled or gone) only: mail to
// that address cannot succeed later. A full mailbox, the receiver's policy, a rate limit, the
// sender's reputation and every other class may clear up, so they never suppress.
[[nodiscard]] constexpr bool suppresses(protocol::bounce_class c) noexcept {
    return c == protocol::bounce_class::invalid_recipient || c == protocol::bounce_class::inactive_mailbox;
}

// The argument of the 550 reply: "<addr>: recipient suppressed after a hard bounce on
// 2026-03-14" (the UTC date of `since_s`), replacing `out`.
void format_suppressed_reply(std::string& out, std::string_view recipient, std::uint32_t since_s);

// What the `Suppressed` log record says about one refused RCPT.
struct suppressed_rcpt {
    unsigned shard = 0;
    std::string_view client;     // the client's address
    std::string_view proxy;      // the load balancer's, when a PROXY header gave `client`; else empty
    const protocol::envelope* transaction = nullptr;  // sender, AUTH user
    std::string_view recipient;
    std::string_view tenant;
    std::uint32_t since_s = 0;   // when the entry was added
    std::string_view reply;      // the reply's text after "550 5.1.1 "
    std::uint64_t now_us = 0;
};
// Appends one `Suppressed` record (a JSON line, like queue/delivery_log.h's) to `log`.
void log_suppressed(core::log_writer& log, const suppressed_rcpt& r);

struct suppression_stats {
    std::uint64_t added = 0;          // entries added by this shard's bounces
    std::uint64_t api_added = 0;      // entries added through the HTTP API and unsubscribes
    std::uint64_t api_removed = 0;    // entries removed through the HTTP API
    std::uint64_t journal_commits = 0;
    std::uint64_t journal_failures = 0;
};

class suppression_list final : public core::turn_hook {
public:
    // table: the relay's, shared (outlives this). s: the shard's storage. dir: the suppression
    // directory; the journal is suppression_journal_name(generation, shard) in it.
    suppression_list(suppression_table& table, storage& s, std::string dir, std::uint64_t generation,
                     unsigned shard);
    suppression_list(const suppression_list&) = delete;
    suppression_list& operator=(const suppression_list&) = delete;
    ~suppression_list();

    // Creates the journal file (synchronous, start-up). The error names the file.
    [[nodiscard]] std::expected<void, std::string> open();

    // RCPT: when (Unix seconds) `recipient` was put on the list of the transaction's tenant,
    // if it is on it and not expired at now_s.
    [[nodiscard]] std::optional<std::uint32_t> check(const protocol::envelope& transaction,
                                                     std::string_view recipient, std::uint32_t now_s) const noexcept;

    // Delivery finished `recipient` of the message `env` (its queue id) as a permanent failure
    // (a bounce; never a deferral or an expiry) that the bounce classifier judged `verdict`:
    // the recipient is added to the tenant's list if suppresses(verdict.cls) and the message
    // has a tenant. Returns whether it was added.
    bool on_permanent_failure(const protocol::envelope& env, std::string_view recipient,
                              const protocol::bounce_verdict& verdict, std::uint64_t now_us);

    // Adds the pair now (the table) and journals it with the turn's commit.
    void add(std::string_view tenant, std::string_view address, suppression_source source, std::uint64_t queue_id,
             std::uint64_t time_us, std::string_view reason = {});
    // Takes the pair off now (the table) and journals a removal record with the turn's commit
    // (queue/suppression_file.h: it outlives a restart). Returns whether the table held the
    // pair (live or expired); if it did not, nothing is journaled (every journaled pair is in
    // the table from start-up on).
    bool remove(std::string_view tenant, std::string_view address, suppression_source by, std::uint64_t time_us);
    // When the pair was added, if it is on the list and not expired at now_s.
    [[nodiscard]] std::optional<std::uint32_t> lookup(std::string_view tenant, std::string_view address,
                                                      std::uint32_t now_s) const noexcept {
        return _table.lookup(tenant, address, now_s);
    }
    // Counts what the HTTP API did (stats()).
    void note_api(std::uint64_t added, std::uint64_t removed) noexcept {
        _stats.api_added += added;
        _stats.api_removed += removed;
    }
    // `done(true)` once everything added or removed so far is durable (at once if nothing
    // waits or is in flight); `done(false)` if the commit that carries it fails (the entries
    // stay in effect and are written again a second later, without telling anyone). Called on
    // this shard's thread, never from inside this call; not at all if the shard stops first.
    void when_durable(std::function<void(bool)> done);

    // The end of a loop turn: this shard holds no pointer into the table (quiescent state);
    // starts the journal's group commit if entries wait and none is in flight.
    void on_turn_end() noexcept override;
    // Once a second: frees table arrays every shard has moved past; allows a failed commit's retry.
    void tick() noexcept;
    // The shard's loop has ended: it reads the table no more.
    void leave() noexcept;
    // Nothing waiting and nothing in flight.
    [[nodiscard]] bool idle() const noexcept { return _pending.empty() && !_in_flight && _ready_waiters.empty(); }
    [[nodiscard]] const suppression_stats& stats() const noexcept { return _stats; }
    [[nodiscard]] const std::string& journal_path() const noexcept { return _path; }

private:
    void start_commit() noexcept;
    void submit_write() noexcept;
    void on_write(int res, std::uint32_t flags) noexcept;
    void on_sync(int res, std::uint32_t flags) noexcept;
    void failed(int err) noexcept;
    static void tell(std::vector<std::function<void(bool)>>& waiters, bool ok) noexcept;

    // Fixed after construction.
    suppression_table& _table;
    storage& _storage;
    const std::string _dir;
    const std::string _name;
    const std::string _path;
    const unsigned _shard;
    std::uint32_t _salt = 0;
    std::string _segment_records;  // the two that start the file (queue/record.h)

    // Shard-local.
    int _fd = -1;
    std::uint64_t _committed_end = 0;  // bytes of the file known durable
    std::string _pending;              // records waiting for the next commit
    std::string _batch;                // the commit in flight (its bytes stay put until done)
    iovec _iov[2]{};
    unsigned _iov_count = 0;
    unsigned _iov_next = 0;
    std::uint64_t _write_offset = 0;
    std::uint64_t _batch_end = 0;
    bool _in_flight = false;
    bool _retry_wait = false;          // a commit failed: the next waits for tick()
    bool _reported = false;            // the failure streak was reported
    std::vector<std::function<void(bool)>> _pending_waiters;  // when _pending is durable
    std::vector<std::function<void(bool)>> _batch_waiters;    // when _batch is durable
    std::vector<std::function<void(bool)>> _ready_waiters;    // nothing to wait for: at turn end
    suppression_stats _stats;
    core::operation<&suppression_list::on_write> _write_done{*this};
    core::operation<&suppression_list::on_sync> _sync_done{*this};
};

}  // namespace ringrelay::queue
