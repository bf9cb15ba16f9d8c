// tests/fuzz/fuzz_config.cc: libFuzzer target for the JSON config file (core/config.cc:
// apply_json_config, then finish_config, the validation start-up runs). The config file is
// operator input, not network input, but a typo must give an error naming the key, never a
// crash, a hang or a half-applied config that validation then accepts with nonsense in it.
// Checks: no sanitizer report; a document accepted twice gives the same config (no hidden
// state); a config that passes validation has its derived fields consistent (one endpoint per
// --listen entry, one CIDR per --relay-networks entry, a space-free hostname, positive limits).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/config.h"

using namespace ringrelay::core;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view json(reinterpret_cast<const char*>(data), size);
    config a;
    const auto applied = apply_json_config(json, a);
    if (!applied) {
        if (applied.error().empty()) std::abort();  // an error must say what is wrong
        return 0;
    }
    config b;
    if (!apply_json_config(json, b)) std::abort();
    if (a.listen != b.listen || a.routes != b.routes || a.shards != b.shards || a.spool != b.spool ||
        a.max_message_size != b.max_message_size || a.relay_networks != b.relay_networks)
        std::abort();
    const auto finished = finish_config(a);
    if (!finished) {
        if (finished.error().empty()) std::abort();
        return 0;
    }
    if (a.listen_endpoints.size() != a.listen.size()) std::abort();
    if (a.relay_cidrs.size() != a.relay_networks.size()) std::abort();
    if (a.hostname.empty() || a.hostname.find_first_of(" \t\r\n") != std::string::npos) std::abort();
    if (a.max_recipients == 0 || a.command_timeout == 0 || a.max_errors == 0 || a.smtp_port == 0) std::abort();
    if (a.route_table.size() != a.routes.size() + (a.smarthost.empty() ? 0 : 1)) std::abort();
    return 0;
}
