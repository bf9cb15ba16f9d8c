// queue/unsubscribe.h: one-click unsubscribe (RFC 8058, with RFC 2369's List-Unsubscribe;
// issue 18). With --unsubscribe-url BASE and --unsubscribe-key FILE the relay adds
//   List-Unsubscribe: <BASE/u/TOKEN>
//   List-Unsubscribe-Post: List-Unsubscribe=One-Click
// at the top of a message that has no List-Unsubscribe field, before it is DKIM-signed (the
// shipped --dkim-headers default signs both, as RFC 8058 §4 requires), at the same place the
// campaign header is stripped (queue/connection.cc). TOKEN names the message's tenant
// (queue/suppression.h tenant_of) and its recipient and carries an HMAC-SHA-256 over both with
// the key, so that `POST /u/TOKEN` (open to everyone: queue/http_api.h) can put that recipient
// on that tenant's suppression list without keeping any state per message, and nobody without
// the key can make a token for another address.
//
// Only messages with exactly one recipient get the fields: the message is stored once for all
// its recipients, and a token is per recipient, so a multi-recipient message would need one
// copy per recipient. ESPs send bulk mail one recipient per transaction anyway; a message with
// several recipients, with no tenant, or whose field line would pass RFC 5322's 998 octets is
// left as it is.
//
// TOKEN = b64u(tenant) "." b64u(recipient) "." b64u(HMAC-SHA-256(key, "ringrelay-unsubscribe-1"
// NUL tenant NUL recipient)), tenant and recipient lower-cased (as the list compares them),
// b64u the URL-safe base64 alphabet without padding (RFC 4648 §5): every octet is allowed in a
// URL path.
//
// The key: the first line of FILE, at least 32 octets (min_unsubscribe_key); rotating it
// invalidates every link sent before (documented in the README).
//
// Lifecycle: made by the relay at start-up (create), immutable, read by every shard.
// SECURITY: verify() reads the network (the path of a request from anyone): every length is
// checked, the MAC is compared in constant time (CRYPTO_memcmp), and nothing is decoded past the
// token's size.
#pragma once
#include <cstddef>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace ringrelay::queue {

inline constexpr std::size_t min_unsubscribe_key = 32;
inline constexpr std::size_t max_header_line = 998;  // RFC 5322 §2.1.1, without CRLF

struct unsubscribe_target {
    std::string tenant;     // lower-cased
    std::string recipient;  // lower-cased
};

class unsubscribe_links {
public:
    // base: the --unsubscribe-url (http:// or https://, no spaces or angle brackets; a final '/'
    // dropped); key: the secret. Errors name the flag and the reason.
    [[nodiscard]] static std::expected<std::unique_ptr<unsubscribe_links>, std::string> create(std::string_view base,
                                                                                                std::string key);
    // Reads the key from `key_file` (its first line), then create(). Errors name the file.
    [[nodiscard]] static std::expected<std::unique_ptr<unsubscribe_links>, std::string> load(std::string_view base,
                                                                                              const std::string& key_file);

    [[nodiscard]] std::string token(std::string_view tenant, std::string_view recipient) const;
    // The pair a token names, if its MAC is right.
    [[nodiscard]] std::optional<unsubscribe_target> verify(std::string_view token) const;
    // The two fields (CRLF-ended) for one recipient; "" if the List-Unsubscribe line would be
    // longer than max_header_line.
    [[nodiscard]] std::string header_fields(std::string_view tenant, std::string_view recipient) const;
    [[nodiscard]] const std::string& base() const noexcept { return _base; }

private:
    unsubscribe_links(std::string base, std::string key) : _base(std::move(base)), _key(std::move(key)) {}
    [[nodiscard]] std::string mac(std::string_view tenant, std::string_view recipient) const;

    const std::string _base;
    const std::string _key;
};

// Whether the header section of `message` has a List-Unsubscribe field (any case).
[[nodiscard]] bool has_list_unsubscribe(std::string_view message);

}  // namespace ringrelay::queue
