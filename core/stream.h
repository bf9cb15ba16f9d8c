// core/stream.h: one connection's transport on a shard's io_uring, the same for servers and
// clients (OpenSMTPD's single `struct io` under both its SMTP server and client sessions;
// seastar's connected_socket with tls::wrap_server/wrap_client): multishot receive from the
// shard's provided-buffer ring, a send queue batched per loop turn with marks on its bytes,
// TLS underneath (OpenSSL through memory BIOs, core::tls_session, or the kernel's record
// layer after a handshake on the socket, kTLS), a deadline, pause/resume for backpressure,
// and close/retire. Knows nothing of SMTP: it reports to its owner through stream_owner.
//
// Receive: one multishot receive per stream takes a buffer from the ring only when bytes
// arrive; the owner sees them (decrypted under TLS) in on_stream_data() and the buffer goes
// back to the kernel before the completion returns, so the owner parses in place and copies
// only what it must keep. -ENOBUFS (the ring ran dry) re-arms at the end of the loop turn:
// see on_recv().
// Send: the owner appends to out() during the turn; at the turn's end (stream_batch::run) the
// stream seals it under TLS and hands everything queued to the kernel in one send. A mark
// (mark()) rides on the bytes queued so far; once the send carrying them completes the owner
// hears on_stream_sent(marks): "the banner has left", "the 220 to STARTTLS has left".
// Bytes handed to the kernel are untouched until their completion.
// TLS: start_tls_server() (implicit TLS now, or STARTTLS: after the queued 220 has left, with
// input received before that discarded, never read: CVE-2011-0411) or start_tls_client()
// (the ClientHello now). Under kTLS the handshake is OpenSSL's own non-blocking reads and
// writes on the socket, with readiness from io_uring POLL_ADD and no receive of ours armed
// meanwhile; afterwards the socket carries plaintext and plain receives and sends resume.
//
// Lifecycle: constructed by its owner -> adopt(fd) (an accepted socket, or one end of a
// socketpair in tests) or connect() -> start_receiving() -> ... -> close() (graceful: queued
// output leaves, then close_notify under TLS), abort() or an end the stream reports ->
// finished: nothing in flight, socket closed, on_stream_finished() -> the owner retires it
// at the end of the turn (or connect()s it again). The owner must not destroy a stream with
// an operation in flight; finished() says when it may.
// Ownership: one shard thread; the reactor, buffer ring, batch and deadline list are the
// shard's and outlive the stream.
// SECURITY: every received byte is the peer's; the stream only moves it (TLS records are
// parsed by OpenSSL). Output queued behind a peer that does not read is bounded by the owner
// (unsent(), sending()).
#pragma once
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "core/buffer_ring.h"
#include "core/deadline_list.h"
#include "core/net.h"
#include "core/reactor.h"
#include "core/tls.h"

namespace ringrelay::core {

class stream;

// Why a stream ended by itself (reported once through on_stream_end; never for the owner's
// own close() or abort()).
enum class stream_end : std::uint8_t {
    peer_closed,     // a receive returned 0: the peer closed its side
    socket_error,    // a receive or send failed; the peer is gone
    connect_failed,  // connect() failed
    tls_closed,      // the peer sent close_notify (after any data in the same read)
    tls_failed,      // the handshake failed (an alert may be queued to send)
    tls_record,      // a record after the handshake was bad
};

// What the stream tells its owner. Calls come from the stream's completions and from the
// turn's end, on the shard thread; the owner may call any stream method from them. A stream
// never calls on_stream_finished() from inside a call its owner made.
class stream_owner {
public:
    // Plaintext input (decrypted under TLS). `data` is valid during the call only.
    virtual void on_stream_data(std::string_view data) noexcept = 0;
    // The stream ended by itself; `detail` names the cause for a log line (valid during the
    // call). After peer_closed and socket_error nothing more can be sent. The stream closes
    // itself after the call if the owner did not.
    virtual void on_stream_end(stream_end why, std::string_view detail) noexcept = 0;
    // Closed, nothing in flight, socket closed: the owner may destroy the stream (at the end
    // of the turn) or connect() it again.
    virtual void on_stream_finished() noexcept = 0;
    // connect() succeeded.
    virtual void on_stream_connected() noexcept {}
    // The TLS handshake completed (the stream's tls() names protocol and cipher).
    virtual void on_stream_tls_ready() noexcept {}
    // A send completed whole; `marks` are those of its bytes (0: none).
    virtual void on_stream_sent(std::uint8_t marks) noexcept { (void)marks; }
    // Part of a send completed; the rest is on its way (a long upload is progress).
    virtual void on_stream_progress() noexcept {}
    // Bytes that arrived while TLS was being set up and were dropped unread.
    virtual void on_stream_discarded(std::size_t bytes) noexcept { (void)bytes; }
    // The end of the loop turn, before the stream sends what is queued: the owner's last
    // chance this turn to add to out().
    virtual void on_stream_flush() noexcept {}
    // The stream's deadline (touch_deadline) passed.
    virtual void on_stream_timeout() noexcept {}

protected:
    ~stream_owner() = default;
};

// Per shard: the streams that want their receive re-armed or their output sent at the end of
// the loop turn. The shard calls run() from its turn hook. Shard-local.
class stream_batch {
public:
    stream_batch() = default;
    stream_batch(const stream_batch&) = delete;
    stream_batch& operator=(const stream_batch&) = delete;

