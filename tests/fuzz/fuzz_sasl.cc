// tests/fuzz/fuzz_sasl.cc: libFuzzer target for SMTP AUTH response decoding (protocol/sasl.h)
// and the strict base64 decoder under it (core/base64.h). Checks: decoded credentials never
// hold NUL, CR or LF and respect the field limits; base64 that decodes re-encodes to exactly
// the input (canonical); encode/decode round-trips the raw input.
// SECURITY: this is everything an unauthenticated client can make AUTH parse.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/base64.h"
#include "protocol/sasl.h"

using namespace ringrelay;

namespace {

void check_field(const std::string& f, std::size_t min) {
    if (f.size() < min || f.size() > protocol::max_sasl_field) std::abort();
    if (f.find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    if (auto c = protocol::decode_plain(in)) {
        check_field(c->authzid, 0);
        check_field(c->authcid, 1);
        check_field(c->password, 1);
    }
    if (auto f = protocol::decode_login_field(in)) check_field(*f, 1);
    for (const auto pad : {core::base64_padding::required, core::base64_padding::none}) {
        if (auto d = core::base64_decode(in, pad)) {
            if (core::base64_encode(*d, pad) != in) std::abort();  // only canonical input decodes
        }
        const std::string e = core::base64_encode(in, pad);
        auto back = core::base64_decode(e, pad);
        if (!back || *back != in) std::abort();
    }
    return 0;
}
