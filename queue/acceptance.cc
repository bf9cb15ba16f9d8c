// queue/acceptance.cc: see acceptance.h.
#include "queue/acceptance.h"

#include "core/clock.h"
#include "core/log.h"
#include "queue/campaign_header.h"
#include "queue/shard.h"
#include "queue/suppression.h"
#include "queue/unsubscribe.h"

namespace ringrelay::queue {

message_acceptance::message_acceptance(shard& owner, acceptance_owner& told) noexcept : _shard(owner), _owner(told) {}

message_acceptance::~message_acceptance() = default;

// A message's storage starts (its Received: field comes first): take the keys in force, and
// hash the body as it arrives if there are any.
void message_acceptance::body_begun() noexcept {
    _body_hash.reset();
    if (_shard.dkim() == nullptr) return;
    _dkim_table = _shard.dkim()->keys();
    if (!_dkim_table->empty()) _body_hash.emplace(_dkim_table->canon().body);
}

void message_acceptance::body_appended(std::string_view octets) noexcept {
    if (_body_hash) _body_hash->update(octets);
}

void message_acceptance::begin(const protocol::envelope& env, std::string_view message,
                               const reception_source& from) noexcept {
    _env = &env;
    _message = message;
    _from = from;
    _received_us = static_cast<std::uint64_t>(core::unix_us());
    _signed_used = false;
    _dkim_made.clear();
    _dkim_errors.clear();
    if (!take_campaign()) return;
    if (!add_unsubscribe()) return;
    if (!_body_hash) return append_to_spool();
    // Which keys sign: the header section is split here (a few hundred octets to scan); the
    // signatures are made on the signer's pool, or here when only Ed25519 keys sign.
    dkim_plan plan;
    try {
        plan = plan_signatures(*_dkim_table, unsigned_message());
    } catch (const std::bad_alloc&) {
        _dkim_errors.emplace_back("out of memory");
    }
    if (plan.keys.empty()) {
        _body_hash.reset();
        return append_to_spool();
    }
    const std::optional<protocol::dkim::sha256_digest> body_hash = _body_hash->finish();
    _body_hash.reset();
    if (!body_hash) {
        _dkim_errors.emplace_back("the body hash failed (OpenSSL)");
        return append_to_spool();
    }
    if (!_dkim_job) _dkim_job = std::make_unique<dkim_job>(this, &message_acceptance::dkim_signed, _shard.dkim());
    _dkim_job->prepare(_dkim_table, std::move(plan.keys), std::move(plan.fields), *body_hash,
                       static_cast<std::int64_t>(_received_us / 1000000));
    if (_dkim_job->ed25519_only()) {
        // Tens of microseconds: cheaper here than the round trip through the pool
        // (queue/dkim_signer.h). Then on as if the pool had handed it back.
        _dkim_job->sign_with(&_shard.dkim_cache());
        return _dkim_job->finish();
    }
    if (!_shard.dkim()->pool().submit(*_dkim_job, _shard.work_return())) {
        // Every signing thread is busy and as many messages wait as there may be connections:
        // the client tries again later; nothing is stored unsigned for want of a thread.
        _dkim_job->clear();
        if (_shard.may_report(shard::report::dkim_error))
            core::diag("DKIM: the signing queue is full; message from " + std::string(_from.client) +
                       " answered 451 4.3.0 (one report per second)");
        _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
        _owner.acceptance_done(acceptance_result::deferred);
    }
}

// The campaign header (issue 17): its value kept, every field of its name left out of the
// message that is signed, stored and delivered. False: the owner was told (451 4.3.0: no
// memory for the copy without it; the header is never passed on).
bool message_acceptance::take_campaign() noexcept {
    _campaign.clear();
    _stripped_used = false;
    const std::string_view name = _shard.outbound_delivery().campaign_field();
    if (name.empty()) return true;
    try {
        campaign_fields found = find_campaign_fields(_message, name);
        if (found.fields.empty()) return true;
        _stripped.clear();
        _stripped.reserve(_message.size());
        append_without_fields(_stripped, _message, found.fields);
        _campaign = std::move(found.campaign);
        _stripped_used = true;
        return true;
    } catch (const std::bad_alloc&) {
        refuse_for_memory();
        return false;
    }
}

// No memory for a copy of the message: the owner is told (451 4.3.0 / 503), nothing stored.
void message_acceptance::refuse_for_memory() noexcept {
    _campaign.clear();
    _body_hash.reset();
    _stripped = std::string();  // a copy made before the failure goes now, not at the next commit
    _stripped_used = false;
    _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
    _owner.acceptance_done(acceptance_result::deferred);
}

// One-click unsubscribe (RFC 8058, issue 18; queue/unsubscribe.h): List-Unsubscribe and
// List-Unsubscribe-Post put at the top of a single-recipient message of a tenant that has no
// List-Unsubscribe field, before the signatures are planned, so that they cover both; SMTP's
// and HTTP's alike. The body (and its hash, taken as it arrived) is untouched. False: the owner
// was told (no memory for the copy).
bool message_acceptance::add_unsubscribe() noexcept {
    const unsubscribe_links* links = _shard.unsubscribe();
    if (links == nullptr) return true;
    if (_env->rcpt_to.size() != 1) return true;
    const std::string_view tenant = tenant_of(*_env);
    if (tenant.empty()) return true;
    try {
        if (has_list_unsubscribe(unsigned_message())) return true;
        std::string fields = links->header_fields(tenant, _env->rcpt_to.front());
        if (fields.empty()) return true;
        fields.reserve(fields.size() + unsigned_message().size());
        fields += unsigned_message();
        _stripped.swap(fields);
        _stripped_used = true;
        return true;
    } catch (const std::bad_alloc&) {
        refuse_for_memory();
        return false;
    }
}

// Shard thread: the signatures are made (or not: the reasons are in errors()).
void message_acceptance::dkim_signed(void* self, dkim_job& job) noexcept {
    auto* a = static_cast<message_acceptance*>(self);
    a->_dkim_made = job.summaries();
    a->_shard.mutable_counters().dkim_signatures.fetch_add(a->_dkim_made.size(), std::memory_order_relaxed);
    a->_dkim_errors.insert(a->_dkim_errors.end(), job.errors().begin(), job.errors().end());
    if (!job.fields().empty()) {
        try {
            a->_signed.clear();
            a->_signed.reserve(job.fields().size() + a->unsigned_message().size());
            a->_signed += job.fields();
            a->_signed += a->unsigned_message();
            a->_signed_used = true;
        } catch (const std::bad_alloc&) {
            a->_dkim_made.clear();
            a->_dkim_errors.emplace_back("out of memory for the signed copy");
        }
    }
    job.clear();
    a->append_to_spool();
}

std::string_view message_acceptance::unsigned_message() const noexcept {
    return _stripped_used ? std::string_view(_stripped) : _message;
}

std::string_view message_acceptance::stored_message() const noexcept {
    return _signed_used ? std::string_view(_signed) : unsigned_message();
}

void message_acceptance::append_to_spool() noexcept {
    if (!_dkim_errors.empty() && _shard.may_report(shard::report::dkim_error))
        core::diag("DKIM: message from " + std::string(_from.client) + " not signed by every key: " + _dkim_errors.front() +
                   " (delivered as it is; the Reception record lists the reasons; one report per second)");
    _shard.message_spool().append(*_env, _from.client, stored_message(), _received_us, this, _campaign);
}

void message_acceptance::committed(protocol::commit_result result) noexcept {
    acceptance_result said = acceptance_result::committed;
    if (result == protocol::commit_result::ok) {
        _shard.mutable_counters().messages_queued.fetch_add(1, std::memory_order_relaxed);
        // From the end of the data (begin) to now, when the 250 goes out.
        const std::int64_t waited = core::unix_us() - static_cast<std::int64_t>(_received_us);
        _shard.mutable_counters().ack_latency.record(waited > 0 ? static_cast<std::uint64_t>(waited) : 0);
        log_reception();
        _shard.outbound_delivery().accept(*_env, _from.client, stored_message(),
                                          _shard.message_spool().committed_location(), _received_us, _campaign);
    } else {
        _shard.mutable_counters().messages_failed.fetch_add(1, std::memory_order_relaxed);
        said = result == protocol::commit_result::no_space ? acceptance_result::no_space : acceptance_result::io_error;
    }
    if (_signed_used) {
        _signed_used = false;
        // A big signed copy is not kept for the next message (the session keeps its own buffer).
        if (_signed.capacity() > 1024 * 1024) std::string().swap(_signed);
    }
    if (_stripped_used) {
        _stripped_used = false;
        if (_stripped.capacity() > 1024 * 1024) std::string().swap(_stripped);
    }
    _owner.acceptance_done(said);  // last: the owner may end us
}

namespace {
// ["a","b"] (escaped).
void append_json_strings(std::string& line, const std::vector<std::string>& items) {
    line += '[';
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i != 0) line += ',';
        line += '"';
        core::append_json_escaped(line, items[i]);
        line += '"';
    }
    line += ']';
}

