// queue/server_connection.h: the inbound SMTP engine: one accepted connection, a core::stream
// (buffer-ring receive, batched replies, TLS or kTLS underneath) wired to a
// protocol::server_session. What a finished message becomes (the relay's spool commit,
// ringrelay-sink's verdict, save and delay) and how AUTH credentials are checked (the
// relay's work pool) are the subclass's: begin_commit() and begin_auth(), answered with
// commit_done() and auth_done(). Everything else is here, once, for both: the banner, input
// parsed in place and copied only while the session waits (`_held`, RFC 2920 pipelining
// behind a pending commit or AUTH check; over 256 KiB the receive is paused), STARTTLS (RFC
// 3207) and implicit TLS (RFC 8314) in user space or the kernel, the early-talker defence,
// the per-request command deadline, shutdown, and retirement.
//
// A commit answered from inside begin_commit() (the sink with no --save and no --delay-ms)
// lets the session go on with the rest of the same receive buffer: no copy, no extra turn.
//
// Early talker: bytes that arrive before the send carrying the banner completed mean the
// client did not wait for the greeting (RFC 5321 §3.1), which a real SMTP client always does
// (bots that blast a canned dialogue do not). Nothing it sent is executed; it gets
// 521 5.5.1 after the banner and is closed (Postfix's postscreen PREGREET with "drop"). When
// those bytes start with a PROXY protocol signature (a header from an address not in
// --proxy-protocol-from: a balancer sends it before the greeting), the reply is 421 4.7.0
// instead (issue 19); the session answers a PROXY line after the greeting the same way.
//
// The command deadline runs per request, not per read (Postfix's smtpd_per_request_deadline):
// it restarts when the session makes progress: a reply (a whole command was read), a message
// completed, or message content arriving at the host's minimum data rate on average since the
// last restart. So a client dribbling a byte a second is cut off after the timeout however
// long it keeps dribbling, while a big message on a slow but real link is not. It does not run
// while the host works (a commit or an AUTH check pending); it bounds the TLS handshake, and
// gives the last reply of a closing connection one more period to leave.
//
// Lifecycle: created by its shard on accept -> start() -> stream and host completions ... ->
// close -> retired (server_host::retire) once the stream has finished and no commit or AUTH
// check is pending; the shard destroys it at the end of the turn. Owned by its shard;
// shard-local.
// SECURITY: every byte from the stream is the client's. Input held while the session waits
// is bounded (the receive is paused past 256 KiB), so are replies queued behind a client that
// does not read them (1 MiB, then it is cut off); the session bounds lines and messages.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "core/buffer_ring.h"
#include "core/deadline_list.h"
#include "core/reactor.h"
#include "core/stream.h"
#include "core/tls.h"
#include "protocol/server_session.h"

