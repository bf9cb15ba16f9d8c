// core/reactor.cc: the per-shard io_uring loop. See reactor.h.
#include "core/reactor.h"

#include <sys/utsname.h>

#include <cstring>

#include "core/invariant.h"

namespace ringrelay::core {

namespace {

bool try_setup(unsigned flags) noexcept {
    io_uring ring{};
    io_uring_params params{};
    params.flags = flags;
    if (io_uring_queue_init_params(4, &ring, &params) < 0) return false;
    io_uring_queue_exit(&ring);
    return true;
}

}  // namespace

kernel_features probe_kernel_features() noexcept {
    kernel_features f;
    utsname u{};
    if (uname(&u) == 0) f.kernel_release = u.release;
    f.coop_taskrun = try_setup(IORING_SETUP_COOP_TASKRUN);
    f.single_issuer = try_setup(IORING_SETUP_SINGLE_ISSUER);
    f.defer_taskrun = f.single_issuer && try_setup(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    io_uring_probe* probe = io_uring_get_probe();
    if (probe != nullptr) {
        f.msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING) != 0;
        f.send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC) != 0;
        io_uring_free_probe(probe);
    }
    // Buffer rings and the multishot flags have no opcode of their own: register a tiny
    // buffer ring to learn whether the kernel has them (5.19); recv multishot came in 6.0,
    // which is also when SEND_ZC appeared, so its presence stands in for the version.
    io_uring ring{};
    if (io_uring_queue_init(4, &ring, 0) == 0) {
        void* mem = nullptr;
        if (posix_memalign(&mem, 4096, 4096) == 0) {
            io_uring_buf_reg reg{};
            reg.ring_addr = reinterpret_cast<std::uint64_t>(mem);
            reg.ring_entries = 1;
            reg.bgid = 0;
            if (io_uring_register_buf_ring(&ring, &reg, 0) == 0) {
                f.buf_ring = true;
                (void)io_uring_unregister_buf_ring(&ring, 0);
            }
            free(mem);
        }
        io_uring_queue_exit(&ring);
    }
    f.multishot_accept = f.buf_ring;
    f.recv_multishot = f.buf_ring && f.send_zc;
    return f;
}

std::string describe(const kernel_features& f) {
    auto yn = [](bool b) { return b ? "yes" : "no"; };
    std::string s = "kernel " + f.kernel_release + ": io_uring";
    s += std::string(" single_issuer=") + yn(f.single_issuer);
    s += std::string(" defer_taskrun=") + yn(f.defer_taskrun);
    s += std::string(" coop_taskrun=") + yn(f.coop_taskrun);
    s += std::string(" multishot_accept=") + yn(f.multishot_accept);
    s += std::string(" recv_multishot=") + yn(f.recv_multishot);
    s += std::string(" buf_ring=") + yn(f.buf_ring);
    s += std::string(" msg_ring=") + yn(f.msg_ring);
    s += std::string(" send_zc=") + yn(f.send_zc);
    return s;
}

reactor::~reactor() {
    if (_initialized) io_uring_queue_exit(&_ring);
}

std::error_code reactor::init(unsigned entries, const kernel_features& features) noexcept {
    _features = features;
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 4;
    if (features.single_issuer) params.flags |= IORING_SETUP_SINGLE_ISSUER;
    if (features.defer_taskrun) {
        params.flags |= IORING_SETUP_DEFER_TASKRUN;
    } else if (features.coop_taskrun) {
        params.flags |= IORING_SETUP_COOP_TASKRUN;
    }
    const int rc = io_uring_queue_init_params(entries, &_ring, &params);
    if (rc < 0) return cqe_error(rc);
    _initialized = true;
    return {};
}

io_uring_sqe* reactor::sqe(completion* c) noexcept {
    io_uring_sqe* s = io_uring_get_sqe(&_ring);
    while (s == nullptr) {
        (void)io_uring_submit(&_ring);
        s = io_uring_get_sqe(&_ring);
    }
    io_uring_sqe_set_data(s, c);
    return s;
}

io_uring_sqe* reactor::sqe_ignored() noexcept { return sqe(nullptr); }

void reactor::post(completion* c, int res) noexcept { _posted.push_back({c, res}); }

void reactor::wake(int target_ring_fd, completion* c, int res) noexcept {
    io_uring_sqe* s = sqe_ignored();
    io_uring_prep_msg_ring(s, target_ring_fd, static_cast<unsigned>(res),
                           reinterpret_cast<std::uint64_t>(c), 0);
    // The CQE on our own ring (the send result) is skipped when it succeeds.
    s->flags |= IOSQE_CQE_SKIP_SUCCESS;
}

bool reactor::run_once(int timeout_ms) noexcept {
    int rc;
    if (!_posted.empty()) {
        rc = io_uring_submit(&_ring);
    } else if (timeout_ms < 0) {
        rc = io_uring_submit_and_wait(&_ring, 1);
    } else {
        __kernel_timespec ts{};
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1000000LL;
        io_uring_cqe* cqe = nullptr;
        rc = io_uring_submit_and_wait_timeout(&_ring, &cqe, 1, &ts, nullptr);
        if (rc == -ETIME) rc = 0;
    }
    if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -EAGAIN && rc != -ETIME) return false;

    // Dispatch in batches; a completion may submit new SQEs (never waits).
    io_uring_cqe* cqes[256];
    for (;;) {
        const unsigned n = io_uring_peek_batch_cqe(&_ring, cqes, 256);
        if (n == 0) break;
        for (unsigned i = 0; i < n; ++i) {
            auto* c = static_cast<completion*>(io_uring_cqe_get_data(cqes[i]));
            const int res = cqes[i]->res;
            const std::uint32_t flags = cqes[i]->flags;
            if (c != nullptr) c->complete(res, flags);
        }
        io_uring_cq_advance(&_ring, n);
        if (n < 256) break;
    }
    if (!_posted.empty()) {
        _posted_swap.swap(_posted);
        for (const posted& p : _posted_swap) p.target->complete(p.res, 0);
        _posted_swap.clear();
    }
    for (turn_hook* h : _hooks) h->on_turn_end();
    return true;
}

}  // namespace ringrelay::core
