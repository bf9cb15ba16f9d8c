// queue/status_page.h: the status page (GET / on the HTTP endpoint, issue 18): its files,
// etc/status/index.html (at /), status.js, status.css and icon.svg (at /status/NAME: the icon
// spares the browser a /favicon.ico that is not there), compiled into the binary (queue/meson.build,
// scripts/embed-text) so the relay serves them with no etc/ installed. The page reads GET
// /metrics and GET /api/v1/queue from the browser every second; the relay only hands out the
// files. They are answered with status_page_fields: no caching (a new binary's page is seen at
// once) and a Content-Security-Policy that allows only the relay itself ('self': no inline
// script or style, nothing from elsewhere, no framing by other sites).
// Threading: constants only; any thread.
#pragma once
#include <optional>
#include <string_view>

namespace ringrelay::queue {

struct status_asset {
    std::string_view content_type;  // a literal
    std::string_view body;          // the embedded file: lives as long as the program
};

// The file at `path` ("/", "/status/status.js", ...); nullopt for any other path.
[[nodiscard]] std::optional<status_asset> status_page_asset(std::string_view path) noexcept;

// The header fields of every status page answer (core::http_response::fields' form).
inline constexpr std::string_view status_page_fields =
    "Cache-Control: no-store\r\n"
    "Content-Security-Policy: default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'\r\n"
    "X-Content-Type-Options: nosniff";

}  // namespace ringrelay::queue
