// protocol/relay_control.h: decides whether a recipient may be accepted for relaying
// (RFC 5321 §3.9 "relaying"; Postfix permit_mynetworks / permit_auth_destination with
// allow_untrusted_routing = no). Pure function of the parsed path, the client's trust and
// the configured relay domains.
// SECURITY: `rcpt` comes from the network (already parsed by parse_path()).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "protocol/address.h"
#include "protocol/server_session.h"

namespace ringrelay::protocol {

enum class relay_decision : std::uint8_t { permit, deny };

// True if `domain` equals an entry of `relay_domains` (ASCII case-insensitive), or an entry
// starts with '.' and `domain` ends with it ("a.example.org" matches ".example.org";
// "example.org" does not).
[[nodiscard]] bool domain_matches(std::string_view domain, std::span<const std::string> relay_domains) noexcept;

// trusted: permit. untrusted: permit only if the (route-stripped) domain is a relay domain and
// the local part carries no sender-specified routing: not quoted, no '%', '!' or '@'.
// A source route is ignored (RFC 5321 §3.6.1, appendix C): only the final mailbox counts.
[[nodiscard]] relay_decision decide_relay(const mailbox_path& rcpt, relay_trust trust,
                                          std::span<const std::string> relay_domains) noexcept;

}  // namespace ringrelay::protocol
