// protocol/sasl.cc: see sasl.h.
#include "protocol/sasl.h"

#include "core/base64.h"

namespace ringrelay::protocol {

namespace {

// Decoded responses hold passwords: overwritten before their buffer is freed (volatile stores
// the compiler may not elide; protocol/ does not link OpenSSL for OPENSSL_cleanse).
void wipe(std::string& s) noexcept {
    volatile char* p = s.data();
    for (std::size_t i = 0; i < s.size(); ++i) p[i] = 0;
}

bool clean_field(std::string_view f, std::size_t min) noexcept {
    if (f.size() < min || f.size() > max_sasl_field) return false;
    for (const char c : f)
        if (c == '\0' || c == '\r' || c == '\n') return false;
    return true;
}

std::expected<std::string, sasl_error> decode(std::string_view response) {
    if (response == "*") return std::unexpected(sasl_error::cancelled);
    if (response.size() > max_sasl_response) return std::unexpected(sasl_error::too_long);
    auto bytes = core::base64_decode(response, core::base64_padding::required);
    if (!bytes) return std::unexpected(sasl_error::bad_base64);
    return std::move(*bytes);
}

}  // namespace

std::expected<sasl_credentials, sasl_error> decode_plain(std::string_view response) {
    auto bytes = decode(response);
    if (!bytes) return std::unexpected(bytes.error());
    struct wiped {
        std::string& s;
        ~wiped() { wipe(s); }
    } guard{*bytes};
    const std::string_view m(*bytes);
    const auto nul1 = m.find('\0');
    if (nul1 == std::string_view::npos) return std::unexpected(sasl_error::bad_message);
    const auto nul2 = m.find('\0', nul1 + 1);
    if (nul2 == std::string_view::npos) return std::unexpected(sasl_error::bad_message);
    const std::string_view authzid = m.substr(0, nul1);
    const std::string_view authcid = m.substr(nul1 + 1, nul2 - nul1 - 1);
    const std::string_view password = m.substr(nul2 + 1);
    if (!clean_field(authzid, 0) || !clean_field(authcid, 1) || !clean_field(password, 1))
        return std::unexpected(sasl_error::bad_message);
    return sasl_credentials{std::string(authzid), std::string(authcid), std::string(password)};
}

std::expected<std::string, sasl_error> decode_login_field(std::string_view response) {
    auto bytes = decode(response);
    if (!bytes) return std::unexpected(bytes.error());
    if (!clean_field(*bytes, 1)) {
        wipe(*bytes);
        return std::unexpected(sasl_error::bad_message);
    }
    return std::move(*bytes);
}

}  // namespace ringrelay::protocol
