// core/password_hash.cc: see password_hash.h.
#include "core/password_hash.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <charconv>
#include <optional>

#include "core/base64.h"

namespace ringrelay::core {

namespace {

constexpr std::size_t key_size = 32;
constexpr std::size_t salt_size = 16;

std::string openssl_error(const char* what) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    return std::string(what) + ": " + buf;
}

std::expected<std::string, std::string> derive(std::string_view password, std::string_view salt, scrypt_params p) {
    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "SCRYPT", nullptr);
    if (kdf == nullptr) return std::unexpected(openssl_error("scrypt unavailable"));
    EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (ctx == nullptr) return std::unexpected(openssl_error("scrypt context"));
    std::uint64_t n = std::uint64_t{1} << p.log2_n;
    std::uint32_t r = p.r;
    std::uint32_t par = p.p;
    // 2^22 * 128 * 32 = 16 GiB would be refused by OpenSSL's default maxmem (32 MiB): raise it
    // to what the parameters need, with room.
    std::uint64_t maxmem = 128 * n * r + 128 * r * par + (1u << 20);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, const_cast<char*>(password.data()), password.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &par),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
        OSSL_PARAM_construct_end(),
    };
    std::string key(key_size, '\0');
    const int ok = EVP_KDF_derive(ctx, reinterpret_cast<unsigned char*>(key.data()), key.size(), params);
    EVP_KDF_CTX_free(ctx);
    if (ok != 1) return std::unexpected(openssl_error("scrypt"));
    return key;
}

// scrypt needs 128 * N * r bytes; a users file may not make one check cost more than 1 GiB.
bool affordable(const scrypt_params& p) {
    return (std::uint64_t{128} << p.log2_n) * p.r <= (std::uint64_t{1} << 30);
}

struct parsed_hash {
    scrypt_params params;
    std::string salt;
    std::string key;
};

std::optional<std::uint32_t> number(std::string_view text) {
    std::uint32_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty() || (text.size() > 1 && text[0] == '0'))
        return std::nullopt;
    return v;
}

std::expected<parsed_hash, std::string> parse(std::string_view s) {
    constexpr std::string_view prefix = "$scrypt$";
    if (!s.starts_with(prefix)) return std::unexpected("not a $scrypt$ hash");
    s.remove_prefix(prefix.size());
    const auto d1 = s.find('$');
    if (d1 == std::string_view::npos) return std::unexpected("missing salt");
    const std::string_view params = s.substr(0, d1);
    s.remove_prefix(d1 + 1);
    const auto d2 = s.find('$');
    if (d2 == std::string_view::npos) return std::unexpected("missing key");
    const std::string_view salt = s.substr(0, d2);
    const std::string_view key = s.substr(d2 + 1);
    parsed_hash h;
    // Exactly "ln=N,r=N,p=N", in that order.
    std::string_view rest = params;
    std::optional<std::uint32_t> values[3];
    constexpr std::string_view names[3] = {"ln=", "r=", "p="};
    for (int i = 0; i < 3; ++i) {
        if (!rest.starts_with(names[i])) return std::unexpected("parameters must be ln=..,r=..,p=..");
        rest.remove_prefix(names[i].size());
        const auto comma = rest.find(',');
        const std::string_view v = i < 2 ? rest.substr(0, comma) : rest;
        if (i < 2 && comma == std::string_view::npos) return std::unexpected("parameters must be ln=..,r=..,p=..");
        values[i] = number(v);
        if (!values[i]) return std::unexpected("bad parameter value");
        if (i < 2) rest.remove_prefix(comma + 1);
    }
    if (*values[0] < 10 || *values[0] > 22) return std::unexpected("ln must be 10..22");
    if (*values[1] < 1 || *values[1] > 32) return std::unexpected("r must be 1..32");
    if (*values[2] < 1 || *values[2] > 16) return std::unexpected("p must be 1..16");
    h.params = {static_cast<std::uint8_t>(*values[0]), *values[1], *values[2]};
    if (!affordable(h.params)) return std::unexpected("parameters need more than 1 GiB per check");
    auto s_bytes = base64_decode(salt, base64_padding::none);
    auto k_bytes = base64_decode(key, base64_padding::none);
    if (!s_bytes || s_bytes->size() < 8 || s_bytes->size() > 64) return std::unexpected("bad salt");
    if (!k_bytes || k_bytes->size() != key_size) return std::unexpected("bad key (32 bytes expected)");
    h.salt = std::move(*s_bytes);
    h.key = std::move(*k_bytes);
    return h;
}

std::string format(const scrypt_params& p, std::string_view salt, std::string_view key) {
    return "$scrypt$ln=" + std::to_string(p.log2_n) + ",r=" + std::to_string(p.r) + ",p=" + std::to_string(p.p) +
           "$" + base64_encode(salt, base64_padding::none) + "$" + base64_encode(key, base64_padding::none);
}

}  // namespace

std::expected<std::string, std::string> hash_password_with_salt(std::string_view password, std::string_view salt,
                                                                scrypt_params params) {
    if (params.log2_n < 10 || params.log2_n > 22 || params.r < 1 || params.r > 32 || params.p < 1 || params.p > 16)
        return std::unexpected("scrypt parameters out of range");
    if (!affordable(params)) return std::unexpected("scrypt parameters need more than 1 GiB");
    auto key = derive(password, salt, params);
    if (!key) return std::unexpected(key.error());
    return format(params, salt, *key);
}

std::expected<std::string, std::string> hash_password(std::string_view password, scrypt_params params) {
    std::string salt(salt_size, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), static_cast<int>(salt.size())) != 1)
        return std::unexpected(openssl_error("random salt"));
    return hash_password_with_salt(password, salt, params);
}

std::expected<scrypt_params, std::string> hash_parameters(std::string_view encoded) {
    auto h = parse(encoded);
    if (!h) return std::unexpected(h.error());
    return h->params;
}

std::expected<void, std::string> check_hash_format(std::string_view encoded) {
    auto h = parse(encoded);
    if (!h) return std::unexpected(h.error());
    return {};
}

std::expected<password_match, std::string> verify_password(std::string_view password, std::string_view encoded) {
    auto h = parse(encoded);
    if (!h) return std::unexpected(h.error());
    auto key = derive(password, h->salt, h->params);
    if (!key) return std::unexpected(key.error());
    return CRYPTO_memcmp(key->data(), h->key.data(), key_size) == 0 ? password_match::yes : password_match::no;
}

}  // namespace ringrelay::core
