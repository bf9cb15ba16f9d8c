// queue/message_store.cc: see message_store.h.
#include "queue/message_store.h"

#include <algorithm>

namespace ringrelay::queue {

message_store::message_store(spool& s, delivery_log& log, failure_reporter& reporter, queue_mode mode) noexcept
    : _spool(s), _log(log), _reporter(reporter), _mode(mode) {}

// ---- recovery -------------------------------------------------------------------------

void message_store::on_record(std::uint64_t segment, const decoded_message& rec) {
    if (rec.header.type == record_type::message) {
        auto m = std::make_unique<stored_message>();
        m->queue_id = rec.header.queue_id;
        m->segment = segment;
        m->arrival_us = rec.header.received_us;
        m->envelope = rec.envelope;
        m->client = rec.client;
        m->body.assign(rec.message);
        const std::size_t n = m->envelope.rcpt_to.size();
        m->status.assign(n, recipient_status::pending);
        m->attempts.assign(n, 0);
        m->in_flight.assign(n, 0);
        _messages[m->queue_id] = std::move(m);
        return;
    }
    auto it = _messages.find(rec.header.queue_id);
    if (it == _messages.end()) return;  // its message was finished and its segment deleted
    stored_message& m = *it->second;
    if (rec.rcpt_index >= m.status.size()) return;
    m.status[rec.rcpt_index] = rec.status;
    m.attempts[rec.rcpt_index] = rec.attempts;
    if (rec.status == recipient_status::deferred)
        m.next_attempt_us = std::max(m.next_attempt_us, rec.next_attempt_us);
}

message_store::recovered message_store::finish_recovery() {
    std::vector<std::uint64_t> finished;
    for (auto& [id, m] : _messages) {
        m->unfinished = 0;
        for (const recipient_status s : m->status) m->unfinished += final_status(s) ? 0 : 1;
        if (m->unfinished == 0) {
            finished.push_back(id);
            continue;
        }
        _spool.hold_segment(m->segment);
    }
    for (const std::uint64_t id : finished) _messages.erase(id);
    recovered out;
    out.unfinished = _messages.size();
    if (_mode == queue_mode::hold) {
        _messages.clear();  // their segments stay held; the bodies need not stay in memory
        return out;
    }
    out.due.reserve(_messages.size());
    for (auto& [id, m] : _messages) out.due.emplace_back(m->next_attempt_us, id);
    return out;
}

// ---- messages -------------------------------------------------------------------------

stored_message* message_store::add(const protocol::envelope& env, std::string_view client, std::string_view body,
                                   std::uint64_t segment, std::uint64_t received_us) {
    _spool.hold_segment(segment);
    // --hold: the message stays in the spool (its segment is kept); nothing in memory.
    if (_mode == queue_mode::hold) return nullptr;
    auto m = std::make_unique<stored_message>();
    m->queue_id = env.queue_id;
    m->segment = segment;
    m->arrival_us = received_us;
    m->envelope = env;
    m->client.assign(client);
    m->body.assign(body);
    const std::size_t n = env.rcpt_to.size();
    m->status.assign(n, recipient_status::pending);
    m->attempts.assign(n, 0);
    m->in_flight.assign(n, 0);
    m->unfinished = static_cast<std::uint32_t>(n);
    stored_message& ref = *m;
    _messages[env.queue_id] = std::move(m);
    return &ref;
}

stored_message* message_store::find(std::uint64_t queue_id) noexcept {
    const auto it = _messages.find(queue_id);
    return it == _messages.end() ? nullptr : it->second.get();
}

// ---- outcomes -------------------------------------------------------------------------

void message_store::defer(stored_message& m, std::uint32_t i, std::uint64_t next_attempt_us,
                          const outcome_note& note) {
    m.status[i] = recipient_status::deferred;
    ++_counters.deferred;
    // A recipient without a route has not been attempted: nothing to journal (after a
    // restart it is simply looked at again).
    if (!note.hop.name.empty())
        _spool.append_outcome(m.queue_id, i, recipient_status::deferred, m.attempts[i], next_attempt_us);
    _log.record("TransientFailure", m, i, note, next_attempt_us);
}

void message_store::finish(stored_message& m, std::uint32_t i, recipient_status status, const outcome_note& note) {
    m.status[i] = status;
    if (m.unfinished > 0) --m.unfinished;
    _spool.append_outcome(m.queue_id, i, status, m.attempts[i], 0);
    switch (status) {
        case recipient_status::delivered:
            ++_counters.delivered;
            _log.record("Delivery", m, i, note, 0);
            break;
        case recipient_status::bounced:
            ++_counters.bounced;
            _log.record("Bounce", m, i, note, 0);
            break;
        case recipient_status::expired:
            ++_counters.expired;
            _log.record("Expiration", m, i, note, 0);
            break;
        default:
            break;
    }
    if (status != recipient_status::bounced && status != recipient_status::expired) return;
    const protocol::outcome_reply* reply = note.reply;
    failed_recipient f;
    f.rcpt_index = i;
    f.status = status;
    f.remote = note.hop.name;
    if (reply != nullptr && reply->origin != protocol::reply_origin::none) {
        f.diagnostic = reply_line(*reply);
        if (reply->enhanced.present()) {
            f.enhanced = std::to_string(reply->enhanced.status_class) + "." + std::to_string(reply->enhanced.subject) +
                         "." + std::to_string(reply->enhanced.detail);
        }
        f.from_peer = reply->origin == protocol::reply_origin::peer;
    } else {
        f.diagnostic = note.why != nullptr ? note.why : "delivery failed";
    }
    f.time_us = note.now_us;
    if (status == recipient_status::expired) {
        f.enhanced = "4.4.7";  // RFC 3463 §3.5: delivery time expired, whatever the last reply was
    } else if (f.enhanced.empty()) {
        f.enhanced = "5.0.0";
    }
    m.failures.push_back(std::move(f));
}

void message_store::release_if_done(stored_message& m) noexcept {
    if (m.unfinished != 0 || m.jobs != 0) return;
    const bool reported = !m.failures.empty() && _reporter.report_failures(m);
    if (!reported) _spool.release_segment(m.segment);
    _messages.erase(m.queue_id);  // destroys m
}

}  // namespace ringrelay::queue
