// core/sd_notify.h: systemd's readiness protocol (sd_notify(3)) for `Type=notify` services:
// one datagram of "KEY=VALUE\n" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
// or an abstract name when it starts with '@'). Without $NOTIFY_SOCKET nothing is sent.
//
// Written by hand rather than linking libsystemd: the protocol is one sendto() on a datagram
// socket, documented as a stable interface that services may implement themselves
// (systemd.io/NOTIFY and sd_notify(3)'s "Notes"), and libsystemd would be a dependency for
// these few lines. No fd passing, no credentials beyond what the kernel attaches.
//
// Threading: any thread; blocking but bounded (a datagram to a local socket, MSG_DONTWAIT).
#pragma once
#include <string>
#include <string_view>

namespace ringrelay::core {

// Sends `state` (e.g. "READY=1\nSTATUS=listening") to $NOTIFY_SOCKET. Returns "" when sent or
// when there is no $NOTIFY_SOCKET, else what failed (for one diagnostic line; never fatal).
[[nodiscard]] std::string sd_notify(std::string_view state) noexcept;

}  // namespace ringrelay::core
