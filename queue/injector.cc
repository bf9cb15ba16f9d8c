// queue/injector.cc: see injector.h.
#include "queue/injector.h"

#include <algorithm>
#include <string>

#include "core/log.h"
#include "core/net.h"
#include "protocol/address.h"
#include "protocol/received_header.h"
#include "protocol/relay_control.h"
#include "queue/acceptance.h"
#include "queue/shard.h"

namespace ringrelay::queue {

namespace {

bool is_ascii(std::string_view s) noexcept {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    core::append_json_escaped(out, s);
    out += '"';
}

void append_json_strings(std::string& out, const std::vector<std::string>& items) {
    out += '[';
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i != 0) out += ", ";
        append_json_string(out, items[i]);
    }
    out += ']';
}

}  // namespace

// One request: the envelope and message it owns until its commit is known, the answer owed.
class injector::injection final : public acceptance_owner {
public:
    explicit injection(injector& owner) : _owner(owner), _acceptance(owner._shard, *this) {}

    protocol::envelope envelope;
    std::string message;
    std::string client;
    std::vector<std::string> failed;
    std::vector<std::string> errors;

    void owe(core::http_deferred later) noexcept { _later = std::move(later); }

    void start() noexcept {
        _acceptance.body_begun();
        _acceptance.body_appended(message);
        _acceptance.begin(envelope, message,
                          reception_source{.client = client, .proxy = {}, .protocol = "HTTP",
                                           .auth_user = envelope.auth_user, .tls = {}});
    }

    void acceptance_done(acceptance_result result) noexcept override {
        core::http_response response;
        switch (result) {
        case acceptance_result::committed: response.body = render(200); break;
        case acceptance_result::no_space:
            response = core::http_json_error(503, "the spool is out of space: nothing queued; try again later");
            break;
        case acceptance_result::io_error:
            response = core::http_json_error(503, "the spool could not write the message: nothing queued; try again later");
            break;
        case acceptance_result::deferred:
            response = core::http_json_error(503, "the relay is busy (signing queue full or no memory): nothing queued; try again later");
            break;
        }
        _later.complete(std::move(response));
        _owner.finished(*this);  // last: frees us at the turn's end
    }

    // The answer's body: 200 with the queue id, or 422 with none (every recipient refused).
    [[nodiscard]] std::string render(int status) const {
        std::string out = "{";
        if (status != 200) out += "\"error\": \"no recipient accepted: nothing queued\", ";
        out += "\"success_count\": " + std::to_string(envelope.rcpt_to.size());
        out += ", \"fail_count\": " + std::to_string(failed.size());
        out += ", \"failed_recipients\": ";
        append_json_strings(out, failed);
        out += ", \"errors\": ";
        append_json_strings(out, errors);
        out += ", \"queue_id\": ";
        if (status == 200) {
            append_json_string(out, protocol::format_queue_id(envelope.queue_id));
        } else {
            out += "null";
        }
        out += "}\n";
        return out;
    }

private:
    injector& _owner;
    message_acceptance _acceptance;
    core::http_deferred _later;
};

injector::injector(shard& owner) noexcept : _shard(owner) {}

injector::~injector() = default;

void injector::finished(injection& done) noexcept {
    const auto at = std::find_if(_in_flight.begin(), _in_flight.end(),
                                 [&done](const std::unique_ptr<injection>& i) { return i.get() == &done; });
    if (at == _in_flight.end()) return;
    _finished.push_back(std::move(*at));
    _in_flight.erase(at);
}

void injector::end_turn() noexcept { _finished.clear(); }

