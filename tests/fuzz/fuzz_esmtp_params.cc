// tests/fuzz/fuzz_esmtp_params.cc: libFuzzer target for the MAIL/RCPT ESMTP parameter
// parsers (RFC 5321 §4.1.2, RFC 1870, RFC 6152, RFC 6531).
// SECURITY: parameters come from the network; a refused keyword is echoed in a reply.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/esmtp_params.h"

using namespace ringrelay::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto mail = parse_mail_parameters(text);
    if (!mail) {
        const std::string_view kw = mail.error().keyword;
        if (!kw.empty() && (kw.data() < text.data() || kw.data() + kw.size() > text.data() + text.size())) std::abort();
        for (const char c : kw) {
            const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
            if (!ok) std::abort();  // the keyword is echoed in "555 5.5.4 Unsupported option: <kw>"
        }
    } else if (!mail->size_declared && mail->size != 0) {
        std::abort();
    }
    const auto rcpt = parse_rcpt_parameters(text);
    bool blank = true;
    for (const char c : text) blank = blank && c == ' ';
    if (rcpt.has_value() != blank) std::abort();
    return 0;
}