// "key":"value" or "key":null for an empty value, after a comma.
void append_optional(std::string& line, std::string_view key, std::string_view value) {
    line += ",\"";
    line += key;
    line += "\":";
    if (value.empty()) {
        line += "null";
        return;
    }
    line += '"';
    core::append_json_escaped(line, value);
    line += '"';
}
}  // namespace

void message_acceptance::log_reception() noexcept {
    core::log_writer& log = _shard.log();
    if (!log.enabled()) return;
    const protocol::envelope& env = *_env;
    std::string& line = log.line_buffer();
    line += "{\"type\":\"Reception\",\"time\":\"";
    line += core::iso8601_us(static_cast<std::int64_t>(_received_us));
    line += "\",\"queue_id\":\"";
    line += protocol::format_queue_id(env.queue_id);
    line += "\",\"shard\":";
    line += std::to_string(_shard.index());
    line += ",\"client\":\"";
    core::append_json_escaped(line, _from.client);
    if (!_from.proxy.empty()) {
        line += "\",\"proxy\":\"";
        core::append_json_escaped(line, _from.proxy);
    }
    line += "\",\"protocol\":\"";
    core::append_json_escaped(line, _from.protocol);
    line += "\",\"helo\":\"";
    core::append_json_escaped(line, env.helo);
    line += "\",\"sender\":\"";
    core::append_json_escaped(line, env.mail_from);
    line += "\",\"recipients\":";
    append_json_strings(line, env.rcpt_to);
    line += ",\"size\":";
    line += std::to_string(stored_message().size());
    append_optional(line, "auth", _from.auth_user);
    append_optional(line, "tls", _from.tls);
    if (!_campaign.empty()) {
        line += ",\"campaign\":\"";  // issue 17: its header was stripped from the message stored
        core::append_json_escaped(line, _campaign);
        line += '"';
    }
    line += ",\"dkim\":";
    append_json_strings(line, _dkim_made);
    if (!_dkim_errors.empty()) {
        line += ",\"dkim_errors\":";
        append_json_strings(line, _dkim_errors);
    }
    line += "}\n";
}

}  // namespace ringrelay::queue
