// tests/fuzz/fuzz_command_parser.cc: libFuzzer target for parse_command() (RFC 5321 §4.1).
// Checks that it never reads outside the line and that every view it returns lies inside
// the line and holds no CR, LF or control octet.
// SECURITY: this is the first parser network bytes reach.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "protocol/command_parser.h"

namespace {

using namespace ringrelay::protocol;

void check_view(std::string_view outer, std::string_view v) {
    if (v.empty()) return;
    if (v.data() < outer.data() || v.data() + v.size() > outer.data() + outer.size()) std::abort();
    for (const char c : v) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view line(reinterpret_cast<const char*>(data), size);
    const auto cmd = parse_command(line);
    if (cmd) {
        if (size > max_command_line) std::abort();
        check_view(line, cmd->argument);
        check_view(line, cmd->parameters);
        if (cmd->verb == command_verb::unknown) std::abort();
        if ((cmd->verb == command_verb::mail || cmd->verb == command_verb::rcpt) &&
            (cmd->argument.size() < 2 || cmd->argument.front() != '<' || cmd->argument.back() != '>')) {
            std::abort();
        }
    } else if (cmd.error().reason == parse_error::bad_arguments && cmd.error().verb == command_verb::unknown) {
        std::abort();
    }
    return 0;
}
