// queue/message_store.cc: see message_store.h.
#include "queue/message_store.h"

#include <algorithm>
#include <cstring>

#include "core/invariant.h"
#include "protocol/dsn.h"

namespace ringrelay::queue {

message_store::message_store(spool& s, delivery_log& log, failure_reporter& reporter, queue_mode mode,
                             std::uint64_t cache_bytes, body_listener* listener) noexcept
    : _spool(s), _log(log), _reporter(reporter), _mode(mode), _cache_budget(cache_bytes), _listener(listener) {}

message_store::~message_store() {
    // The cache's list points into the messages: empty it before they go.
    while (_cache_head != nullptr) cache_remove(*_cache_head);
}

// ---- recovery -------------------------------------------------------------------------

void message_store::on_record(std::uint64_t segment, const decoded_message& rec) {
    if (rec.header.type == record_type::message || rec.header.type == record_type::message_copy) {
        // A copy (compaction) replaces what was read for its message before it: the original,
        // or an older copy, still there after a crash.
        auto m = std::make_unique<stored_message>();
        m->queue_id = rec.header.queue_id;
        m->segment = segment;
        m->arrival_us = rec.header.received_us;
        m->envelope = rec.envelope;
        m->client = rec.client;
        m->where = record_location{segment, rec.offset, rec.record_size, rec.segment_salt};
        m->size = rec.message_size;
        set_campaign(*m, rec.campaign);
        const std::size_t n = m->envelope.rcpt_to.size();
        m->status.assign(n, recipient_status::pending);
        m->attempts.assign(n, 0);
        m->in_flight.assign(n, 0);
        if (rec.header.type == record_type::message_copy) {
            for (std::size_t i = 0; i < n && i < rec.states.size(); ++i) {
                m->status[i] = rec.states[i].status;
                m->attempts[i] = rec.states[i].attempts;
                if (rec.states[i].status == recipient_status::deferred)
                    m->next_attempt_us = std::max(m->next_attempt_us, rec.states[i].next_attempt_us);
            }
        }
        _messages[m->queue_id] = std::move(m);
        return;
    }
    auto it = _messages.find(rec.header.queue_id);
    if (it == _messages.end()) return;  // its message was finished and its segment deleted
    stored_message& m = *it->second;
    if (rec.rcpt_index == delay_warning_index) {
        m.delay_warned = true;
        return;
    }
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
            if (m->has_campaign) _campaigns.erase(id);
            continue;
        }
        _spool.hold_segment(m->segment, m->where.size);
    }
    for (const std::uint64_t id : finished) _messages.erase(id);  // none is in the cache yet
    recovered out;
    out.unfinished = _messages.size();
    if (_mode == queue_mode::hold) {
        _messages.clear();  // their segments stay held; the bodies need not stay in memory
        _campaigns.clear();
        return out;
    }
    out.due.reserve(_messages.size());
    for (auto& [id, m] : _messages) out.due.emplace_back(m->next_attempt_us, id);
    return out;
}

// ---- messages -------------------------------------------------------------------------

stored_message* message_store::add(const protocol::envelope& env, std::string_view client, std::string_view body,
                                   const record_location& where, std::uint64_t received_us, std::string_view campaign) {
    const std::uint64_t segment = where.segment;
    _spool.hold_segment(segment, where.size);
    // --hold: the message stays in the spool (its segment is kept); nothing in memory.
    if (_mode == queue_mode::hold) return nullptr;
    auto m = std::make_unique<stored_message>();
    m->queue_id = env.queue_id;
    m->segment = segment;
    m->arrival_us = received_us;
    m->envelope = env;
    m->client.assign(client);
    m->where = where;
    m->size = body.size();
    if (!campaign.empty()) set_campaign(*m, campaign);
    if (body.size() <= _cache_budget) {
        auto copy = std::make_shared<message_body>();
        copy->bytes.assign(body);
        copy->text = copy->bytes;
        m->body = std::move(copy);
    }
    const std::size_t n = env.rcpt_to.size();
    m->status.assign(n, recipient_status::pending);
    m->attempts.assign(n, 0);
    m->in_flight.assign(n, 0);
    m->unfinished = static_cast<std::uint32_t>(n);
    stored_message& ref = *m;
    _messages[env.queue_id] = std::move(m);
    if (ref.body) cache_insert(ref);
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
    m.next_attempt_us = next_attempt_us;  // what a compaction's copy records for its deferred recipients
    ++_counters.deferred;
    // A recipient without a route has not been attempted: nothing to journal (after a
    // restart it is simply looked at again).
    if (!note.hop.name.empty())
        _spool.append_outcome(m.queue_id, i, recipient_status::deferred, m.attempts[i], next_attempt_us);
    _log.record("TransientFailure", m, campaign_of(m), i, note, next_attempt_us);
}

