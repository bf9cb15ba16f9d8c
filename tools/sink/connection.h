// tools/sink/connection.h: one ringrelay-sink SMTP connection: the relay's inbound engine
// (queue/server_connection.h: stream, session, STARTTLS and kTLS, early-talker defence, held
// input, deadlines, shutdown) with the sink's commit instead of the spool, and the session's
// host (session_host: queue ids, dates, the per-IP rate check at MAIL).
//
// The commit: a finished message gets its verdict (faults.h) at once. With --delay-ms an
// io_uring timeout runs first; then, accepted with --save, it is written through io_uring
// (openat, writev, close, renameat: the file appears complete or not at all); only then is it
// counted and answered. Meanwhile the engine holds the client's input (parsed later, in
// order; RFC 2920). Without --save and --delay-ms a message is answered from inside
// begin_commit(), in the same pass over the receive buffer, with no copy.
//
// Lifecycle: created by the shard on accept -> start() -> ... -> retired by the shard at the
// end of the turn once nothing is pending (the engine waits for a pending answer). Owned by
// its shard; shard-local.
#pragma once
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>

#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/server_connection.h"
#include "tools/sink/faults.h"
#include "tools/sink/save_format.h"

namespace ringrelay::sink {

class shard;

class connection final : public queue::server_connection, public protocol::session_host {
public:
    connection(shard& owner, int fd, const sockaddr* peer);
    ~connection() override;

    // session_host
    std::uint64_t next_queue_id() noexcept override;
    std::string_view rfc5322_date() noexcept override;
    protocol::host_reply check_mail(const protocol::client_info& client) noexcept override;

private:
    enum class save_step : std::uint8_t { open, write, close, rename };

    // server_connection
    void begin_commit() noexcept override;
    void cancel_commit() noexcept override;

    void on_save(int res, std::uint32_t flags) noexcept;
    void on_delay(int res, std::uint32_t flags) noexcept;
    // The pending message is accepted and --save is on: it is written before its 250.
    [[nodiscard]] bool must_save() const noexcept;
    void start_save() noexcept;
    void submit_write() noexcept;
    void save_failed(const char* step, int res) noexcept;
    void arm_delay() noexcept;
    // Counts and answers the pending message per _verdict.
    void answer() noexcept;

    shard& _shard;
    core::operation<&connection::on_save> _save{*this};
    core::operation<&connection::on_delay> _delay{*this};
    verdict _verdict = verdict::accept;
    // --save of the pending message: the envelope block, names and iovecs stay untouched
    // while an operation uses them.
    save_step _save_step = save_step::open;
    bool _save_ok = false;
    bool _delay_armed = false;
    int _save_fd = -1;
    std::uint64_t _save_offset = 0;
    std::string _save_header;
    iovec _iov[2]{};
    char _temp_name[temp_name_size]{};
    char _final_name[saved_name_size]{};
    __kernel_timespec _delay_ts{};
};

}  // namespace ringrelay::sink
