// queue/connection.h: one inbound SMTP connection on a shard: wires a socket (multishot recv
// from the shard's buffer ring, batched sends) to a protocol::server_session and the
// session's finished messages to the shard's spool. Under TLS (STARTTLS, RFC 3207, or an
// implicit-TLS listener, RFC 8314) a core::tls_session sits between the socket and the
// session: received ciphertext -> plaintext -> session.feed(); replies -> records -> send.
// All socket I/O stays on the shard's io_uring either way.
// kTLS (when the relay's start-up probe found the kernel takes the record layer): the
// handshake runs on the socket itself (OpenSSL's non-blocking reads and writes, readiness
// from io_uring POLL_ADD; no receive is armed meanwhile so that no handshake byte is taken
// from under OpenSSL), then the kernel encrypts and decrypts and the connection goes back to
// plain io_uring receives and sends of SMTP text.
//
// Lifecycle: created by the shard on accept -> start() -> completions ... -> close() ->
// retired by the shard at the end of the turn once no operation is in flight and no commit
// is pending. Owned by its shard; shard-local. Receive buffers are parsed in place and given
// back to the kernel before the completion returns; only input that cannot be processed yet
// (pipelined past a pending commit) is copied into `_held`.
// AUTH: a complete attempt goes to the relay's work pool as an auth_check (the KDF never runs
// on the shard thread); input waits in `_held` meanwhile. An attempt that finds no room (its
// address's checks in flight, its user paced, the pool's queue full) waits in the shard's
// auth_wait_queue (the connection is the node) until room appears, or 454 4.7.0 when the
// queue is full or the wait too long; closing leaves the queue. A failure is answered after
// a delay growing with the connection's failures (an io_uring timeout, nothing blocks), and
// counts against the client's address (auth_failures) and user name (user_failures).
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

#include "core/deadline_list.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "queue/auth.h"
#include "protocol/server_session.h"
#include "queue/spool.h"

namespace ringrelay::queue {

class shard;

// What a listener speaks first.
enum class listener_kind : std::uint8_t {
    plain,         // SMTP; STARTTLS when the shard has TLS
    implicit_tls,  // the TLS handshake, then SMTP (RFC 8314)
};

class connection final : public core::deadline_entry, public commit_waiter, public auth_waiter {
public:
    connection(shard& owner, int fd, const sockaddr* peer, protocol::relay_trust trust, listener_kind kind);
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() override;

    void start() noexcept;
    // Sends what the session produced (called by the shard at the end of the turn).
    void flush() noexcept;
    // Re-arms the multishot receive after the buffer ring ran dry (-ENOBUFS).
    void rearm() noexcept;
    // The server is stopping: say 421 now if idle, otherwise after the transaction.
    void on_stop(bool force) noexcept;
    // True when the shard may destroy it.
    [[nodiscard]] bool retirable() const noexcept;

    void on_deadline() noexcept override;
    void committed(protocol::commit_result result) noexcept override;
    // auth_waiter (the shard's auth_wait_queue)
    outcome retry_auth(std::int64_t now_ms) noexcept override;
    void auth_wait_over(std::int64_t waited_ms) noexcept override;
    void auth_wait_cancelled() noexcept override;

    std::size_t shard_slot = 0;    // index in the shard's connection list
    std::size_t address_slot = 0;  // its count in the shard's inbound_limits::per_ip

private:
    struct recv_op final : core::completion {
        connection* owner = nullptr;
        void complete(int res, std::uint32_t flags) noexcept override { owner->on_recv(res, flags); }
    };
    struct send_op final : core::completion {
        connection* owner = nullptr;
        void complete(int res, std::uint32_t flags) noexcept override { owner->on_send(res, flags); }
    };
    struct poll_op final : core::completion {
        connection* owner = nullptr;
        void complete(int res, std::uint32_t) noexcept override { owner->on_poll(res); }
    };
    struct auth_delay_op final : core::completion {
        connection* owner = nullptr;
        __kernel_timespec wait{};
        void complete(int, std::uint32_t) noexcept override { owner->on_auth_delay(); }
    };

    // Where received bytes go (see on_input).
    enum class tls_phase : std::uint8_t {
        off,          // plaintext SMTP
        ready_unsent, // STARTTLS accepted; our 220 has not left yet: input is discarded
        handshaking,  // input is handshake ciphertext
        on,           // records both ways
        kernel_handshaking,  // kTLS: OpenSSL handshakes on the socket; no receive armed
        kernel_on,           // kTLS: the kernel's record layer; the socket carries SMTP text
    };
    // Marks on the bytes of _wire / _sending: what their send completing means.
    enum wire_mark : std::uint8_t { banner_mark = 1, tls_ready_mark = 2 };