namespace ringrelay::queue {

class server_connection;

// What a listener speaks first.
enum class listener_kind : std::uint8_t {
    plain,         // SMTP; STARTTLS when the host offers TLS
    implicit_tls,  // the TLS handshake, then SMTP (RFC 8314)
};

// What the engine counts for its host.
enum class server_event : std::uint8_t {
    tls_handshake,        // completed (STARTTLS and implicit)
    tls_failure,          // a handshake or record failed, or a handshake timed out
    tls_discarded_bytes,  // sent after STARTTLS, before the handshake: dropped unread
    early_talker,         // spoke before the greeting: 521 5.5.1
    input_bytes,          // SMTP bytes received (decrypted under TLS)
};

// The engine's operator reports (stderr); the host limits them (one per kind per second).
enum class server_report : std::uint8_t { early_talker, tls_failure, tls_discarded };

// Settings the engine takes from its host. Fixed for the host's lifetime.
struct server_settings {
    // Message content at this rate (bytes/s, averaged since the last progress) counts as
    // progress for the command deadline; 0: only replies and finished messages do.
    std::uint32_t min_data_rate = 500;
    // A message buffer up to this size is kept for the next message; 0: freed whenever the
    // session is idle (memory per idle connection over allocations per message).
    std::size_t keep_body_capacity = 0;
    // Named in the report of a handshake that did not complete in time.
    std::string_view timeout_flag = "--command-timeout";
};

// Per shard: what the engine needs from the shard that owns its connections. Outlives them.
class server_host {
public:
    // The shard's reactor, buffer ring, stream batch and command deadlines.
    [[nodiscard]] virtual core::stream_services stream_services() noexcept = 0;
    [[nodiscard]] virtual const protocol::server_config& server_config() const noexcept = 0;
    [[nodiscard]] virtual const server_settings& settings() const noexcept = 0;
    // The server TLS context; null without TLS.
    [[nodiscard]] virtual core::tls_context* tls_context() noexcept = 0;
    // Handshakes run on the socket and the kernel takes the record layer (kTLS).
    [[nodiscard]] virtual bool kernel_tls() const noexcept = 0;
    // The server is stopping: idle sessions get 421 4.3.2 once out of their transaction.
    [[nodiscard]] virtual bool stopping() const noexcept = 0;
    virtual void count(server_event event, std::uint64_t n = 1) noexcept = 0;
    // Whether a report of this kind may be written now (the engine builds its text only then).
    [[nodiscard]] virtual bool may_report(server_report kind) noexcept = 0;
    // `text` names the client and what happened; the host says it (stderr).
    virtual void write_report(server_report kind, std::string_view text) noexcept = 0;
    // `c` may be destroyed at the end of the turn.
    virtual void retire(server_connection& c) noexcept = 0;

protected:
    ~server_host() = default;
};

class server_connection : public core::stream_owner {
public:
    // fd: the accepted socket (the stream's from now on). client: its address (the one a PROXY
    // header gave, and the balancer's), trust. session_host: queue ids, dates and the MAIL/AUTH
    // checks for the session (the relay's shard, or the sink's connection).
    server_connection(server_host& host, int fd, protocol::client_info client, listener_kind kind,
                      protocol::session_host& session_host);
    server_connection(const server_connection&) = delete;
    server_connection& operator=(const server_connection&) = delete;
    virtual ~server_connection();

    // The banner (or, on an implicit-TLS listener, the handshake first) and the first receive.
    void start() noexcept;
    // The server is stopping: 421 4.3.2 now if idle, otherwise after the transaction. force
    // (the grace period is over): now, and a connection whose last reply is not taken is cut
    // off; a pending commit is offered cancel_commit() and still awaited.
    void on_stop(bool force) noexcept;

    [[nodiscard]] const std::string& peer() const noexcept { return _peer; }
    // The load balancer's address when peer() came from its PROXY header; empty otherwise.
    [[nodiscard]] const std::string& proxy() const noexcept { return _proxy; }
    [[nodiscard]] bool retired() const noexcept { return _retired; }

    std::size_t shard_slot = 0;    // index in the shard's connection list
    std::size_t address_slot = 0;  // its count in the per-address limits

protected:
    // The session has a finished message (session().message_ready(): its envelope and
    // message() stay unchanged until the answer). Store it, then answer with commit_done()
    // or commit_dropped(), from inside this call or later.
    virtual void begin_commit() noexcept = 0;
    // A forced stop while the commit is pending: end it sooner if it can be (the sink's
    // delay); the answer is still awaited. Default: nothing (a spool commit cannot be cut).
    virtual void cancel_commit() noexcept {}
    // The session has complete AUTH credentials (session().pending_auth()): check them and
    // answer with auth_done() or answer_auth_later(), never from inside this call (a
    // pipelined run of AUTH lines must not recurse). Default: 454 4.7.0 on the next turn.
    virtual void begin_auth() noexcept;
    // The connection is closing: no more input. A subclass drops what waits for input
    // (the relay: an AUTH check waiting for room).
    virtual void on_closing() noexcept {}