void message_store::delay_warned(stored_message& m) {
    m.delay_warned = true;
    _spool.append_outcome(m.queue_id, delay_warning_index, recipient_status::deferred, 0, 0);
}

void message_store::finish(stored_message& m, std::uint32_t i, recipient_status status, const outcome_note& note) {
    m.status[i] = status;
    if (m.unfinished > 0) --m.unfinished;
    _spool.append_outcome(m.queue_id, i, status, m.attempts[i], 0);
    switch (status) {
        case recipient_status::delivered:
            ++_counters.delivered;
            _log.record("Delivery", m, campaign_of(m), i, note, 0);
            break;
        case recipient_status::bounced:
            ++_counters.bounced;
            _log.record("Bounce", m, campaign_of(m), i, note, 0);
            break;
        case recipient_status::expired:
            ++_counters.expired;
            _log.record("Expiration", m, campaign_of(m), i, note, 0);
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
    if (m.jobs == 0 && m.pinned) {
        if (auto it = _pins.find(m.queue_id); it != _pins.end()) {
            _spool.release_segment(it->second.segment, it->second.bytes);  // no job reads the old record now
            _pins.erase(it);
        }
        m.pinned = false;
    }
    if (m.unfinished != 0 || m.jobs != 0) return;
    // The DSN quotes the original: read it back first (a body that cannot be read is left out).
    if (!m.failures.empty() && protocol::should_bounce(m.envelope.mail_from) && !m.body_unreadable &&
        !need_body(m))
        return;
    const bool reported = !m.failures.empty() && _reporter.report_failures(m);
    if (!reported) _spool.release_segment(m.segment, m.where.size);
    forget(m);
}

void message_store::set_campaign(stored_message& m, std::string_view campaign) {
    m.has_campaign = !campaign.empty();
    if (m.has_campaign) {
        _campaigns[m.queue_id].assign(campaign);
    } else {
        _campaigns.erase(m.queue_id);  // a copy without one replaces an original (recovery)
    }
}

std::string_view message_store::campaign_of(const stored_message& m) const noexcept {
    if (!m.has_campaign) return {};
    const auto it = _campaigns.find(m.queue_id);
    return it != _campaigns.end() ? std::string_view(it->second) : std::string_view();
}

void message_store::forget(stored_message& m) noexcept {
    cache_remove(m);
    if (m.has_campaign) _campaigns.erase(m.queue_id);
    _messages.erase(m.queue_id);  // destroys m
}

// ---- compaction ---------------------------------------------------------------------------

std::vector<std::uint64_t> message_store::live_in(std::uint64_t segment, std::uint64_t max_bytes) const {
    std::vector<std::uint64_t> out;
    std::uint64_t bytes = 0;
    for (const auto& [id, m] : _messages) {
        if (m->segment != segment || m->unfinished == 0 || m->jobs != 0 || m->pinned) continue;
        out.push_back(id);
        bytes += m->where.size;
        if (bytes >= max_bytes) break;
    }
    return out;
}

std::vector<recipient_state> message_store::states_of(const stored_message& m) {
    std::vector<recipient_state> out(m.status.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i].status = m.status[i];
        out[i].attempts = m.attempts[i];
        if (m.status[i] == recipient_status::deferred) out[i].next_attempt_us = m.next_attempt_us;
    }
    return out;
}

