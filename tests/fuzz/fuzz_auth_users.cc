// tests/fuzz/fuzz_auth_users.cc: libFuzzer target for the SMTP AUTH users file
// (core/auth_users.h) and the password hash format it checks (core/password_hash.h, format
// only: no KDF runs here). Checks: an error names a line ("users:N: ..."); a file that parses
// maps every user it accepted to a hash check_hash_format accepts, and parses the same twice.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/auth_users.h"
#include "core/password_hash.h"

using namespace ringrelay::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto u = auth_users::parse(text, "users");
    if (!u) {
        if (u.error().rfind("users:", 0) != 0) std::abort();
        return 0;
    }
    auto again = auth_users::parse(text, "users");
    if (!again || again->size() != u->size()) std::abort();
    // Every non-comment line's user must be found, with a well-formed hash.
    std::string_view rest = text;
    while (!rest.empty()) {
        const auto nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty() || line[0] == '#') continue;
        const std::string_view user = line.substr(0, line.find(':'));
        const std::string* h = u->hash_of(user);
        if (h == nullptr || !check_hash_format(*h)) std::abort();
    }
    return 0;
}
