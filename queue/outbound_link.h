// queue/outbound_link.h: the seam between a destination pool (queue/destination_pool.h) and
// its connections (queue/outbound.h in the daemon, fakes in tests). Edges one way: the pool
// makes connections through a link_factory and drives them through outbound_link; a
// connection reports to its outbound_owner, and what it should do next comes back as the
// return value of the report (a job to run, or QUIT), which the connection carries out itself
// once the call has returned. So the owner never calls into a connection from inside that
// connection's report.
//
// Reports (Postfix's qmgr_deliver hears the same from its delivery agents):
//   connection_ready  the session is usable (greeted; TLS as the policy wants): first job?
//   job_done          one job is over: one outcome per recipient (message_outcome), next job?
//   connection_closed the connection is gone (or going): the facts the pool decides on
//   want_flush        output is waiting: send it at the end of the loop turn
//
// Threading: shard-local (the destination's owner shard).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/net.h"
#include "core/tls.h"
#include "protocol/client_types.h"
#include "queue/delivery_job.h"
#include "queue/throttle_signal.h"

namespace ringrelay::queue {

struct site;
struct egress_source;

// Where a connection goes and how it names it.
struct connection_target {
    core::endpoint address;
    std::string host;         // the MX host name, or the static route's ADDR:PORT
    std::string destination;  // the destination's name: the domain (MX) or ADDR:PORT (route)
    bool by_mx = false;       // SNI and the verified name: the host (MX) or the address (route)
    std::string site;         // the site's name (queue/site_name.h), for the log
    // The egress source whose address the connection binds (queue/egress.h; the relay's table,
    // which outlives every connection); null: the system chooses the address.
    const egress_source* source = nullptr;
};

// How a connection ended, as reported to its owner.
struct close_report {
    bool before_greeting = false;  // it never had a usable session
    protocol::close_reason reason = protocol::close_reason::none;
    // The TLS handshake failed on TLS itself (an alert, a bad answer, a local setup error), not
    // because the connection was lost during it.
    bool tls_protocol_failure = false;
    protocol::tls_use tls_use = protocol::tls_use::when_offered;  // what the connection was told
    next_hop_ref hop;  // host and address (tls empty)
    std::string why;   // before_greeting: why, for the jobs deferred because of it; else ""
    // before_greeting: where it failed (connect: no TCP connection; greeting: connected, no
    // usable session), and the peer's reply that ended it (code 0: none).
    attempt_stage stage = attempt_stage::command;
    std::uint16_t code = 0;
    std::string text;  // as protocol::parsed_reply::text
    // The connection failed on our side (no local address or port, no file descriptor, no
    // memory): says nothing about the receiver.
    bool local_failure = false;
};

// What a connection does after a report.
struct next_step {
    delivery_job* job = nullptr;  // run this job now (the connection was ready for one)
    bool quit = false;            // no more jobs on this connection: QUIT once idle
};

// A connection as its pool drives it.
class outbound_link {
public:
    virtual ~outbound_link() = default;

    virtual void start() noexcept = 0;  // connect; may report connection_closed at once
    // Gives the connection a job; it must be ready_for_job() (or have just reported ready).
    virtual void assign(delivery_job* job) noexcept = 0;
    virtual void finish() noexcept = 0;                 // no more jobs: QUIT once idle
    virtual void abort(const char* why) noexcept = 0;   // deadline passed or shutting down
    virtual void flush() noexcept = 0;                  // send what is waiting (turn end)

    [[nodiscard]] virtual bool ready_for_job() const noexcept = 0;
    [[nodiscard]] virtual bool connected() const noexcept = 0;  // has reported connection_ready
    [[nodiscard]] virtual bool closing() const noexcept = 0;
    [[nodiscard]] virtual bool busy() const noexcept = 0;       // a job is on it
    [[nodiscard]] virtual bool quitting() const noexcept = 0;   // finish() was called
    [[nodiscard]] virtual bool retirable() const noexcept = 0;  // closed, nothing in flight
    [[nodiscard]] virtual std::int64_t last_activity_ms() const noexcept = 0;
    [[nodiscard]] virtual std::uint32_t messages_sent() const noexcept = 0;

    site* pool_site = nullptr;        // set and read by the pool only
    std::int64_t pool_opened_ms = 0;  // when the pool opened it (its clock); the pool's only
};

// What a connection reports to (the destination pool).
class outbound_owner {
public:
    [[nodiscard]] virtual next_step connection_ready(outbound_link& c) noexcept = 0;
    // `hop`: the next hop as the log and DSNs name it, with the attempt's TLS.
    [[nodiscard]] virtual next_step job_done(outbound_link& c, delivery_job* job,
                                             const protocol::message_outcome& outcome,
                                             const next_hop_ref& hop) noexcept = 0;
    virtual void connection_closed(outbound_link& c, const close_report& report) noexcept = 0;
    virtual void want_flush(outbound_link& c) noexcept = 0;

protected:
    ~outbound_owner() = default;
};

// Makes the pool's connections.
class link_factory {
public:
    // `config.starttls` says whether to use STARTTLS; `verify`: check the peer's certificate
    // and name. Not started yet.
    [[nodiscard]] virtual std::unique_ptr<outbound_link> make(const connection_target& target,
                                                              const protocol::client_config& config,
                                                              core::tls_verify verify, outbound_owner& owner) = 0;

protected:
    ~link_factory() = default;
};

}  // namespace ringrelay::queue
