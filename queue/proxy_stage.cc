// queue/proxy_stage.cc: see proxy_stage.h.
#include "queue/proxy_stage.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "core/clock.h"
#include "core/invariant.h"

namespace ringrelay::queue {

namespace {
// Holds any version 1 line (107 bytes) and HAProxy's version 2 headers with their usual TLVs;
// a longer version 2 header grows the buffer to its limit.
constexpr std::size_t first_capacity = 256;

core::endpoint endpoint_of(const sockaddr* sa) noexcept {
    core::endpoint e;
    e.length = sa->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    std::memcpy(&e.storage, sa, e.length);
    return e;
}
}  // namespace

proxy_stage::proxy_stage(core::reactor& ring, proxy_stage_owner& owner, core::deadline_list& deadlines, int fd,
                         const sockaddr* balancer, std::uint8_t tag)
    : _ring(ring),
      _owner(owner),
      _deadlines(deadlines),
      _fd(fd),
      _balancer(endpoint_of(balancer)),
      _tag(tag),
      _buffer(std::make_unique<char[]>(first_capacity)),
      _capacity(first_capacity) {}

proxy_stage::~proxy_stage() {
    if (_fd >= 0) ::close(_fd);
}

void proxy_stage::start() noexcept {
    _deadlines.touch(*this, core::monotonic_ms());
    arm();
}

void proxy_stage::arm() noexcept {
    io_uring_prep_recv(_ring.sqe(&_receive), _fd, _buffer.get() + _used, _capacity - _used, MSG_PEEK);
    _in_flight = true;
}

bool proxy_stage::consume(std::size_t n) noexcept {
    if (n == 0) return true;
    // The bytes were peeked, so they are queued: a non-blocking recv takes them at once.
    const ssize_t got = ::recv(_fd, _buffer.get() + _used, n, MSG_DONTWAIT);
    if (got != static_cast<ssize_t>(n)) return false;
    _used += n;
    return true;
}

int proxy_stage::take_fd() noexcept {
    RR_ASSERT(_outcome != proxy_outcome::reading && !_in_flight);
    return std::exchange(_fd, -1);
}

void proxy_stage::on_receive(int res, std::uint32_t) noexcept {
    _in_flight = false;
    if (_shut_why != proxy_outcome::reading) return end(_shut_why);  // the deadline or a stop shut it down
    if (res <= 0) return end(proxy_outcome::closed);  // closed, reset: nothing to answer
    const auto peeked = static_cast<std::size_t>(res);
    _header = protocol::parse_proxy_header({_buffer.get(), _used + peeked});
    switch (_header.status) {
    case protocol::proxy_status::done:
        // Only the header leaves the socket; what follows is the connection's.
        if (!consume(_header.consumed - _used)) return end(proxy_outcome::closed);
        return end(proxy_outcome::header);
    case protocol::proxy_status::error: return end(proxy_outcome::malformed);
    case protocol::proxy_status::need_more:
        // All of it is header: taken, so the next peek waits for more instead of returning it again.
        if (!consume(peeked)) return end(proxy_outcome::closed);
        break;
    }
    if (_used == _capacity) {
        // Only a version 2 header with long TLVs gets here (a v1 line fits): grow to the
        // parser's limit, past which it says error.
        RR_ASSERT(_capacity < protocol::proxy_v2_max_length);
        auto bigger = std::make_unique<char[]>(protocol::proxy_v2_max_length);
        std::memcpy(bigger.get(), _buffer.get(), _used);
        _buffer = std::move(bigger);
        _capacity = protocol::proxy_v2_max_length;
    }
    arm();
}

void proxy_stage::on_deadline() noexcept {
    if (_outcome != proxy_outcome::reading || _shut_why != proxy_outcome::reading) return;
    _shut_why = proxy_outcome::timed_out;
    (void)::shutdown(_fd, SHUT_RDWR);  // the receive in flight completes; the stage ends there
}

void proxy_stage::stop() noexcept {
    if (_outcome != proxy_outcome::reading || _shut_why != proxy_outcome::reading) return;
    _shut_why = proxy_outcome::stopped;
    (void)::shutdown(_fd, SHUT_RDWR);
}

void proxy_stage::end(proxy_outcome outcome) noexcept {
    unlink();  // the deadline
    _outcome = outcome;
    _owner.on_proxy_stage_end(*this);
}

}  // namespace ringrelay::queue
