// queue/delivery_log.cc: see delivery_log.h.
#include "queue/delivery_log.h"

#include <cstdio>

#include "core/clock.h"
#include "queue/message_store.h"
#include "queue/suppression.h"

namespace ringrelay::queue {

std::string reply_line(const protocol::outcome_reply& r) {
    std::string out = std::to_string(r.code);
    out += ' ';
    for (const char ch : r.text) out += ch == '\n' ? ' ' : ch;
    return out;
}

protocol::bounce_input bounce_input_of(const outcome_note& note) noexcept {
    const protocol::outcome_reply* reply = note.reply;
    if (reply != nullptr && reply->origin != protocol::reply_origin::none) {
        protocol::bounce_input in;
        in.origin = reply->origin == protocol::reply_origin::peer ? protocol::rule_origin::peer
                                                                  : protocol::rule_origin::local;
        in.code = reply->code;
        in.enhanced = reply->enhanced;
        in.text = reply->text;
        return in;
    }
    if (note.why != nullptr) return protocol::bounce_input_from_reason(note.why);
    return {};  // local, no code, no text: rules treat it as a broken dialogue
}

void delivery_log::record(const char* type, const stored_message& m, std::string_view campaign, std::uint32_t i,
                          const outcome_note& note, std::uint64_t next_attempt_us) {
    if (!_log.enabled()) return;
    const next_hop_ref& remote = note.hop;
    const protocol::outcome_reply* reply = note.reply;
    std::string& line = _log.line_buffer();
    line += "{\"type\":\"";
    line += type;
    line += "\",\"time\":\"";
    line += core::iso8601_us(static_cast<std::int64_t>(note.now_us));
    line += "\",\"queue_id\":\"";
    line += protocol::format_queue_id(m.queue_id);
    line += "\",\"shard\":";
    line += std::to_string(_shard);
    line += ",\"sender\":\"";
    core::append_json_escaped(line, m.envelope.mail_from);
    line += "\",\"recipient\":\"";
    core::append_json_escaped(line, m.envelope.rcpt_to[i]);
    line += "\",\"next_hop\":";
    if (remote.name.empty()) {
        line += "null";
    } else {
        line += "{\"name\":\"";
        core::append_json_escaped(line, remote.name);
        line += "\",\"address\":\"";
        core::append_json_escaped(line, remote.address);
        line += "\"}";
    }
    if (!remote.site.empty()) {
        line += ",\"site\":\"";
        core::append_json_escaped(line, remote.site);
        line += '"';
    }
    if (const std::string_view tenant = tenant_of(m.envelope); !tenant.empty()) {
        line += ",\"tenant\":\"";  // issue 17: the AUTH user, else the sender's domain
        core::append_json_escaped(line, tenant);
        line += '"';
    }
    if (!campaign.empty()) {
        line += ",\"campaign\":\"";  // issue 17: the campaign header's value, as the message gave it
        core::append_json_escaped(line, campaign);
        line += '"';
    }
    line += ",\"egress_source\":\"";  // a source name (queue/egress.h: no quotes or escapes needed)
    line += remote.egress_source.empty() ? std::string_view("default") : remote.egress_source;
    line += '"';
    line += ",\"reply\":";
    if (reply != nullptr && reply->origin != protocol::reply_origin::none) {
        line += '"';
        core::append_json_escaped(line, reply_line(*reply));
        line += '"';
    } else if (note.why != nullptr) {
        line += '"';
        core::append_json_escaped(line, note.why);
        line += '"';
    } else {
        line += "null";
    }
    if (reply != nullptr && reply->origin == protocol::reply_origin::local) line += ",\"reply_origin\":\"local\"";
    if (!remote.name.empty()) {
        line += ",\"tls\":";  // the attempt's TLS protocol and cipher; null in plaintext
        if (remote.tls.empty()) {
            line += "null";
        } else {
            line += '"';
            core::append_json_escaped(line, remote.tls);
            line += '"';
        }
    }
    line += ",\"attempt\":";
    line += std::to_string(m.attempts[i]);
    line += ",\"queued_seconds\":";
    const double queued =
        note.now_us > m.arrival_us ? static_cast<double>(note.now_us - m.arrival_us) / 1e6 : 0.0;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", queued);
    line += buf;
    if (note.attempt_ms >= 0) {
        // From scheduling the attempt (routing, connecting, the transaction) to its outcome.
        std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(note.attempt_ms) / 1e3);
        line += ",\"attempt_seconds\":";
        line += buf;
    }
    if (next_attempt_us != 0) {
        line += ",\"next_attempt\":\"";
        line += core::iso8601_us(static_cast<std::int64_t>(next_attempt_us));
        line += '"';
    }
    // Last, so that the fields every record has keep their place.
    if (std::string_view(type) != "Delivery") {
        const protocol::bounce_verdict v = note.verdict != nullptr ? *note.verdict : classify(note);
        line += ",\"bounce_class\":\"";
        line += protocol::to_string(v.cls);
        line += '"';
        if (!v.blocklist.empty()) {
            line += ",\"blocklist\":\"";
            core::append_json_escaped(line, v.blocklist);
            line += '"';
        }
        if (!v.rule.empty()) {
            line += ",\"bounce_rule\":\"";
            core::append_json_escaped(line, v.rule);
            line += '"';
        }
    }
    line += "}\n";
}

}  // namespace ringrelay::queue
