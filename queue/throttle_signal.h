// queue/throttle_signal.h: which failures of a delivery attempt are a receiver's throttle
// signal (issue 17), and of what: the number of connections, or the message rate. The
// closed-loop controller (queue/throttle_controller.h) cuts the one the signal is about. Pure:
// no clocks, no allocation.
//
// The signals (issue 17, "Closed loop"):
//   - a connection refused or reset, or closed before the greeting (stage connect, or stage
//     greeting without a reply): connections;
//   - 421 at the greeting (Postfix anvil's "421 4.7.0 host Error: too many connections from
//     ADDR", ringrelay-sink's "421 4.7.0 Try again later, closing connection. (too many
//     connections from your IP)"): connections;
//   - 421 after a command (the server closes the connection, RFC 5321 section 3.8): the rate,
//     or connections when its text says too many connections;
//   - a 4.7.x reply, or a 451/452 reply, whose text says rate, too many, too much, throttled,
//     slow down or server busy; "try (again) later" alone is no signal after the greeting (a
//     bare "451 4.3.0 ... Try again later." is any temporary failure, greylisting's "451 4.7.1
//     Please try again later" a delay for the message, not a throttle) ("451 4.7.1 Message rate limit exceeded for IP, try again
//     later", Postfix anvil's "450 4.7.1 Error: too much mail from ADDR", Gmail's "421 4.7.28
//     ... has been temporarily rate limited", Microsoft's "451 4.7.500 Server busy. Please try
//     again later"): the rate, or connections when the text is about connections.
// Not signals: 5xx (permanent; automation rules act on those texts), a 4xx about the mailbox or
// the recipient (enhanced 4.2.x: mailbox full or busy, Gmail's per-user "receiving mail at a
// rate" 450 4.2.1; 4.5.3 too many recipients in one transaction: a per-transaction limit, not a
// rate), and any other 4xx.
// SECURITY: `text` comes from the network; at most max_signal_text octets of it are read.
#pragma once
#include <cstdint>
#include <string_view>

namespace ringrelay::queue {

inline constexpr std::size_t max_signal_text = 2048;

// Where in a connection's life the attempt failed.
enum class attempt_stage : std::uint8_t {
    connect,   // the TCP connection failed (refused, reset, timed out): no reply
    greeting,  // before or at the greeting: code 0 = lost without one
    command,   // after a command (EHLO, MAIL, RCPT, DATA, end of data)
};

enum class throttle_kind : std::uint8_t {
    none,         // not a throttle signal
    connections,  // too many connections: cut the connection count
    rate,         // too many messages: cut the message rate
};

[[nodiscard]] std::string_view to_string(throttle_kind k) noexcept;

// `code` is the reply code (0: no reply), `text` the reply text as protocol::parsed_reply::text
// (the enhanced status code at its start, lines joined by LF).
[[nodiscard]] throttle_kind classify_throttle(attempt_stage stage, std::uint16_t code, std::string_view text) noexcept;

}  // namespace ringrelay::queue
