// queue/unsubscribe.cc: see unsubscribe.h.
#include "queue/unsubscribe.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/ascii.h"
#include "core/base64.h"
#include "queue/campaign_header.h"

namespace ringrelay::queue {

namespace {

constexpr std::string_view mac_label = "ringrelay-unsubscribe-1";
constexpr std::size_t mac_size = 32;  // SHA-256

std::string b64u(std::string_view bytes) {
    std::string out = core::base64_encode(bytes, core::base64_padding::none);
    for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
    return out;
}

std::optional<std::string> from_b64u(std::string_view text) {
    std::string std_alphabet(text);
    for (char& c : std_alphabet) {
        if (c == '+' || c == '/') return std::nullopt;
        c = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    return core::base64_decode(std_alphabet, core::base64_padding::none);
}

}  // namespace

std::expected<std::unique_ptr<unsubscribe_links>, std::string> unsubscribe_links::create(std::string_view base,
                                                                                           std::string key) {
    if (!base.starts_with("https://") && !base.starts_with("http://"))
        return std::unexpected("--unsubscribe-url: not an http:// or https:// URL: " + std::string(base));
    for (const char c : base)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '<' || c == '>' || c == '?' || c == '#')
            return std::unexpected("--unsubscribe-url: holds a space, a control character, '<', '>', '?' or '#': " +
                                   std::string(base));
    while (base.ends_with('/')) base.remove_suffix(1);
    if (key.size() < min_unsubscribe_key)
        return std::unexpected("--unsubscribe-key: the key has " + std::to_string(key.size()) + " octets; at least " +
                               std::to_string(min_unsubscribe_key) + " are needed (e.g. openssl rand -hex 32)");
    return std::unique_ptr<unsubscribe_links>(new unsubscribe_links(std::string(base), std::move(key)));
}

std::expected<std::unique_ptr<unsubscribe_links>, std::string> unsubscribe_links::load(std::string_view base,
                                                                                         const std::string& key_file) {
    if (key_file.empty())
        return std::unexpected(std::string("--unsubscribe-url needs --unsubscribe-key FILE (the HMAC key of the links)"));
    std::ifstream in(key_file, std::ios::binary);
    if (!in) return std::unexpected("--unsubscribe-key " + key_file + ": " + std::strerror(errno));
    std::string key;
    std::getline(in, key);
    while (!key.empty() && (key.back() == '\r' || key.back() == ' ' || key.back() == '\t')) key.pop_back();
    auto links = create(base, std::move(key));
    if (!links) return std::unexpected(links.error() + " (" + key_file + ")");
    return links;
}

std::string unsubscribe_links::mac(std::string_view tenant, std::string_view recipient) const {
    std::string input(mac_label);
    input += '\0';
    input += tenant;
    input += '\0';
    input += recipient;
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (HMAC(EVP_sha256(), _key.data(), static_cast<int>(_key.size()), reinterpret_cast<const unsigned char*>(input.data()),
             input.size(), out, &n) == nullptr ||
        n != mac_size)
        return {};
    return std::string(reinterpret_cast<const char*>(out), n);
}

std::string unsubscribe_links::token(std::string_view tenant, std::string_view recipient) const {
    const std::string t = core::ascii_lowered(tenant), r = core::ascii_lowered(recipient);
    const std::string m = mac(t, r);
    if (m.empty()) return {};
    return b64u(t) + "." + b64u(r) + "." + b64u(m);
}

std::optional<unsubscribe_target> unsubscribe_links::verify(std::string_view token) const {
    if (token.size() > 4 * max_header_line) return std::nullopt;
    const auto dot1 = token.find('.');
    if (dot1 == std::string_view::npos) return std::nullopt;
    const auto dot2 = token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) return std::nullopt;
    auto tenant = from_b64u(token.substr(0, dot1));
    auto recipient = from_b64u(token.substr(dot1 + 1, dot2 - dot1 - 1));
    auto given = from_b64u(token.substr(dot2 + 1));
    if (!tenant || !recipient || !given || tenant->empty() || recipient->empty() || given->size() != mac_size)
        return std::nullopt;
    // Only lower-cased pairs are ever signed: anything else is not ours.
    if (core::ascii_lowered(*tenant) != *tenant || core::ascii_lowered(*recipient) != *recipient) return std::nullopt;
    const std::string expected = mac(*tenant, *recipient);
    if (expected.size() != mac_size || CRYPTO_memcmp(expected.data(), given->data(), mac_size) != 0) return std::nullopt;
    return unsubscribe_target{std::move(*tenant), std::move(*recipient)};
}

std::string unsubscribe_links::header_fields(std::string_view tenant, std::string_view recipient) const {
    const std::string t = token(tenant, recipient);
    if (t.empty()) return {};
    std::string line = "List-Unsubscribe: <" + _base + "/u/" + t + ">";
    if (line.size() > max_header_line) return {};
    line += "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    return line;
}

bool has_list_unsubscribe(std::string_view message) {
    return !find_campaign_fields(message, "List-Unsubscribe").fields.empty();
}

}  // namespace ringrelay::queue
