// core/password_hash.h: password hashes for SMTP AUTH users (--auth-users), scrypt (RFC 7914)
// through OpenSSL 3's EVP_KDF, in the PHC string format also used by Python's passlib:
//   $scrypt$ln=15,r=8,p=1$<salt, base64 without padding>$<32-byte key, base64 without padding>
// ln is log2(N). The default (ln=15, r=8, p=1: 32 MiB and some tens of milliseconds) follows
// RFC 7914's interactive-login advice. scrypt is memory-hard, as the issue asks; a check costs
// that time and memory, so callers run it off the shards' hot path.
// SECURITY: verify_password() parses a hash from the operator's users file and compares in
// constant time.
#pragma once
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace ringrelay::core {

struct scrypt_params {
    std::uint8_t log2_n = 15;  // N = 2^log2_n, 10..22
    std::uint32_t r = 8;       // 1..32
    std::uint32_t p = 1;       // 1..16
};

// A new PHC string for `password` with a random 16-byte salt; an error if the KDF fails.
[[nodiscard]] std::expected<std::string, std::string> hash_password(std::string_view password,
                                                                    scrypt_params params = {});

// Same, with the given salt (for tests against other implementations).
[[nodiscard]] std::expected<std::string, std::string> hash_password_with_salt(std::string_view password,
                                                                              std::string_view salt,
                                                                              scrypt_params params);

// The cost parameters of a well-formed hash.
[[nodiscard]] std::expected<scrypt_params, std::string> hash_parameters(std::string_view encoded);

// Whether `encoded` is a well-formed hash this build can check (parameters in range).
[[nodiscard]] std::expected<void, std::string> check_hash_format(std::string_view encoded);

enum class password_match : std::uint8_t { no, yes };
// Checks `password` against `encoded`; an error only for a malformed hash or a KDF failure.
[[nodiscard]] std::expected<password_match, std::string> verify_password(std::string_view password,
                                                                        std::string_view encoded);

}  // namespace ringrelay::core