    // Answers for the pending message; the session replies (unless the peer is gone) and
    // held input goes on.
    void commit_done(protocol::commit_result result) noexcept;
    void commit_done(protocol::host_reply refusal) noexcept;
    // No reply to the end of data: replies already given go out, then the connection closes
    // (the sink's injected disconnect, a delay cut short by the stop).
    void commit_dropped() noexcept;
    // Answers the pending AUTH attempt now, or after `delay_ms` (0: on the next loop turn),
    // through an io_uring timeout or a posted result: nothing blocks.
    void auth_done(protocol::auth_result result) noexcept;
    void answer_auth_later(protocol::auth_result result, std::uint32_t delay_ms) noexcept;

    [[nodiscard]] server_host& host() noexcept { return _host; }
    [[nodiscard]] protocol::server_session& session() noexcept { return _session; }
    [[nodiscard]] const protocol::server_session& session() const noexcept { return _session; }
    // "TLSv1.3 TLS_AES_256_GCM_SHA384" (" kTLS") once TLS is up; "" in plaintext.
    [[nodiscard]] const std::string& tls_text() const noexcept { return _tls_text; }
    [[nodiscard]] bool tls_active() const noexcept { return _stream.tls_active(); }
    [[nodiscard]] bool closing() const noexcept { return _closing; }
    // No reply can reach the client any more.
    [[nodiscard]] bool peer_gone() const noexcept { return _stream.peer_gone(); }
    [[nodiscard]] bool awaiting_commit() const noexcept { return _awaiting_commit; }
    // Closes (the last replies leave first).
    void close() noexcept;
    // Cuts the client off: replies dropped, socket shut down, closed.
    void abort() noexcept;
    // Retires the connection if nothing is pending any more.
    void maybe_retire() noexcept;

private:
    // core::stream_owner
    void on_stream_data(std::string_view data) noexcept override;
    void on_stream_end(core::stream_end why, std::string_view detail) noexcept override;
    void on_stream_finished() noexcept override { maybe_retire(); }
    void on_stream_tls_ready() noexcept override;
    void on_stream_sent(std::uint8_t marks) noexcept override;
    void on_stream_discarded(std::size_t bytes) noexcept override;
    void on_stream_timeout() noexcept override;

    // Marks on the stream's bytes.
    static constexpr std::uint8_t banner_mark = 1;

    void process(std::string_view data) noexcept;
    // Feeds `data` as far as the session goes; starts commits (one answered at once lets it
    // go on). Returns the bytes consumed.
    std::size_t feed(std::string_view data) noexcept;
    void note_progress(std::size_t consumed, bool replied) noexcept;
    void start_commit() noexcept;
    void answered(std::size_t message_size) noexcept;
    void after_session_step() noexcept;
    // Feeds input held while the session waited (commit, AUTH check), in order.
    void resume_input() noexcept;
    void begin_starttls() noexcept;
    void early_talker(std::string_view data) noexcept;
    void tls_failed(std::string_view reason) noexcept;
    void restart_deadline() noexcept;
    void on_auth_answer(int res, std::uint32_t flags) noexcept;

    server_host& _host;
    core::reactor& _reactor;
    const std::string _peer;
    const std::string _proxy;
    protocol::server_session _session;
    core::stream _stream;
    std::string _held;      // input received while the session waits
    std::string _tls_text;
    std::int64_t _progress_ms = 0;     // when the command deadline last restarted
    std::uint64_t _content_bytes = 0;  // message content read since then
    core::operation<&server_connection::on_auth_answer> _auth_answer{*this};
    __kernel_timespec _auth_wait{};
    protocol::auth_result _auth_result = protocol::auth_result::failed;
    const listener_kind _kind;
    bool _greeted = false;           // the banner has left (its send completed)
    bool _awaiting_commit = false;
    bool _awaiting_auth = false;     // a check, or its answer, is pending
    bool _auth_answer_armed = false; // _auth_answer's completion is still to come
    bool _auth_answer_is_timer = false;
    bool _feeding = false;           // inside feed(): an answer lets it go on instead of resuming
    bool _closing = false;           // no more input will be processed
    bool _retired = false;
};

}  // namespace ringrelay::queue
