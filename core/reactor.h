// core/reactor.h: one io_uring per shard thread, and the completion objects that its
// operations report to. Linux io_uring (5.19+ for multishot accept/recv and buffer rings,
// 5.18 for MSG_RING, 6.0 for SINGLE_ISSUER, 6.1 for DEFER_TASKRUN); features are probed
// once at start-up (probe_kernel_features) and the optional ones have fallbacks.
//
// Threading: a reactor is created, run and destroyed by one thread (its shard). The only
// thing other threads may do is post a wake-up to its ring fd through their own reactor
// (wake()).
#pragma once
#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

#include <liburing.h>

#include "core/fixed_buffer_pool.h"

namespace ringrelay::core {

// Receives the CQEs of the operations whose user_data is its address. Owned by whatever
// started the operation (a connection, the spool, a listener); it must outlive every
// operation in flight with its address.
class completion {
public:
    // res: cqe->res (negative errno on failure); flags: cqe->flags (IORING_CQE_F_MORE, buffer id).
    virtual void complete(int res, std::uint32_t flags) noexcept = 0;

protected:
    ~completion() = default;
};

// The one way an object takes its operations' completions: one member per operation slot
// (receive, send, connect, a timer...), whose address is the SQE's user_data, calling the
// object's handler for that slot. No allocation and no std::function per operation; the
// handler is bound at compile time. Usage, inside class T:
//     core::operation<&T::on_recv> _recv{*this};
template <auto Handler>
class operation;

template <typename T, void (T::*Handler)(int res, std::uint32_t flags) noexcept>
class operation<Handler> final : public completion {
public:
    explicit operation(T& owner) noexcept : _owner(&owner) {}
    operation(const operation&) = delete;
    operation& operator=(const operation&) = delete;
    void complete(int res, std::uint32_t flags) noexcept override { (_owner->*Handler)(res, flags); }

private:
    T* _owner;
};

// Called once at the end of every loop turn, after all completions of the turn: where
// batched work happens (group commit, batched sends, log flush).
class turn_hook {
public:
    virtual void on_turn_end() noexcept = 0;

protected:
    ~turn_hook() = default;
};

struct kernel_features {
    bool single_issuer = false;     // IORING_SETUP_SINGLE_ISSUER (6.0)
    bool defer_taskrun = false;     // IORING_SETUP_DEFER_TASKRUN (6.1)
    bool coop_taskrun = false;      // IORING_SETUP_COOP_TASKRUN (5.19)
    bool multishot_accept = false;  // IORING_OP_ACCEPT multishot (5.19)
    bool recv_multishot = false;    // IORING_RECV_MULTISHOT with provided buffers (6.0)
    bool buf_ring = false;          // IORING_REGISTER_PBUF_RING (5.19)
    bool msg_ring = false;          // IORING_OP_MSG_RING (5.18)
    bool send_zc = false;           // IORING_OP_SEND_ZC (6.0); not used yet
    std::string kernel_release;
};

// Probes the running kernel once (creates and destroys a scratch ring).
[[nodiscard]] kernel_features probe_kernel_features() noexcept;
// "kernel 6.1.0: single_issuer=yes defer_taskrun=yes ..." for the start-up log.
[[nodiscard]] std::string describe(const kernel_features& features);

// -res of a CQE as an error_code, in one place.
[[nodiscard]] inline std::error_code cqe_error(int res) noexcept {
    return {-res, std::system_category()};
}

class reactor {
public:
    reactor() = default;
    reactor(const reactor&) = delete;
    reactor& operator=(const reactor&) = delete;
    ~reactor();

    // Sets the ring up with `entries` SQEs (CQ four times that).
    [[nodiscard]] std::error_code init(unsigned entries, const kernel_features& features) noexcept;

    // An SQE whose user_data will be `c`. Never null: when the SQ is full, it submits first.
    [[nodiscard]] io_uring_sqe* sqe(completion* c) noexcept;
    // Like sqe(), but the CQE is ignored (user_data 0).
    [[nodiscard]] io_uring_sqe* sqe_ignored() noexcept;

    // Delivers `res` to `c` on the next loop turn, without the kernel (used by the test
    // storage backend to fail an operation, and for deferred work).
    void post(completion* c, int res) noexcept;

    void add_turn_hook(turn_hook* hook) { _hooks.push_back(hook); }
    void remove_turn_hook(turn_hook* hook) { std::erase(_hooks, hook); }

    // One loop turn: submit, wait up to `timeout_ms` for at least one CQE, dispatch every
    // CQE and posted result, then run the turn hooks. Returns false if the ring failed.
    bool run_once(int timeout_ms) noexcept;

    // Posts a CQE carrying `c` (user_data) and `res` to the ring whose fd is `target_ring_fd`
    // (IORING_OP_MSG_RING). Used for cross-shard wake-ups.
    void wake(int target_ring_fd, completion* c, int res) noexcept;

    [[nodiscard]] int ring_fd() const noexcept { return _ring.ring_fd; }
    [[nodiscard]] io_uring& ring() noexcept { return _ring; }
    [[nodiscard]] const kernel_features& features() const noexcept { return _features; }
    // The buffers registered with this ring for READ_FIXED (core/fixed_buffer_pool.h): empty
    // until its owner calls fixed_buffers().init(ring(), ...) after init(); the shard does,
    // for streamed body reads (queue/outbound.h). Outlives the ring's registration.
    [[nodiscard]] fixed_buffer_pool& fixed_buffers() noexcept { return _fixed; }

private:
    struct posted {
        completion* target;
        int res;
    };
    io_uring _ring{};
    bool _initialized = false;
    kernel_features _features;
    std::vector<turn_hook*> _hooks;
    std::vector<posted> _posted;
    std::vector<posted> _posted_swap;
    // Destroyed after the destructor's io_uring_queue_exit has ended its registration.
    fixed_buffer_pool _fixed;
};

}  // namespace ringrelay::core
