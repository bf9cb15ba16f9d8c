// queue/dsn_writer.cc: see dsn_writer.h.
#include "queue/dsn_writer.h"

#include "core/clock.h"
#include "core/invariant.h"
#include "core/log.h"
#include "protocol/dsn.h"

namespace ringrelay::queue {

dsn_writer::dsn_writer(spool& s, const core::config& config, protocol::session_host& host, unsigned shard,
                       dsn_sink& sink) noexcept
    : _spool(s), _config(config), _host(host), _shard(shard), _sink(sink) {}

bool dsn_writer::report_failures(const stored_message& m) noexcept {
    // Read back by the store before it reported (message_store::release_if_done); a body that
    // could not be read is left out of the report rather than holding it back.
    return queue_report(m, m.failures, protocol::dsn_action::failed, {}, m.body ? m.body->text : std::string_view(),
                        true);
}

bool dsn_writer::report_delay(const stored_message& m, std::span<const failed_recipient> delayed,
                              std::string_view original, std::uint64_t retry_until_us) noexcept {
    if (delayed.empty()) return false;
    const std::string until = core::rfc5322_date(static_cast<std::int64_t>(retry_until_us / 1000000));
    return queue_report(m, delayed, protocol::dsn_action::delayed, until, original, false);
}

bool dsn_writer::queue_report(const stored_message& m, std::span<const failed_recipient> reported,
                              protocol::dsn_action action, std::string_view retry_until, std::string_view original,
                              bool holds_original) noexcept {
    if (!protocol::should_bounce(m.envelope.mail_from)) return false;  // never a DSN for a DSN
    auto dsn = std::make_unique<pending_dsn>();
    dsn->holds_original = holds_original;
    dsn->received_us = static_cast<std::uint64_t>(core::unix_us());
    dsn->envelope.queue_id = _host.next_queue_id();
    dsn->envelope.helo = _config.hostname;
    dsn->envelope.mail_from.clear();
    dsn->envelope.rcpt_to = {m.envelope.mail_from};
    std::vector<protocol::dsn_recipient> rcpts;
    std::vector<std::string> dates;  // the recipients' views point into it: no reallocation
    dates.reserve(reported.size());
    for (const failed_recipient& f : reported) {
        protocol::dsn_recipient r;
        r.address = m.envelope.rcpt_to[f.rcpt_index];
        r.action = action;
        r.status = f.enhanced;
        r.remote_mta = f.remote;
        r.diagnostic_kind = f.from_peer ? protocol::diagnostic_type::smtp : protocol::diagnostic_type::local;
        r.diagnostic = f.diagnostic;
        dates.push_back(core::rfc5322_date(static_cast<std::int64_t>(f.time_us / 1000000)));
        r.last_attempt_date = dates.back();
        r.will_retry_until = retry_until;
        rcpts.push_back(r);
    }
    const std::string arrival = core::rfc5322_date(static_cast<std::int64_t>(m.arrival_us / 1000000));
    protocol::dsn_input in;
    in.original_queue_id = m.queue_id;
    in.dsn_queue_id = dsn->envelope.queue_id;
    in.reporting_mta = _config.hostname;
    in.sender = m.envelope.mail_from;
    in.arrival_date = arrival;
    in.date = _host.rfc5322_date();
    in.recipients = rcpts;
    in.original_message = original;
    auto built = protocol::build_dsn(in);
    if (!built) {
        core::diag("shard " + std::to_string(_shard) + ": no DSN for " + protocol::format_queue_id(m.queue_id) +
                   ": the sender or a recipient cannot be reported on");
        return false;
    }
    dsn->body = std::move(built->text);
    dsn->envelope.body = built->body;
    dsn->envelope.smtputf8 = built->smtputf8;
    if (holds_original) {
        dsn->original_segment = m.segment;
        dsn->original_bytes = m.where.size;
    }
    _spool.append(dsn->envelope, "127.0.0.1", dsn->body, dsn->received_us, this);
    ++_queued;
    _commits.push_back(std::move(dsn));
    return true;
}

void dsn_writer::committed(protocol::commit_result result) noexcept {
    RR_ASSERT(!_commits.empty());
    std::unique_ptr<pending_dsn> dsn = std::move(_commits.front());
    _commits.pop_front();
    if (result != protocol::commit_result::ok) {
        // The original's segment is still held (its failure report is not lost): try again.
        core::diag("shard " + std::to_string(_shard) + ": could not spool a DSN (disk error); retrying");
        _failed.push_back(std::move(dsn));
        return;
    }
    _sink.dsn_committed(dsn->envelope, "127.0.0.1", dsn->body, _spool.committed_location(), dsn->received_us);
    if (dsn->holds_original) _spool.release_segment(dsn->original_segment, dsn->original_bytes);
}

void dsn_writer::retry() noexcept {
    for (auto& dsn : _failed) {
        _spool.append(dsn->envelope, "127.0.0.1", dsn->body, dsn->received_us, this);
        _commits.push_back(std::move(dsn));
    }
    _failed.clear();
}

}  // namespace ringrelay::queue
