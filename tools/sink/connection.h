// tools/sink/connection.h: one ringrelay-sink SMTP connection on a shard: wires a socket
// (multishot recv from the shard's buffer ring, batched sends) to a protocol::server_session,
// and is that session's host (session_host: queue ids, dates, the per-IP rate check at MAIL).
// The relay's queue/connection.h with the spool replaced by the sink's verdict.
//
// A finished message gets its verdict (faults.h) at once. With --delay-ms an io_uring
// timeout runs first; then, accepted with --save, it is written through io_uring (openat,
// writev, close, renameat: the file appears complete or not at all); only then is it counted
// and answered. While
// that is pending, input is held (parsed later, in order; RFC 2920); without --save and
// --delay-ms a message is answered in the same pass over the receive buffer, with no copy.
//
// STARTTLS (RFC 3207, with --tls): wired as in queue/connection.h: once the session accepted
// STARTTLS, its 220 leaves in plaintext, input that arrives before it has left (and input
// behind STARTTLS in the same read) is discarded, then a core::tls_session sits between the
// socket and the session (ciphertext -> plaintext -> session.feed(); replies -> records).
//
// Lifecycle: created by the shard on accept -> start() -> completions ... -> close() ->
// retired by the shard at the end of the turn once no operation is in flight. Owned by its
// shard; shard-local. Receive buffers are parsed in place and given back to the kernel
// before the completion returns; only input behind a pending message is copied (`_held`).
#pragma once
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <string>

#include "core/deadline_list.h"
#include "core/reactor.h"
#include "core/tls.h"
#include "protocol/server_session.h"
#include "tools/sink/faults.h"
#include "tools/sink/ip_limits.h"
#include "tools/sink/save_format.h"

namespace ringrelay::sink {

class shard;

class connection final : public core::deadline_entry, public protocol::session_host {
public:
    // slot: the client address's limits slot (counted by the shard), or null without limits.
    connection(shard& owner, int fd, const sockaddr* peer, ip_slot* slot);
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() override;

    void start() noexcept;
    // Sends what the session produced (called by the shard at the end of the turn).
    void flush() noexcept;
    // Re-arms the multishot receive after the buffer ring ran dry (-ENOBUFS).
    void rearm() noexcept;
    // The sink is stopping: 421 4.3.2 now unless a message is pending (then after its reply);
    // force: cut off whatever is left.
    void on_stop(bool force) noexcept;
    [[nodiscard]] bool retirable() const noexcept;

    void on_deadline() noexcept override;

    // session_host
    std::uint64_t next_queue_id() noexcept override;
    std::string_view rfc5322_date() noexcept override;
    protocol::host_reply check_mail(const protocol::client_info& client) noexcept override;

    std::size_t shard_slot = 0;  // index in the shard's connection list

private:
    using handler = void (connection::*)(int res, std::uint32_t flags) noexcept;
    struct op final : core::completion {
        connection* owner = nullptr;
        handler fn = nullptr;
        void complete(int res, std::uint32_t flags) noexcept override { (owner->*fn)(res, flags); }
    };
    enum class save_step : std::uint8_t { open, write, close, rename };

    // Where received bytes go (on_input).
    enum class tls_phase : std::uint8_t {
        off,           // plaintext SMTP
        ready_unsent,  // STARTTLS accepted; our 220 has not left yet: input is discarded
        handshaking,   // input is handshake ciphertext
        on,            // records both ways
    };

    void on_recv(int res, std::uint32_t flags) noexcept;
    void on_input(std::string_view data) noexcept;
    void on_ciphertext(std::string_view data) noexcept;
    void begin_starttls() noexcept;
    void tls_failed(std::string_view reason) noexcept;
    [[nodiscard]] bool tls_pending() const noexcept {
        return _tls_phase == tls_phase::ready_unsent || _tls_phase == tls_phase::handshaking;
    }
    void on_send(int res, std::uint32_t flags) noexcept;
    void on_save(int res, std::uint32_t flags) noexcept;
    void on_delay(int res, std::uint32_t flags) noexcept;
    void arm_recv() noexcept;
    void process(std::string_view data) noexcept;
    // Feeds `data` to the session, answering messages as they complete; stops early at a
    // message whose answer is pending. Returns the bytes consumed.
    std::size_t drive(std::string_view data) noexcept;
    // A message is ready: true if it was answered now, false if its answer is pending.
    bool begin_message() noexcept;
    // The pending message is accepted and --save is on: it is written before its 250.
    [[nodiscard]] bool must_save() const noexcept;
    void start_save() noexcept;
    void submit_write() noexcept;
    void save_failed(const char* step, int res) noexcept;
    void after_save() noexcept;
    void arm_delay() noexcept;
    // Counts and answers the pending message per _verdict.
    void answer() noexcept;
    // A pending answer went out: go on with the held input.
    void resume() noexcept;
    void after_session_step() noexcept;
    void close() noexcept;
    void abort_connection() noexcept;
    void maybe_retire() noexcept;

    shard& _shard;
    const int _fd;
    std::string _peer;
    ip_slot* const _slot;
    protocol::server_session _session;
    std::string _out;      // replies not yet handed to the kernel
    std::string _wire;     // bytes for the kernel: replies before TLS, TLS records after
    std::string _sending;  // bytes the kernel is sending (untouched until completion)
    std::optional<core::tls_session> _tls;
    std::string _plain;    // decrypted input of one receive (reused)
    tls_phase _tls_phase = tls_phase::off;
    bool _wire_has_ready = false;     // _wire ends with the 220 to STARTTLS
    bool _sending_has_ready = false;  // _sending does
    std::size_t _sent = 0;
    std::string _held;     // input received while an answer is pending
    op _recv;
    op _send;
    op _save;
    op _delay;
    verdict _verdict = verdict::accept;
    // --save of the pending message: the envelope block, names and iovecs stay untouched
    // while an operation uses them.
    save_step _save_step = save_step::open;
    bool _save_ok = false;
    int _save_fd = -1;
    std::uint64_t _save_offset = 0;
    std::string _save_header;
    iovec _iov[2]{};
    char _temp_name[temp_name_size]{};
    char _final_name[saved_name_size]{};
    __kernel_timespec _delay_ts{};
    bool _recv_armed = false;
    bool _send_in_flight = false;
    bool _save_in_flight = false;
    bool _delay_armed = false;
    bool _pending = false;     // a finished message awaits its answer
    bool _closing = false;     // no more input will be processed
    bool _fd_closed = false;
    bool _peer_gone = false;
    bool _retired = false;
    bool _paused = false;      // receive cancelled for backpressure
};

}  // namespace ringrelay::sink
