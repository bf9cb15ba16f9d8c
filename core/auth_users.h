// core/auth_users.h: the SMTP AUTH users file (--auth-users FILE): one "user:hash" per line,
// hash as made by ringrelay-passwd (core/password_hash.h); blank lines and lines starting
// with '#' are ignored. User names are 1-255 octets of printable ASCII or UTF-8 without
// spaces, controls or ':' (RFC 4616 authcid as SMTP clients send it). A malformed line,
// a duplicate user or an unusable hash is an error naming the line: the file is taken whole
// or not at all (a reload that fails keeps the previous one).
// SECURITY: operator input; the parser is fuzzed (tests/fuzz/fuzz_auth_users.cc).
#pragma once
#include <expected>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ringrelay::core {

class auth_users {
public:
    // Parses the text of a users file; `origin` names it in errors ("users.txt").
    [[nodiscard]] static std::expected<auth_users, std::string> parse(std::string_view text, std::string_view origin);
    // Reads and parses a file.
    [[nodiscard]] static std::expected<auth_users, std::string> load(const std::string& path);

    // The stored hash of `user` (exact, case-sensitive match), or nullptr.
    [[nodiscard]] const std::string* hash_of(std::string_view user) const noexcept;
    [[nodiscard]] std::size_t size() const noexcept { return _users.size(); }
    // Every stored hash, in user-name order (views into this table).
    [[nodiscard]] std::vector<std::string_view> hashes() const;

private:
    std::map<std::string, std::string, std::less<>> _users;
};

// Whether `user` is a valid user name (see above).
[[nodiscard]] bool valid_user_name(std::string_view user) noexcept;

}  // namespace ringrelay::core
