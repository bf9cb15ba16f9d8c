// tests/fuzz/fuzz_dns_answer.cc: libFuzzer target for parse_dns_answer() (core/dns_message.h,
// RFC 1035 §4.1). Input layout: [type byte] message. Checks that nothing reads out of
// bounds (ASan), that every name it returns is in presentation form (only [a-z0-9-.\] with
// \DDD escapes), that valid_host_name() never accepts an escaped name, that TTLs respect
// RFC 2181 §8 and that no more records come back than max_answer_records.
// SECURITY: this is everything a DNS server (or a spoofer) can make the parser do.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "core/dns_message.h"

using namespace ringrelay::core;

namespace {

void check_name(const std::string& n) {
    if (n.size() > 255 * 4) std::abort();
    for (const char c : n) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '\\';
        if (!ok) std::abort();
    }
    if (n.find('\\') != std::string::npos && valid_host_name(n)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    static constexpr dns_type types[] = {dns_type::mx, dns_type::a, dns_type::aaaa};
    const dns_type type = types[data[0] % 3];
    const std::span<const std::uint8_t> message(data + 1, size - 1);
    const auto a = parse_dns_answer(message, "example.test", type);
    if (!a) return 0;
    if (a->mx.size() + a->addresses.size() > max_answer_records) std::abort();
    if (a->ttl > 0x7FFFFFFFu) std::abort();
    if (a->negative_ttl && *a->negative_ttl > 0x7FFFFFFFu) std::abort();
    if (type != dns_type::mx && !a->mx.empty()) std::abort();
    for (const dns_mx_record& mx : a->mx) {
        check_name(mx.exchange);
        if (mx.ttl > 0x7FFFFFFFu || mx.ttl < a->ttl) std::abort();
    }
    for (const dns_address_record& r : a->addresses) {
        if (r.family != (type == dns_type::a ? AF_INET : AF_INET6)) std::abort();
        if (r.ttl < a->ttl) std::abort();
    }
    return 0;
}