    void on_recv(int res, std::uint32_t flags) noexcept;
    void on_send(int res, std::uint32_t flags) noexcept;
    void arm_recv() noexcept;
    void on_input(std::string_view data) noexcept;
    // SMTP text from the client: to the session once the banner has left, else an early talker.
    void on_plaintext(std::string_view data) noexcept;
    void on_ciphertext(std::string_view data) noexcept;
    void begin_starttls() noexcept;
    void discard_before_handshake(std::size_t bytes) noexcept;
    void tls_failed(std::string_view reason) noexcept;
    [[nodiscard]] bool tls_pending() const noexcept {
        return _tls_phase == tls_phase::ready_unsent || _tls_phase == tls_phase::handshaking ||
               _tls_phase == tls_phase::kernel_handshaking;
    }
    // kTLS: while the handshake is OpenSSL's (or about to be), no receive may be armed.
    [[nodiscard]] bool socket_lent() const noexcept {
        return _kernel_tls && (_tls_phase == tls_phase::ready_unsent || _tls_phase == tls_phase::kernel_handshaking);
    }
    void kernel_handshake_step() noexcept;
    void on_poll(int res) noexcept;
    void process(std::string_view data) noexcept;
    void early_talker(std::string_view data) noexcept;
    void after_session_step() noexcept;
    void close() noexcept;
    void log_reception() noexcept;
    void maybe_retire() noexcept;
    void begin_auth() noexcept;
    // Why a prepared check did or did not start.
    enum class auth_start : std::uint8_t { started, answered, address_busy, user_paced, pool_full, behind_others };
    // Admission (address, then user), then the work pool; answers a blocked address itself.
    auth_start try_start_auth(std::int64_t now_ms) noexcept;
    // An attempt that waited and will not be checked: wipes the copy, answers 454 4.7.0.
    void refuse_auth_for_load() noexcept;
    static void auth_checked(void* self, auth_check& check) noexcept;
    void on_auth_delay() noexcept;
    void finish_auth(protocol::auth_result result) noexcept;
    void post_auth_result(protocol::auth_result result) noexcept;
    // Feeds input held while the session waited (commit, AUTH check), in order.
    void resume_input() noexcept;
    void abort_connection() noexcept;

    shard& _shard;
    const int _fd;
    std::string _peer;
    protocol::server_session _session;
    std::string _out;      // session replies (plaintext) not yet put on the wire
    std::string _wire;     // bytes for the kernel: replies before TLS, TLS records after
    std::string _sending;  // bytes the kernel is sending (untouched until completion)
    std::size_t _sent = 0;
    std::string _held;     // input received while a commit is pending
    std::optional<core::tls_session> _tls;
    std::string _plain;    // decrypted input of one receive (reused)
    std::string _tls_text; // "TLSv1.3 TLS_AES_256_GCM_SHA384" once established (delivery log)
    std::uint64_t _received_us = 0;
    std::int64_t _progress_ms = 0;     // when the command deadline last restarted
    std::uint64_t _content_bytes = 0;  // message content read since then
    recv_op _recv;
    send_op _send;
    auth_delay_op _auth_delay;
    poll_op _poll;
    bool _poll_armed = false;
    bool _kernel_tls = false;  // this connection's TLS, if any, is the kernel's (kTLS)
    std::unique_ptr<auth_check> _auth_check;  // made at the first AUTH attempt
    protocol::auth_result _auth_result = protocol::auth_result::failed;  // given after the delay
    std::size_t _auth_slot = 0;        // the client's slot in auth_failures
    std::size_t _auth_user_slot = 0;   // the attempt's user name's slot in user_failures
    bool _auth_malformed = false;      // the attempt fails without a check (no user counted)
    bool _auth_delay_armed = false;    // _auth_delay's completion is still to come
    bool _auth_delay_is_timer = false; // ... as an io_uring timeout (else a posted result)
    bool _recv_armed = false;
    bool _send_in_flight = false;
    bool _awaiting_commit = false;
    bool _awaiting_auth = false;     // an AUTH check or its failure delay is in flight
    bool _closing = false;     // no more input will be processed
    bool _fd_closed = false;
    bool _peer_gone = false;
    bool _retired = false;
    bool _paused = false;      // receive cancelled for backpressure
    bool _greeted = false;     // the banner has left (its send completed)
    bool _banner_queued = false;  // the banner is in _out
    const listener_kind _kind;
    tls_phase _tls_phase = tls_phase::off;
    std::uint8_t _wire_marks = 0;
    std::uint8_t _sending_marks = 0;
};

}  // namespace ringrelay::queue
