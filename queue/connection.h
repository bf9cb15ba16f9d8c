// queue/connection.h: one inbound SMTP connection on a shard: wires a socket (multishot recv
// from the shard's buffer ring, batched sends) to a protocol::server_session and the
// session's finished messages to the shard's spool.
//
// Lifecycle: created by the shard on accept -> start() -> completions ... -> close() ->
// retired by the shard at the end of the turn once no operation is in flight and no commit
// is pending. Owned by its shard; shard-local. Receive buffers are parsed in place and given
// back to the kernel before the completion returns; only input that cannot be processed yet
// (pipelined past a pending commit) is copied into `_held`.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "core/deadline_list.h"
#include "core/reactor.h"
#include "protocol/server_session.h"
#include "queue/spool.h"

namespace ringrelay::queue {

class shard;

class connection final : public core::deadline_entry, public commit_waiter {
public:
    connection(shard& owner, int fd, const sockaddr* peer, protocol::relay_trust trust);
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

    void on_recv(int res, std::uint32_t flags) noexcept;
    void on_send(int res, std::uint32_t flags) noexcept;
    void arm_recv() noexcept;
    void process(std::string_view data) noexcept;
    void early_talker(std::string_view data) noexcept;
    void after_session_step() noexcept;
    void close() noexcept;
    void log_reception() noexcept;
    void maybe_retire() noexcept;
    void abort_connection() noexcept;

    shard& _shard;
    const int _fd;
    std::string _peer;
    protocol::server_session _session;
    std::string _out;      // replies not yet handed to the kernel
    std::string _sending;  // replies the kernel is sending (untouched until completion)
    std::size_t _sent = 0;
    std::string _held;     // input received while a commit is pending
    std::uint64_t _received_us = 0;
    std::int64_t _progress_ms = 0;     // when the command deadline last restarted
    std::uint64_t _content_bytes = 0;  // message content read since then
    recv_op _recv;
    send_op _send;
    bool _recv_armed = false;
    bool _send_in_flight = false;
    bool _awaiting_commit = false;
    bool _closing = false;     // no more input will be processed
    bool _fd_closed = false;
    bool _peer_gone = false;
    bool _retired = false;
    bool _paused = false;      // receive cancelled for backpressure
    bool _greeted = false;     // the banner has left (its send completed)
};

}  // namespace ringrelay::queue
