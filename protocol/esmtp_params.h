// protocol/esmtp_params.h: parses the ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2
// Mail-parameters / Rcpt-parameters). Offered: SIZE (RFC 1870), BODY=7BIT|8BITMIME
// (RFC 6152), SMTPUTF8 (RFC 6531), AUTH=<mailbox> (RFC 4954 §5; accepted and not passed on:
// this relay does not forward the original submitter's identity). Everything else is refused with 555 5.5.4.
// SECURITY: `text` comes from the network. Nothing reads past text.size().
#pragma once
#include <cstdint>
#include <expected>
#include <string_view>

namespace ringrelay::protocol {

enum class body_parameter : std::uint8_t { absent, seven_bit, eight_bit_mime };

struct mail_parameters {
    std::uint64_t size = 0;     // declared SIZE; saturates at UINT64_MAX
    bool size_declared = false;
    body_parameter body = body_parameter::absent;
    bool smtputf8 = false;
    bool auth_declared = false;  // AUTH= given (RFC 4954 §5); its value is not kept
};

enum class param_error : std::uint8_t {
    unsupported,  // 555 5.5.4: a well-formed parameter we do not offer (or a value we refuse)
    bad_syntax,   // 501 5.5.4: not esmtp-keyword ["=" esmtp-value], or a duplicate
    bad_size,     // 501 5.5.4: SIZE value is not 1*20DIGIT
};

struct param_failure {
    param_error reason;
    std::string_view keyword;  // view into `text`; valid esmtp-keyword chars only, else empty
};

// `text`: the parameters after the path, SP separated (as split off by parse_command()).
[[nodiscard]] std::expected<mail_parameters, param_failure>
parse_mail_parameters(std::string_view text) noexcept;

// No RCPT parameter is offered yet (NOTIFY/ORCPT need DSN support): any parameter fails.
[[nodiscard]] std::expected<void, param_failure>
parse_rcpt_parameters(std::string_view text) noexcept;

}  // namespace ringrelay::protocol
