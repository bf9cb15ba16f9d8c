// protocol/sasl.h: the SASL mechanisms SMTP AUTH offers (RFC 4954): PLAIN (RFC 4616) and
// LOGIN (draft-murchison-sasl-login), as pure decoders of the client's base64 responses.
// The session (AUTH command, 334 challenges) and the password check (core/password_hash.h,
// off the shard's hot path) use these; nothing here knows about users or sockets.
// SECURITY: every input is network input, before authentication. Responses are bounded
// (max_sasl_response), base64 is strict (core/base64.h), and decoded credentials never
// contain NUL, CR or LF.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::protocol {

// RFC 4954 §4: an AUTH command line, or a response line, may be up to 12288 octets.
inline constexpr std::size_t max_sasl_response = 12288;
// RFC 4616 §2: authzid, authcid and passwd are each at most 255 octets.
inline constexpr std::size_t max_sasl_field = 255;

enum class sasl_error : std::uint8_t {
    cancelled,    // the client sent "*" (RFC 4954 §4): 501 5.7.0
    bad_base64,   // not canonical base64: 501 5.5.2
    bad_message,  // decoded, but not a valid PLAIN message / LOGIN field: 535 5.7.8
    too_long,     // over max_sasl_response: 500 5.5.6
};

struct sasl_credentials {
    std::string authzid;  // PLAIN only; empty = act as authcid
    std::string authcid;  // the user name
    std::string password;
};

// AUTH PLAIN: decodes "[authzid] NUL authcid NUL passwd". An empty response ("=" in the
// AUTH line, or an empty line after 334) is a bad_message here: the caller asks again.
[[nodiscard]] std::expected<sasl_credentials, sasl_error> decode_plain(std::string_view response);

// AUTH LOGIN: decodes one response (the user name, or the password): 1-255 octets, no NUL,
// CR or LF.
[[nodiscard]] std::expected<std::string, sasl_error> decode_login_field(std::string_view response);

// The LOGIN challenges, already base64 ("Username:", "Password:").
inline constexpr std::string_view login_username_challenge = "VXNlcm5hbWU6";
inline constexpr std::string_view login_password_challenge = "UGFzc3dvcmQ6";

}  // namespace ringrelay::protocol