    // Re-arms receives after -ENOBUFS, then sends every stream's queued output (one send
    // each); streams asking again during the pass are served in the same pass.
    void run() noexcept;
    [[nodiscard]] bool empty() const noexcept { return _flush.empty() && _rearm.empty(); }

private:
    friend class stream;
    void want_flush(stream& s) noexcept { _flush.push_back(&s); }
    void want_rearm(stream& s) noexcept { _rearm.push_back(&s); }
    void forget(stream& s) noexcept;

    std::vector<stream*> _flush;
    std::vector<stream*> _rearm;
    std::vector<stream*> _rearm_swap;
};

// How a server's TLS starts (start_tls_server).
enum class tls_start : std::uint8_t {
    now,           // implicit TLS (RFC 8314): the next bytes are the ClientHello
    after_output,  // STARTTLS (RFC 3207): out() (the 220) leaves in plaintext first
};

// Where the record layer runs.
enum class tls_engine : std::uint8_t {
    memory,  // OpenSSL through memory BIOs; the stream moves ciphertext
    kernel,  // kTLS: handshake on the socket, then the kernel encrypts and decrypts
};

// The shard's parts every stream uses. Outlive the streams.
struct stream_services {
    reactor& ring;
    buffer_ring& buffers;
    stream_batch& batch;
    deadline_list* deadlines = nullptr;  // null: touch_deadline() is not used
};

class stream final {
public:
    // keep_send_buffer: a send buffer grown past this is freed after its send (an idle
    // connection keeps no large buffer); clients sending messages keep theirs.
    stream(const stream_services& services, stream_owner& owner, std::size_t keep_send_buffer = 4096) noexcept;
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    ~stream();  // closes the socket if still open; nothing may be in flight

    // Server side: takes a connected socket (non-blocking; closed by the stream). Sets
    // TCP_NODELAY (replies are small and must not wait for Nagle).
    void adopt(int fd) noexcept;
    // Client side: a new non-blocking socket, io_uring connect; on_stream_connected() or
    // on_stream_end(connect_failed) follows. `from` (null: the system chooses): the local
    // address (its port 0: the kernel picks one) bound before the connect, as an egress source
    // (issue 17); the caller's, read during the call only. An error (no socket, or `from` could
    // not be bound: bind_failed()) means nothing is in flight; close() then finishes the
    // stream. A finished stream may connect again.
    [[nodiscard]] std::expected<void, std::error_code> connect(const endpoint& to,
                                                               const endpoint* from = nullptr) noexcept;
    // The last connect() failed binding `from` (the socket was made).
    [[nodiscard]] bool bind_failed() const noexcept { return _bind_failed; }
    // Keeps a multishot receive armed from now on (unless paused, closing, or the socket is
    // lent to a kTLS handshake).
    void start_receiving() noexcept;

    // Plaintext to send: append during the turn; sealed and sent at its end.
    [[nodiscard]] std::string& out() noexcept { return _out; }
    // The bytes in out() now carry `marks` (bits below 0x80; the owner's meaning).
    void mark(std::uint8_t marks) noexcept { _out_marks |= marks; }
    // Send what is queued at the end of this turn.
    void want_flush() noexcept;
    // Bytes queued and not yet handed to the kernel; whether a send is in flight.
    [[nodiscard]] std::size_t unsent() const noexcept { return _out.size() + _wire.size(); }
    [[nodiscard]] bool sending() const noexcept { return _send_in_flight; }

    // Server TLS; a setup error is returned (nothing changed). With tls_start::after_output
    // input is discarded (on_stream_discarded) until the queued output has left.
    [[nodiscard]] std::expected<void, tls_error> start_tls_server(const tls_context& context, tls_start when,
                                                                  tls_engine engine);
    // Client TLS (after the peer's 220 to STARTTLS): the ClientHello leaves at the turn's end.
    // `server_name` is SNI and the name verified; `resume` may offer a saved session.
    [[nodiscard]] std::expected<void, tls_error> start_tls_client(const tls_context& context,
                                                                  std::string_view server_name,
                                                                  const tls_saved_session* resume);
    // The TLS session, once started (protocol, cipher, saved session...); else null.
    [[nodiscard]] const tls_session* tls() const noexcept { return _tls ? &*_tls : nullptr; }
    // TLS started and not yet established (or its start's output not yet sent).
    [[nodiscard]] bool tls_pending() const noexcept;
    [[nodiscard]] bool tls_active() const noexcept {
        return _tls_phase == tls_phase::on || _tls_phase == tls_phase::kernel_on;
    }
    [[nodiscard]] bool kernel_tls() const noexcept { return _tls_engine == tls_engine::kernel && _tls.has_value(); }

