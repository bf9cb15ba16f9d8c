// queue/dsn_writer.h: a shard's delivery status notifications (RFC 3464; docs/ARCHITECTURE.md
// "Delivery", DSNs). When every recipient of a message is final and some bounced or expired,
// one multipart/report (protocol/dsn.h) from <> to the original sender is appended to the same
// shard's spool as a new message; once it is committed it is handed to the dsn_sink (the
// delivery, which delivers it like any other message) and only then is the original's segment
// released, so the failure report cannot be lost with it. A commit that fails is tried again
// on the next retry() (the shard's tick). Never a DSN for a null-sender message.
//
// Threading: shard-local. The envelope and body of a DSN live here until it is committed.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "protocol/dsn.h"
#include "protocol/server_session.h"
#include "queue/message_store.h"
#include "queue/spool.h"

namespace ringrelay::queue {

// Takes a DSN once it is durable.
class dsn_sink {
public:
    // A DSN committed at `where`; the views are valid during the call.
    virtual void dsn_committed(const protocol::envelope& env, std::string_view client, std::string_view body,
                               const record_location& where, std::uint64_t received_us) noexcept = 0;

protected:
    ~dsn_sink() = default;
};

class dsn_writer final : public failure_reporter, public commit_waiter {
public:
    // host: queue ids and dates for the DSNs; config: --hostname (the reporting MTA).
    dsn_writer(spool& s, const core::config& config, protocol::session_host& host, unsigned shard,
               dsn_sink& sink) noexcept;
    dsn_writer(const dsn_writer&) = delete;
    dsn_writer& operator=(const dsn_writer&) = delete;

    // failure_reporter: builds and spools the DSN; true if it was queued (m's segment then
    // stays held until the DSN is committed).
    bool report_failures(const stored_message& m) noexcept override;
    // --delay-warning: one "Action: delayed" DSN for m's `delayed` recipients (their last
    // replies), quoting `original` (the header section is read; empty: none), retried until
    // retry_until_us. It holds no segment (m stays queued). False if none could be made.
    bool report_delay(const stored_message& m, std::span<const failed_recipient> delayed, std::string_view original,
                      std::uint64_t retry_until_us) noexcept;
    // commit_waiter: a DSN we queued has been committed (or not).
    void committed(protocol::commit_result result) noexcept override;
    // DSNs whose commit failed are appended again.
    void retry() noexcept;

    [[nodiscard]] std::uint64_t queued() const noexcept { return _queued; }
    // No DSN waiting for its commit or for a retry of a failed one.
    [[nodiscard]] bool idle() const noexcept { return _commits.empty() && _failed.empty(); }

private:
    // A DSN being committed: the envelope and body must live until committed().
    // Builds one DSN to m's sender about `reported` (each with `action`; retry_until only for
    // delayed) and appends it; the original's segment is held until its commit when
    // `holds_original`. False (and no DSN) for a null sender or what cannot be reported on.
    bool queue_report(const stored_message& m, std::span<const failed_recipient> reported, protocol::dsn_action action,
                      std::string_view retry_until, std::string_view original, bool holds_original) noexcept;

    struct pending_dsn {
        protocol::envelope envelope;
        std::string body;
        std::uint64_t received_us = 0;
        std::uint64_t original_segment = 0;  // held until this DSN is committed
        std::uint64_t original_bytes = 0;    // the original record's size (the hold's bytes)
        bool holds_original = true;          // false for a delay notice
    };

    spool& _spool;
    const core::config& _config;
    protocol::session_host& _host;
    const unsigned _shard;
    dsn_sink& _sink;
    std::deque<std::unique_ptr<pending_dsn>> _commits;   // in commit order
    std::vector<std::unique_ptr<pending_dsn>> _failed;   // commit failed: appended again by retry()
    std::uint64_t _queued = 0;
};

}  // namespace ringrelay::queue