void injector::inject(inject_request&& request, const sockaddr* peer, core::http_answer& answer) noexcept {
    if (_shard.stopping() || _shard.draining()) {
        answer.response = core::http_json_error(503, "the relay is stopping or draining: nothing queued; try again later");
        return;
    }
    if (!_shard.message_spool().accepting()) {
        answer.response = core::http_json_error(503, "the spool cannot take a message now (disk nearly full or failing): "
                                                     "nothing queued; try again later");
        return;
    }
    const protocol::server_config& config = _shard.server_config();
    if (config.max_recipients != 0 && request.recipients.size() > config.max_recipients) {
        answer.response = core::http_json_error(400, "\"recipients\": more than " + std::to_string(config.max_recipients) +
                                                         " (--max-recipients)");
        return;
    }
    try {
        // Refusals below are answered at once; the handle is taken only for the commit.
        auto job = std::make_unique<injection>(*this);
        job->client = core::address_text(peer);
        protocol::client_info client{job->client};
        for (const core::cidr& net : _shard.config().relay_cidrs) {
            if (net.contains(peer)) {
                client.trust = protocol::relay_trust::trusted;
                break;
            }
        }
        // RFC 4954 §1 as for SMTP: an authenticated client may relay anywhere, and its user is
        // the message's tenant (suppression, tenant limits).
        if (!request.auth_user.empty()) client.trust = protocol::relay_trust::trusted;
        protocol::envelope& env = job->envelope;
        env.auth_user = std::move(request.auth_user);
        env.mail_from = std::move(request.envelope_sender);
        env.smtputf8 = request.smtputf8;
        // As RCPT: relay control, then the suppression list.
        std::string bracketed;
        for (std::string& rcpt : request.recipients) {
            bracketed = "<" + rcpt + ">";
            const auto path = protocol::parse_path(bracketed, protocol::path_kind::forward_path);
            if (!path || protocol::decide_relay(*path, client.trust, config.relay_domains) != protocol::relay_decision::permit) {
                job->errors.push_back(bracketed + ": 554 5.7.1 relay access denied (--relay-networks, --relay-domains)");
                job->failed.push_back(std::move(rcpt));
                continue;
            }
            const protocol::host_reply refusal = _shard.check_rcpt(client, env, rcpt);
            if (refusal.reply != protocol::reply_id::none) {
                job->errors.push_back("550 5.1.1 " + std::string(refusal.argument));
                job->failed.push_back(std::move(rcpt));
                continue;
            }
            env.rcpt_to.push_back(std::move(rcpt));
        }
        if (env.rcpt_to.empty()) {
            answer.response.status = 422;
            answer.response.body = job->render(422);
            return;
        }
        env.queue_id = _shard.next_queue_id();
        const std::string id = protocol::format_queue_id(env.queue_id);
        const std::string message_id = "<" + id + "@" + config.hostname + ">";
        const std::string boundary = "=_rr_" + id;
        const message_stamp stamp{.date = _shard.rfc5322_date(), .message_id = message_id, .boundary = boundary};
        std::string content;
        if (request.parts) {
            content = build_mime_message(*request.parts, stamp);
        } else {
            auto prepared = prepare_raw_message(request.raw, stamp);
            if (!prepared) {
                answer.response = core::http_json_error(400, prepared.error());
                return;
            }
            content = std::move(*prepared);
        }
        // The trace field SMTP would write (RFC 5321 §4.4), "with HTTP".
        protocol::append_received_header(job->message, protocol::received_fields{
            .helo = job->client,
            .client_address = job->client,
            .hostname = config.hostname,
            .protocol = "HTTP",
            .tls = {},
            .queue_id = env.queue_id,
            .recipient = env.rcpt_to.size() == 1 ? std::string_view{env.rcpt_to.front()} : std::string_view{},
            .date = stamp.date,
        });
        job->message += content;
        if (config.max_message_size != 0 && job->message.size() > config.max_message_size) {
            answer.response = core::http_json_error(413, "\"content\": the message is " + std::to_string(job->message.size()) +
                                                             " octets, over --max-message-size " +
                                                             std::to_string(config.max_message_size));
            return;
        }
        env.body = is_ascii(job->message) ? protocol::body_type::seven_bit : protocol::body_type::eight_bit_mime;
        // From here the answer waits for the commit (start() may answer at once: deferred).
        _in_flight.reserve(_in_flight.size() + 1);
        job->owe(answer.defer());
        injection& started = *job;
        _in_flight.push_back(std::move(job));
        started.start();
    } catch (const std::bad_alloc&) {
        answer.response = core::http_json_error(503, "out of memory: nothing queued; try again later");
    }
}

}  // namespace ringrelay::queue