    // Backpressure: stop taking input (the receive is cancelled) / take it again.
    void pause_receive() noexcept;
    void resume_receive() noexcept;
    [[nodiscard]] bool paused() const noexcept { return _paused; }

    // The deadline in the services' list: (re)started at now + its duration, or stopped.
    // When it passes the owner hears on_stream_timeout().
    void touch_deadline(std::int64_t now_ms) noexcept;
    void stop_deadline() noexcept { _deadline.unlink(); }
    [[nodiscard]] bool deadline_running() const noexcept { return _deadline.linked(); }

    // No more input; what is queued leaves (followed by close_notify under TLS; plaintext
    // still queued during a handshake is dropped), then the socket closes. Idempotent.
    void close() noexcept;
    // The peer is gone or must be cut off: queued output is dropped, then close().
    void abandon() noexcept;
    // abandon() and shutdown(SHUT_RDWR): also completes a send stuck on a full window.
    void abort() noexcept;
    [[nodiscard]] bool closing() const noexcept { return _closing; }
    // Nothing can be sent any more (the peer closed, a socket error, abandon()).
    [[nodiscard]] bool peer_gone() const noexcept { return _peer_gone; }
    // Closed, nothing in flight, socket closed.
    [[nodiscard]] bool finished() const noexcept { return _finished; }
    [[nodiscard]] int fd() const noexcept { return _fd; }

private:
    friend class stream_batch;
    // Where received bytes go.
    enum class tls_phase : std::uint8_t {
        off,                 // plaintext
        after_output,        // server STARTTLS: the 220 has not left yet; input is discarded
        handshaking,         // memory BIOs: input is handshake ciphertext
        on,                  // memory BIOs: records both ways
        kernel_handshaking,  // kTLS: OpenSSL handshakes on the socket; no receive armed
        kernel_on,           // kTLS: the socket carries plaintext
    };
    // Reserved mark: the send carrying it ends tls_phase::after_output.
    static constexpr std::uint8_t tls_switch_mark = 0x80;

    struct deadline_hook final : deadline_entry {
        explicit deadline_hook(stream& s) noexcept : owner(&s) {}
        void on_deadline() noexcept override { owner->_owner.on_stream_timeout(); }
        stream* owner;
    };

    void on_recv(int res, std::uint32_t flags) noexcept;
    void on_send(int res, std::uint32_t flags) noexcept;
    void on_connect(int res, std::uint32_t flags) noexcept;
    void on_poll(int res, std::uint32_t flags) noexcept;
    [[nodiscard]] bool may_receive() const noexcept;
    // kTLS: while the handshake is OpenSSL's (or about to be), no receive of ours may be armed.
    [[nodiscard]] bool socket_lent() const noexcept {
        return _tls_engine == tls_engine::kernel &&
               (_tls_phase == tls_phase::after_output || _tls_phase == tls_phase::kernel_handshaking);
    }
    void arm_receive() noexcept;
    void rearm() noexcept;
    void input(std::string_view data) noexcept;
    void decrypt(std::string_view data) noexcept;
    void kernel_handshake_step() noexcept;
    void flush() noexcept;
    // Seals out() and starts a send of everything queued, if there is anything and nothing
    // is in flight; else sees whether the stream has finished.
    void send_queued() noexcept;
    void end(stream_end why, std::string_view detail) noexcept;
    void check_finished() noexcept;
    void reset() noexcept;

    // Fixed after construction.
    stream_services _services;
    stream_owner& _owner;
    const std::size_t _keep_send;

    int _fd = -1;
    endpoint _peer;  // connect(): read by the kernel until the connect completes
    operation<&stream::on_recv> _recv{*this};
    operation<&stream::on_send> _send{*this};
    operation<&stream::on_connect> _connect{*this};
    operation<&stream::on_poll> _poll{*this};
    deadline_hook _deadline{*this};
    std::string _out;      // plaintext from the owner, not yet sealed
    std::string _wire;     // bytes for the kernel: plaintext, or TLS records
    std::string _sending;  // bytes the kernel is sending (untouched until completion)
    std::size_t _sent = 0;
    std::string _plain;    // decrypted input of one receive (reused)
    std::optional<tls_session> _tls;
    tls_phase _tls_phase = tls_phase::off;
    tls_engine _tls_engine = tls_engine::memory;
    std::uint8_t _out_marks = 0;
    std::uint8_t _wire_marks = 0;
    std::uint8_t _sending_marks = 0;
    bool _connected = false;     // adopted, or connect() completed
    bool _receiving = false;     // start_receiving() was called
    bool _recv_armed = false;
    bool _send_in_flight = false;
    bool _connect_in_flight = false;
    bool _bind_failed = false;  // the last connect()'s bind of its source address failed
    bool _poll_armed = false;
    bool _paused = false;
    bool _closing = false;
    bool _peer_gone = false;
    bool _finished = false;
    bool _flush_queued = false;  // in the batch's flush list
    bool _rearm_queued = false;  // in the batch's re-arm list
};

}  // namespace ringrelay::core
