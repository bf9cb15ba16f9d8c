// core/sd_notify.cc: see sd_notify.h.
#include "core/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace ringrelay::core {

std::string sd_notify(std::string_view state) noexcept {
    const char* env = std::getenv("NOTIFY_SOCKET");
    if (env == nullptr || *env == '\0') return {};
    const std::string_view name(env);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (name.size() >= sizeof(addr.sun_path) || (name[0] != '/' && name[0] != '@'))
        return "NOTIFY_SOCKET is not an absolute path or an abstract name: " + std::string(name);
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name[0] == '@') addr.sun_path[0] = '\0';  // the abstract namespace
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::string("NOTIFY_SOCKET: socket: ") + std::strerror(errno);
    const ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                               reinterpret_cast<const sockaddr*>(&addr), length);
    const int error = errno;
    ::close(fd);
    if (n < 0) return "NOTIFY_SOCKET " + std::string(name) + ": " + std::strerror(error);
    return {};
}

}  // namespace ringrelay::core
