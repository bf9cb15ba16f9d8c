// queue/site_name.h: the name of a delivery site (issue 17). A site is the set of MX hosts a
// destination resolves to: domains whose MX hosts are the same share one site ("MX rollup";
// every Google Workspace domain is one site). Its name in logs, metrics and the API is its MX
// host names lower-cased, without a trailing dot, duplicates removed, sorted and joined by
// commas ("alt1.aspmx.l.google.com,aspmx.l.google.com"). A route or smarthost is a site of its
// own named HOST:PORT ("192.0.2.1:25", "[2001:db8::1]:25", "smtp.example.net:587"). Pure.
// SECURITY: host names come from DNS answers already checked by core/dns_message.cc
// (valid_host_name); nothing here reads past the views given.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringrelay::queue {

// The site name of a destination delivered by MX to `mx_hosts` (in any order, any case, with or
// without trailing dots). An empty list gives "" (no site: the destination has no MX hosts).
[[nodiscard]] std::string site_name_of_mx(std::span<const std::string_view> mx_hosts);
[[nodiscard]] std::string site_name_of_mx(std::span<const std::string> mx_hosts);

// The site name of a route: HOST:PORT, the host lower-cased without a trailing dot, an IPv6
// address (a host with a ':') in brackets.
[[nodiscard]] std::string site_name_of_route(std::string_view host, std::uint16_t port);

// A host name as site names and provider suffixes compare it: lower case, no trailing dot.
[[nodiscard]] std::string normalize_host(std::string_view host);

}  // namespace ringrelay::queue
