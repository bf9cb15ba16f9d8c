// core/listener.cc: see listener.h.
#include "core/listener.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/invariant.h"
#include "core/log.h"

namespace ringrelay::core {

std::expected<std::size_t, refusal> connection_limits::admit(const sockaddr* peer) noexcept {
    if (_total != nullptr && !_total->acquire(_max_total)) return std::unexpected(refusal::total);
    const std::size_t slot = _per_address.slot_of(peer);
    if (_per_address.acquire(slot, _max_per_address)) return slot;
    if (_total != nullptr) _total->release();
    return std::unexpected(refusal::per_address);
}

void connection_limits::release(std::size_t address_slot) noexcept {
    _per_address.release(address_slot);
    if (_total != nullptr) _total->release();
}

std::expected<void, refusal> connection_limits::admit_total() noexcept {
    if (_total != nullptr && !_total->acquire(_max_total)) return std::unexpected(refusal::total);
    return {};
}

std::expected<std::size_t, refusal> connection_limits::admit_address(const sockaddr* client) noexcept {
    const std::size_t slot = _per_address.slot_of(client);
    if (_per_address.acquire(slot, _max_per_address)) return slot;
    return std::unexpected(refusal::per_address);
}

void connection_limits::release_total() noexcept {
    if (_total != nullptr) _total->release();
}

void listener_owner::on_balancer_accepted(listener&, int fd, const sockaddr*) noexcept {
    RR_ASSERT(false && "a listener with balancers needs an owner that reads PROXY headers");
    ::close(fd);
}

void send_refusal(int fd, std::string_view line) noexcept {
    (void)::send(fd, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ::close(fd);
}

listener::listener(reactor& ring, listener_owner& owner, connection_limits& limits, std::string name,
                   std::uint8_t tag) noexcept
    : _ring(ring), _owner(owner), _limits(limits), _name(std::move(name)), _tag(tag) {}

listener::~listener() {
    if (_fd >= 0) ::close(_fd);
}

std::expected<void, std::error_code> listener::open(const endpoint& at, int backlog) noexcept {
    auto fd = listen_reuseport(at, backlog);
    if (!fd) return std::unexpected(fd.error());
    _fd = *fd;
    return {};
}

void listener::start() noexcept {
    if (_fd >= 0 && !_armed && !_stopped) arm();
}

void listener::arm() noexcept {
    io_uring_prep_multishot_accept(_ring.sqe(&_accept), _fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    _armed = true;
}

void listener::on_accept(int res, std::uint32_t flags) noexcept {
    if ((flags & IORING_CQE_F_MORE) == 0) _armed = false;
    if (res >= 0) {
        _failing = false;
        if (_stopped) {
            ::close(res);
        } else {
            admit(res);
        }
    } else if (res != -ECANCELED && !_stopped) {
        // EMFILE/ENFILE and the like: retry on the next tick instead of spinning, and say so
        // once per failure streak.
        if (!_failing) diag(_name + ": accept failed: " + std::strerror(-res));
        _failing = true;
        if (!_armed) {
            _rearm_on_tick = true;
            return;
        }
    }
    if (!_armed) {
        if (_stopped) {
            if (_fd >= 0) ::close(_fd);
            _fd = -1;
        } else {
            arm();
        }
    }
}

void listener::admit(int fd) noexcept {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    auto* sa = reinterpret_cast<sockaddr*>(&peer);
    if (::getpeername(fd, sa, &len) < 0) {  // already reset by the client
        ::close(fd);
        return;
    }
    const bool from_balancer =
        std::any_of(_balancers.begin(), _balancers.end(), [sa](const cidr& net) { return net.contains(sa); });
    if (from_balancer) {
        if (auto counted = _limits.admit_total()) {
            _owner.on_balancer_accepted(*this, fd, sa);
            return;
        }
        refuse(fd, sa, refusal::total);
        return;
    }
    auto admitted = _limits.admit(sa);
    if (admitted) {
        _owner.on_accepted(*this, fd, sa, *admitted);
        return;
    }
    refuse(fd, sa, admitted.error());
}

void listener::refuse(int fd, const sockaddr* sa, refusal why) noexcept {
    // (A linked io_uring send+close would leave the fd open when the send fails: the kernel
    // cancels the rest of a link.)
    send_refusal(fd, _limits.refusal_text(why));
    _owner.on_refused(*this, sa, why);
}

void listener::stop() noexcept {
    if (_stopped) return;
    _stopped = true;
    _rearm_on_tick = false;
    if (_fd < 0) return;
    (void)::shutdown(_fd, SHUT_RDWR);
    if (_armed) {
        // The cancelled accept's last completion closes the socket (on_accept).
        io_uring_prep_cancel64(_ring.sqe_ignored(), reinterpret_cast<std::uint64_t>(&_accept), 0);
    } else {
        ::close(_fd);
        _fd = -1;
    }
}

void listener::tick() noexcept {
    if (_rearm_on_tick && !_stopped) {
        _rearm_on_tick = false;
        arm();
    }
}

}  // namespace ringrelay::core