void message_store::relocate(stored_message& m, const record_location& copy) noexcept {
    _spool.hold_segment(copy.segment, copy.size);
    if (m.jobs != 0 && !m.pinned) {
        // A job made meanwhile reads the record where it was (its location is a copy): the
        // old segment must outlive it.
        _pins[m.queue_id] = pin{m.segment, m.where.size};
        m.pinned = true;
    } else {
        _spool.release_segment(m.segment, m.where.size);
    }
    m.segment = copy.segment;
    m.where = copy;
}

std::uint64_t message_store::pinned_segment(const stored_message& m) const noexcept {
    if (!m.pinned) return 0;
    const auto it = _pins.find(m.queue_id);
    return it != _pins.end() ? it->second.segment : 0;
}

// ---- bodies -----------------------------------------------------------------------------

bool message_store::need_body(stored_message& m) noexcept {
    if (m.body) {
        ++_cache_stats.hits;
        return true;
    }
    if (m.body_loading) return false;
    auto op = std::make_unique<body_read>();
    op->store = this;
    op->queue_id = m.queue_id;
    op->where = m.where;
    body_read* raw = op.get();
    _reads.emplace(raw, std::move(op));
    m.body_loading = true;
    ++m.jobs;  // keeps m until the read is over
    _spool.read_record(raw->where, raw->bytes, raw);
    return false;
}

void message_store::on_body_read(body_read* op, int res) noexcept {
    auto it = _reads.find(op);
    RR_ASSERT(it != _reads.end());
    std::unique_ptr<body_read> owned = std::move(it->second);
    _reads.erase(it);
    stored_message* m = find(owned->queue_id);
    RR_ASSERT(m != nullptr);  // held by its jobs count while the read was out
    m->body_loading = false;
    --m->jobs;
    const record_location& w = owned->where;
    std::string error;
    const std::string where = "segment " + std::to_string(w.segment) + " offset " + std::to_string(w.offset);
    if (auto text = message_read_back(owned->bytes, res, w, m->queue_id); !text) {
        error = where + ": " + text.error();
    } else {
        const auto at = static_cast<std::size_t>(text->data() - owned->bytes.data());
        const std::size_t length = text->size();
        auto body = std::make_shared<message_body>();
        body->bytes = std::move(owned->bytes);
        body->text = std::string_view(body->bytes).substr(at, length);
        m->body = std::move(body);
    }
    ++_cache_stats.reads;
    if (error.empty()) {
        m->body_unreadable = false;
        if (m->size <= _cache_budget) cache_insert(*m);
    } else {
        ++_cache_stats.read_errors;
        m->body_unreadable = true;
        error = "cannot read the message back from the spool: " + error;
    }
    if (_listener != nullptr) {
        _listener->body_ready(*m, error);
    } else {
        release_if_done(*m);
    }
}

void message_store::cache_insert(stored_message& m) noexcept {
    if (m.cached) return;
    m.cached = true;
    m.cache_prev = _cache_tail;
    m.cache_next = nullptr;
    if (_cache_tail != nullptr) {
        _cache_tail->cache_next = &m;
    } else {
        _cache_head = &m;
    }
    _cache_tail = &m;
    _cache_used += m.size;
    ++_cache_entries;
    while (_cache_used > _cache_budget && _cache_head != nullptr && _cache_head != &m) {
        stored_message& old = *_cache_head;
        cache_remove(old);
    }
}

void message_store::cache_remove(stored_message& m) noexcept {
    if (!m.cached) return;
    if (m.cache_prev != nullptr) {
        m.cache_prev->cache_next = m.cache_next;
    } else {
        _cache_head = m.cache_next;
    }
    if (m.cache_next != nullptr) {
        m.cache_next->cache_prev = m.cache_prev;
    } else {
        _cache_tail = m.cache_prev;
    }
    m.cache_prev = m.cache_next = nullptr;
    m.cached = false;
    _cache_used -= m.size;
    --_cache_entries;
    m.body.reset();  // a job that sends it keeps its own reference
}

body_cache_counters message_store::cache_counters() const noexcept {
    body_cache_counters c = _cache_stats;
    c.bytes = _cache_used;
    c.entries = _cache_entries;
    return c;
}

}  // namespace ringrelay::queue
