// queue/injector.h: a shard's side of POST /api/v1/inject (issue 18): a request whose body parsed
// (queue/inject_body.h) is checked as SMTP checks a transaction, made into a message and taken
// by the relay's acceptance (queue/acceptance.h: the campaign header, DKIM, the spool's group
// commit, the Reception record with "protocol":"HTTP", the hand-off to delivery), and answered
// only once the commit is known:
//   200 {"success_count", "fail_count", "failed_recipients", "errors", "queue_id"}: durable, as
//       SMTP's 250 (the recipients refused are listed, with why in "errors");
//   422 the same with "queue_id": null and an "error": every recipient was refused, nothing queued;
//   400 a message that cannot be made (a line over 998 octets...), too many recipients;
//   413 a message over --max-message-size;
//   503 {"error"}: the spool cannot take it (space, a failed write or sync, the signing queue
//       full, no memory) or the shard is stopping; nothing queued.
// Per recipient, as RCPT: relay control (protocol/relay_control.h; the client's address against
// --relay-networks, --relay-domains), then the suppression list (shard::check_rcpt, which logs
// the `Suppressed` record). The message gets a Received: field "with HTTP", Date: and
// Message-ID: when it has none (<QUEUEID@hostname>).
//
// Shutdown: a request that comes while the shard stops gets 503. One in flight keeps the shard
// from finishing (idle()) until its commit is known: committed mail is delivered whether or not
// the client still waits (the HTTP connection may have been closed with the answer owed: then
// the client never hears 200 and may send again, as an SMTP client cut off after the data).
//
// Lifecycle: made by the shard after its spool and delivery, destroyed before them; shard-local.
#pragma once
#include <sys/socket.h>

#include <memory>
#include <vector>

#include "queue/inject_body.h"

namespace ringrelay::queue {

class shard;

class injector final : public inject_gateway {
public:
    explicit injector(shard& owner) noexcept;
    ~injector();
    injector(const injector&) = delete;
    injector& operator=(const injector&) = delete;

    void inject(inject_request&& request, const sockaddr* peer, core::http_answer& answer) noexcept override;
    // No injection waits for its commit.
    [[nodiscard]] bool idle() const noexcept { return _in_flight.empty(); }
    // The end of the shard's loop turn: the injections answered are freed.
    void end_turn() noexcept;

    class injection;  // one request, from its checks to its answer (injector.cc)

private:
    friend class injection;
    void finished(injection& done) noexcept;

    shard& _shard;
    std::vector<std::unique_ptr<injection>> _in_flight;
    std::vector<std::unique_ptr<injection>> _finished;
};

}  // namespace ringrelay::queue
